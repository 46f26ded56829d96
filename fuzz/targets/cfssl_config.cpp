// cfssl's ca-config.json (core/cfssl.h): parse, then what signing does with each profile (usages,
// expiry, profile selection, the name_whitelist regex).
#include "fuzz.h"

#include "core/cfssl.h"

using namespace hwca::core;

namespace {
void exercise(const Profile& p) {
  hwca::fuzz::accepts([&] { (void)p.resolve_usages(); });
  hwca::fuzz::accepts([&] { p.check_expiry(); });
  (void)p.requires_auth();
  (void)format_go_duration(p.expiry);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    CfsslConfig config = CfsslConfig::parse(hwca::fuzz::bytes(data, size), "ca-config.json");
    if (config.has_default) exercise(config.default_profile);
    for (const auto& entry : config.profiles) {
      exercise(entry.second);
      std::string warning;
      hwca::fuzz::accepts([&] { (void)config.select(entry.first, true, &warning); });
    }
    std::string warning;
    hwca::fuzz::accepts([&] { (void)config.select("no-such-profile", false, &warning); });
  });
  return 0;
}
