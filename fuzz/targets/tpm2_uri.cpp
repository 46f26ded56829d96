// tpm2: key URIs (tokens/tpm2/uri.h).
#include "fuzz.h"

#include "tokens/tpm2/uri.h"

using namespace hwca::tokens::tpm2;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    Tpm2Uri uri = parse_tpm2_uri(hwca::fuzz::bytes(data, size));
    HWCA_FUZZ_CHECK(uri.handle.has_value() != uri.file.has_value());  // exactly one of handle= or file=
    (void)uri.where();
    if (uri.handle) (void)handle_hex(*uri.handle);
    if (uri.tcti) (void)resolve_tcti(uri);  // a given tcti= wins without looking at the machine
  });
  return 0;
}
