// Kubernetes CertificateSigningRequest objects (certificates.k8s.io/v1, spec §3-4): reading one as
// `kubectl get csr NAME -o yaml|json` prints it, the rules kube-controller-manager's built-in signers
// apply (§3.1), the ttl and validity they compute, an optional approval policy, and writing the object
// back with status.certificate or a Failed condition. Issuance itself goes through core::Issuer.
#pragma once

#include "core/base/ossl.h"
#include "core/engine.h"
#include "core/k8s_cluster.h"
#include "core/x509.h"

#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace hwca::core::k8s {

inline constexpr const char* kKubeApiserverClientSigner = "kubernetes.io/kube-apiserver-client";
inline constexpr const char* kKubeletClientSigner = "kubernetes.io/kube-apiserver-client-kubelet";
inline constexpr const char* kKubeletServingSigner = "kubernetes.io/kubelet-serving";

enum class BuiltinSigner { KubeApiserverClient, KubeletClient, KubeletServing };
// The built-in signer a signerName names; nullopt for any other name (kube-controller-manager ignores
// those, and so does hwca).
std::optional<BuiltinSigner> builtin_signer(const std::string& signer_name);
const char* signer_name(BuiltinSigner signer);

// What the signer rules look at in the CSR (Go's x509.CertificateRequest fields).
struct CsrContent {
  std::string common_name;                 // the last CN, as Go's pkix.Name keeps it
  std::vector<std::string> organizations;  // every O, in order
  SubjectAltNames sans;
  static CsrContent of(const X509_REQ* csr);
};

// A refusal, as kube-controller-manager writes it in a Failed condition.
struct Refusal {
  std::string reason = "SignerValidationFailure";
  std::string message;
};

// The rules of §3.1 for one built-in signer (and the API server's expirationSeconds >= 600): nullopt
// when the request may be signed, else the refusal with kube-controller-manager's message.
std::optional<Refusal> check_signer_rules(BuiltinSigner signer, const CsrContent& csr, const std::vector<std::string>& usages,
                                          std::optional<std::int64_t> expiration_seconds);

// signer.duration(): no expirationSeconds -> signing_duration; longer -> signing_duration; shorter
// than 10 minutes -> 10 minutes; otherwise the request.
std::chrono::seconds csr_ttl(std::optional<std::int64_t> expiration_seconds, std::chrono::seconds signing_duration);

struct Validity {
  std::time_t not_before = 0;
  std::time_t not_after = 0;
};
// PermissiveSigningPolicy: notBefore = now - 5 min; notAfter = now + ttl - 5 min, or now + ttl when
// ttl < 8 h; capped at the CA's notAfter. Error(Policy) when the CA has expired.
Validity csr_validity(std::time_t now, std::chrono::seconds ttl, std::time_t ca_not_after);

// The optional --approve policy (the seed document's RBAC rules, kubelet-tls-bootstrapping.md):
//  - kube-apiserver-client-kubelet: from group system:bootstrappers (a new node), or from the node
//    itself (username == the CSR's CN, group system:nodes: a renewal);
//  - kubelet-serving: username system:node:<n> == the CSR's CN, group system:nodes, usages server
//    auth plus optionally digital signature and key encipherment, and only DNS/IP SANs that belong to
//    node <n> of the cluster file (its name and its IP);
//  - kube-apiserver-client: never.
// The request must also pass the signer rules (as csrapproving's recognizers require).
struct ApprovalVerdict {
  bool approved = false;
  std::string message;  // why (approved: for the condition's message; else for stderr)
};
ApprovalVerdict approval_policy(BuiltinSigner signer, const CsrContent& csr, const std::vector<std::string>& usages,
                                std::optional<std::int64_t> expiration_seconds, const std::string& username,
                                const std::vector<std::string>& groups, const std::vector<Node>& nodes);

struct CsrCondition {
  std::string type;    // Approved, Denied, Failed
  std::string status;  // "True"
  std::string reason;
  std::string message;
};

// One CertificateSigningRequest object, kept whole so that it is written back with every field it
// came with. JSON is read as YAML (yaml-cpp) and written back as JSON.
class CsrObject {
 public:
  enum class Format { Yaml, Json };

  // Error(BadInput) naming `what` for anything that is not one certificates.k8s.io/v1
  // CertificateSigningRequest whose spec.request is a base64 PEM CERTIFICATE REQUEST with a valid
  // signature.
  static CsrObject parse(const std::string& text, const std::string& what);

  CsrObject(CsrObject&&) noexcept;
  CsrObject& operator=(CsrObject&&) noexcept;
  ~CsrObject();

  Format format() const { return m_format; }
  const std::string& name() const { return m_name; }
  const std::string& uid() const { return m_uid; }  // metadata.uid: empty for an object not from an API server
  const std::string& signer_name() const { return m_signer_name; }
  std::optional<std::int64_t> expiration_seconds() const { return m_expiration_seconds; }
  const std::vector<std::string>& usages() const { return m_usages; }
  const std::string& username() const { return m_username; }
  const std::vector<std::string>& groups() const { return m_groups; }
  X509_REQ* request() const { return m_request.get(); }
  const std::vector<CsrCondition>& conditions() const { return m_conditions; }
  bool has_certificate() const { return m_has_certificate; }
  bool has_true_condition(const std::string& type) const;

  // Appends a condition (status "True", lastUpdateTime and lastTransitionTime = `at`).
  void add_condition(const std::string& type, const std::string& reason, const std::string& message, std::time_t at);
  // status.certificate = base64(pem).
  void set_certificate(const std::string& pem);
  // The object as YAML or, when it was read as JSON, as JSON (4-space indent, as kubectl prints it).
  std::string serialize() const;

 private:
  CsrObject();
  std::unique_ptr<YAML::Node> m_doc;
  Format m_format = Format::Yaml;
  std::string m_name;
  std::string m_uid;
  std::string m_signer_name;
  std::optional<std::int64_t> m_expiration_seconds;
  std::vector<std::string> m_usages;
  std::string m_username;
  std::vector<std::string> m_groups;
  X509_REQ_ptr m_request;
  std::vector<CsrCondition> m_conditions;
  bool m_has_certificate = false;
};

struct SignOptions {
  std::chrono::seconds signing_duration{std::chrono::hours(8760)};  // --signing-duration
  bool approve = false;                                            // --approve
  std::vector<Node> nodes;                                         // the cluster's nodes, for --approve
  std::time_t now = 0;                                             // 0: the current time
  // When set, recorded with the certificate as its ledger request id (unique: Ledger::record), so that a
  // second issuance for the same CSR is refused. The long-running signer uses "k8s-csr:<metadata.uid>".
  std::string request_id;
};

struct SignReport {
  enum class Outcome {
    Issued,   // status.certificate set (and Approved added when --approve approved it)
    Refused,  // Failed condition added (exit 0, as kube-controller-manager)
    Skipped,  // object unchanged: unknown signer, not approved, denied, failed or already issued
  };
  Outcome outcome = Outcome::Skipped;
  std::string message;  // one line for stderr (empty when issued)
  X509_ptr certificate;
};

// What kube-controller-manager's signer controller does with one CSR, with hwca's CA:
// - a certificate already set, a Failed or Denied condition, or an unknown signerName: Skipped;
// - not Approved: Skipped, unless --approve's policy approves it (then condition Approved is added);
// - the signer rules refuse it: condition Failed (reason SignerValidationFailure), Refused;
// - else: issued through `issuer()` (called only then; it may open the CA key) with the CSR's subject
//   and SANs, usages from spec.usages, the validity of csr_validity(), requester "k8s:<username>".
// Error(Policy) when the CA (ca_cert) has expired.
SignReport sign_csr(CsrObject& csr, const SignOptions& options, const X509* ca_cert,
                    const std::function<Issuer&()>& issuer);

}  // namespace hwca::core::k8s
