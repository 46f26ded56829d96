// Go durations and usage names (core/profile.h), from ca-config.json, cluster.yaml, ceremony files and
// command lines (--validity, --signing-duration). Checks format -> parse round trips. The first line is
// a duration; every further line is one usage name.
#include "fuzz.h"

#include "core/profile.h"

#include <sstream>

using namespace hwca::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(hwca::fuzz::bytes(data, size));
  std::string first;
  std::getline(in, first);
  hwca::fuzz::accepts([&] {
    std::chrono::seconds d = parse_go_duration(first);
    const std::string text = format_go_duration(d);
    HWCA_FUZZ_CHECK(parse_go_duration(text) == d);
  });
  std::vector<std::string> usages;
  for (std::string line; std::getline(in, line);) usages.push_back(line);
  hwca::fuzz::accepts([&] {
    Usages u = parse_usages(usages, "fuzz");
    for (int nid : u.ext_key_usage) HWCA_FUZZ_CHECK(nid > 0);
  });
  hwca::fuzz::accepts([&] { (void)builtin_profile(first); });
  return 0;
}
