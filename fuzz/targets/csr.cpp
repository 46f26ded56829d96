// PEM/DER CSRs as the policy layer reads them (`hwca sign`, `serve sign`, ceremonies, sign-csr):
// csr_from_pem_or_der, the proof-of-possession signature, the SANs of the extension request, whether
// it asks for CA:TRUE, and the subject fields the signer rules look at.
#include "fuzz.h"

#include "core/base/ossl.h"
#include "core/k8s_csr.h"
#include "core/x509.h"

using namespace hwca::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    hwca::X509_REQ_ptr csr = hwca::csr_from_pem_or_der(std::string_view(reinterpret_cast<const char*>(data), size), "CSR");
    HWCA_FUZZ_CHECK(csr != nullptr);
    // Each step on its own: a CSR whose signature fails still has its other parts read in messages.
    hwca::fuzz::accepts([&] { verify_csr_signature(csr.get()); });
    hwca::fuzz::accepts([&] { (void)SubjectAltNames::of_csr(csr.get()).describe(); });
    hwca::fuzz::accepts([&] { (void)csr_requests_ca(csr.get()); });
    hwca::fuzz::accepts([&] { (void)k8s::CsrContent::of(csr.get()); });
    hwca::fuzz::accepts([&] {
      const X509_NAME* name = X509_REQ_get_subject_name(csr.get());
      (void)name_to_string(name);
      (void)common_name(name);
    });
    hwca::fuzz::accepts([&] { (void)hwca::csr_to_pem(csr.get()); });
  });
  return 0;
}
