// RBAC manifests for the API-based signer (spec §4: `sign` on signers, `update` on
// certificatesigningrequests/status) and for kubelet TLS bootstrapping (spec §3.1, the seed document's
// approval bindings, kubelet-tls-bootstrapping.md). Plain rbac.authorization.k8s.io/v1 objects emitted
// with yaml-cpp; `hwca k8s manifests` (cli/cmd_k8s_bootstrap.cpp) writes them.
//
// Two multi-document files, so that each can be applied (or left out) on its own:
//   hwca-signer-rbac.yaml    ClusterRole hwca:k8s-signer and ClusterRoleBinding hwca:k8s-signer
//                            (User <signer user>), for `hwca k8s signer`
//   node-bootstrap-rbac.yaml ClusterRole ...:selfnodeserver (not a built-in role) and the
//                            ClusterRoleBindings create-csrs-for-bootstrapping (system:bootstrappers ->
//                            system:node-bootstrapper), node-client-auto-approve-csr
//                            (system:bootstrappers -> ...:nodeclient), node-client-auto-renew-crt
//                            (system:nodes -> ...:selfnodeclient), node-server-auto-renew-crt
//                            (system:nodes -> ...:selfnodeserver)
#pragma once

#include <string>
#include <vector>

namespace hwca::core::k8s {

inline constexpr const char* kDefaultSignerUser = "system:hwca-signer";
inline constexpr const char* kSignerRoleName = "hwca:k8s-signer";
inline constexpr const char* kSignerRbacFile = "hwca-signer-rbac.yaml";
inline constexpr const char* kNodeBootstrapRbacFile = "node-bootstrap-rbac.yaml";

inline constexpr const char* kNodeClientRole = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
inline constexpr const char* kSelfNodeClientRole = "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";
inline constexpr const char* kSelfNodeServerRole = "system:certificates.k8s.io:certificatesigningrequests:selfnodeserver";
inline constexpr const char* kNodeBootstrapperRole = "system:node-bootstrapper";

// The three built-in signers hwca implements (core/k8s_csr.h): kube-apiserver-client-kubelet,
// kubelet-serving, kube-apiserver-client.
std::vector<std::string> default_signer_names();

struct RbacOptions {
  std::vector<std::string> signer_names = default_signer_names();
  bool approve = false;  // also `update` on certificatesigningrequests/approval and `approve` on signers
  std::string signer_user = kDefaultSignerUser;
};

// Error(Usage) for an empty signer list, a signer name hwca cannot sign (naming the ones it can), or
// an empty signer user or one with control characters. Empty and duplicate names are dropped (the
// first of each kept).
RbacOptions checked(RbacOptions options);

// ClusterRole hwca:k8s-signer (get/list/watch certificatesigningrequests, update .../status, sign
// signers with resourceNames = the signer names; with approve also update .../approval and approve
// signers) and its ClusterRoleBinding to User <signer user>.
std::string render_signer_rbac(const RbacOptions& options);
// The selfnodeserver ClusterRole and the four bindings above.
std::string render_node_bootstrap_rbac();

struct ManifestFile {
  std::string name;  // file name in the output folder
  std::string yaml;
};
// Both files, after checked().
std::vector<ManifestFile> rbac_manifests(const RbacOptions& options);
// Writes them into `out` (created when missing; its parent must exist), 0644, in one AtomicBatch,
// replacing files of the same names (they are derived from the options alone) and nothing else.
void write_manifests(const std::string& out, const std::vector<ManifestFile>& files);

}  // namespace hwca::core::k8s
