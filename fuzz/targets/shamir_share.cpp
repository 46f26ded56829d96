// Custody share files (core/shamir.h), as `hwca custody combine` and ceremonies' pin_shares read them:
// the input is one or more share files separated by "\n--\n" lines; each is parsed, and those that
// parse are combined.
#include "fuzz.h"

#include "core/shamir.h"

using namespace hwca::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<Share> shares;
  int n = 0;
  for (const std::string& part : hwca::fuzz::split_parts(hwca::fuzz::bytes(data, size))) {
    hwca::fuzz::accepts([&] {
      Share s = share_from_json(part, "share-" + std::to_string(++n));
      // What is written back reads back the same.
      Share again = share_from_json(share_to_json(s), "rewritten share");
      HWCA_FUZZ_CHECK(again.set_id == s.set_id && again.index == s.index && again.value == s.value &&
                      again.threshold == s.threshold && again.count == s.count && again.label == s.label);
      shares.push_back(std::move(s));
    });
  }
  if (!shares.empty()) hwca::fuzz::accepts([&] { (void)shamir_combine(shares); });
  return 0;
}
