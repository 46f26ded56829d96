// RFC 7512 PKCS#11 URIs (tokens/pkcs11/uri.h): what --ca-key, --key and every key URI on a command
// line, in a cluster file or a ceremony file go through. Also checks the escape/parse round trip.
#include "fuzz.h"

#include "tokens/pkcs11/uri.h"

using namespace hwca::tokens::pkcs11;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = hwca::fuzz::bytes(data, size);
  hwca::fuzz::accepts([&] {
    Pkcs11Uri uri = parse_pkcs11_uri(text);
    (void)uri.has_token_selector();
    (void)uri.token_selector_text();
    (void)uri.object_selector_text();
    // Re-encoding what was parsed gives the same values back.
    if (uri.object) {
      Pkcs11Uri again = parse_pkcs11_uri("pkcs11:object=" + pkcs11_uri_escape(*uri.object));
      HWCA_FUZZ_CHECK(again.object == uri.object);
    }
  });
  // Any non-empty byte string survives escape + parse as a binary id.
  if (!text.empty()) {
    Pkcs11Uri uri = parse_pkcs11_uri("pkcs11:token=t;id=" + pkcs11_uri_escape(text));
    HWCA_FUZZ_CHECK(uri.id && *uri.id == text);
  }
  return 0;
}
