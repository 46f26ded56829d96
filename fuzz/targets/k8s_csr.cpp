// Kubernetes CertificateSigningRequest objects (core/k8s_csr.h), as `hwca k8s sign-csr` reads them:
// parse (YAML or JSON, the embedded PEM CSR and its signature), then everything sign_csr() decides
// before it would sign: the built-in signer's rules, the ttl and validity, the --approve policy, and
// writing the object back (a condition, status.certificate).
#include "fuzz.h"

#include "core/k8s_csr.h"

using namespace hwca::core::k8s;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    CsrObject obj = CsrObject::parse(hwca::fuzz::bytes(data, size), "csr.yaml");
    HWCA_FUZZ_CHECK(obj.request() != nullptr);
    CsrContent content = CsrContent::of(obj.request());
    (void)obj.has_true_condition("Approved");
    (void)obj.has_true_condition("Denied");
    std::chrono::seconds ttl = csr_ttl(obj.expiration_seconds(), std::chrono::hours(8760));
    hwca::fuzz::accepts([&] { (void)csr_validity(1700000000, ttl, 2000000000); });
    if (auto signer = builtin_signer(obj.signer_name())) {
      (void)signer_name(*signer);
      (void)check_signer_rules(*signer, content, obj.usages(), obj.expiration_seconds());
      std::vector<Node> nodes{{"node-1", "10.0.0.11", 0}, {"worker-1", "fd00::21", 0}};
      (void)approval_policy(*signer, content, obj.usages(), obj.expiration_seconds(), obj.username(), obj.groups(),
                            nodes);
    }
    obj.add_condition("Failed", "SignerValidationFailure", "fuzz", 1700000000);
    obj.set_certificate("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
    const std::string out = obj.serialize();
    // What sign-csr writes back reads again.
    CsrObject again = CsrObject::parse(out, "written back");
    HWCA_FUZZ_CHECK(again.name() == obj.name() && again.has_certificate());
  });
  return 0;
}
