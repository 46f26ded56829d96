// PEM/DER CSRs as the policy layer reads them (`hwca sign`, `serve sign`, ceremonies, sign-csr):
// csr_from_pem_or_der, the proof-of-possession signature, the SANs of the extension request, whether
// it asks for CA:TRUE, and the subject fields the signer rules look at. Every input is also read as DER
// by d2i_csr and by OpenSSL's d2i_X509_REQ: both refuse it, or both read the same request (length, DER,
// public key).
#include "fuzz.h"

#include "core/base/csr_der.h"
#include "core/base/ossl.h"
#include "core/k8s_csr.h"
#include "core/x509.h"

#include <openssl/err.h>

#include <string>

using namespace hwca::core;

namespace {

std::string der_of(const X509_REQ* req) {
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(req, &der);
  std::string out = len > 0 ? std::string(reinterpret_cast<char*>(der), static_cast<std::size_t>(len)) : std::string();
  OPENSSL_free(der);
  return out;
}

void same_as_openssl(const std::uint8_t* data, std::size_t size) {
  const unsigned char* ours_end = data;
  const unsigned char* theirs_end = data;
  hwca::X509_REQ_ptr ours = hwca::d2i_csr(&ours_end, static_cast<long>(size));
  hwca::X509_REQ_ptr theirs(d2i_X509_REQ(nullptr, &theirs_end, static_cast<long>(size)));
  HWCA_FUZZ_CHECK(bool(ours) == bool(theirs));
  if (ours) {
    HWCA_FUZZ_CHECK(ours_end == theirs_end);
    std::string der = der_of(ours.get());
    HWCA_FUZZ_CHECK(!der.empty() && der == der_of(theirs.get()));
    EVP_PKEY* our_key = X509_REQ_get0_pubkey(ours.get());
    EVP_PKEY* their_key = X509_REQ_get0_pubkey(theirs.get());
    HWCA_FUZZ_CHECK(bool(our_key) == bool(their_key));
    if (our_key) HWCA_FUZZ_CHECK(EVP_PKEY_eq(our_key, their_key) == 1);
  }
  ERR_clear_error();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  same_as_openssl(data, size);
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
