// Subjects in OpenSSL's "/CN=x/O=y" or "CN=x,O=y" form (core::parse_subject), from --subject and
// ceremony files: parse, print, and the CN.
#include "fuzz.h"

#include "core/x509.h"

using namespace hwca::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    hwca::X509_NAME_ptr name = parse_subject(hwca::fuzz::bytes(data, size));
    HWCA_FUZZ_CHECK(name != nullptr);
    (void)name_to_string(name.get());
    (void)common_name(name.get());
    unsigned char* der = nullptr;
    int len = i2d_X509_NAME(name.get(), &der);
    HWCA_FUZZ_CHECK(len > 0);
    OPENSSL_free(der);
  });
  return 0;
}
