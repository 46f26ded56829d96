// cfssl CSR JSON (core/cfssl.h), as `hwca gencert`/`genkey`/`-initca` and `serve newcert` read it:
// parse, build the subject, and classify the hosts into SANs as gencert does.
#include "fuzz.h"

#include "core/cfssl.h"

using namespace hwca::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    CfsslCsr csr = CfsslCsr::parse(hwca::fuzz::bytes(data, size), "csr.json");
    hwca::fuzz::accepts([&] {
      hwca::X509_NAME_ptr subject = csr.subject();
      HWCA_FUZZ_CHECK(subject != nullptr);
      (void)name_to_string(subject.get());
      (void)common_name(subject.get());
    });
    hwca::fuzz::accepts([&] { (void)SubjectAltNames::classify(csr.hosts).describe(); });
  });
  return 0;
}
