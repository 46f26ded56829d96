// Ceremony files (core/ceremony.h): the YAML that is the only input of `hwca ceremony run`.
#include "fuzz.h"

#include "core/ceremony.h"

using namespace hwca::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    CeremonySpec spec = parse_ceremony(hwca::fuzz::bytes(data, size), "/nonexistent/ceremony.yaml");
    (void)CeremonySpec::kind_name(spec.kind);
    HWCA_FUZZ_CHECK(!spec.key_uri.empty());
  });
  return 0;
}
