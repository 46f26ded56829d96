#include "core/k8s_rbac.h"

#include "core/base/error.h"
#include "core/files.h"
#include "core/k8s_bootstrap.h"
#include "core/k8s_csr.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

namespace hwca::core::k8s {

namespace {

constexpr const char* kRbacApiVersion = "rbac.authorization.k8s.io/v1";
constexpr const char* kRbacGroup = "rbac.authorization.k8s.io";
constexpr const char* kCertificatesGroup = "certificates.k8s.io";

struct Rule {
  std::vector<std::string> resources;
  std::vector<std::string> resource_names;
  std::vector<std::string> verbs;
};

void seq(YAML::Emitter& e, const std::vector<std::string>& items) {
  e << YAML::BeginSeq;
  for (const auto& i : items) e << i;
  e << YAML::EndSeq;
}

void metadata(YAML::Emitter& e, const std::string& name) {
  e << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "name" << YAML::Value << name;
  e << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "app.kubernetes.io/managed-by" << YAML::Value << "hwca";
  e << YAML::EndMap;
  e << YAML::EndMap;
}

void cluster_role(YAML::Emitter& e, const std::string& name, const std::vector<Rule>& rules) {
  e << YAML::BeginDoc << YAML::BeginMap;
  e << YAML::Key << "apiVersion" << YAML::Value << kRbacApiVersion;
  e << YAML::Key << "kind" << YAML::Value << "ClusterRole";
  metadata(e, name);
  e << YAML::Key << "rules" << YAML::Value << YAML::BeginSeq;
  for (const auto& r : rules) {
    e << YAML::BeginMap;
    e << YAML::Key << "apiGroups" << YAML::Value;
    seq(e, {kCertificatesGroup});
    e << YAML::Key << "resources" << YAML::Value;
    seq(e, r.resources);
    if (!r.resource_names.empty()) {
      e << YAML::Key << "resourceNames" << YAML::Value;
      seq(e, r.resource_names);
    }
    e << YAML::Key << "verbs" << YAML::Value;
    seq(e, r.verbs);
    e << YAML::EndMap;
  }
  e << YAML::EndSeq;
  e << YAML::EndMap;
}

void cluster_role_binding(YAML::Emitter& e, const std::string& name, const std::string& role, const std::string& subject_kind,
                          const std::string& subject) {
  e << YAML::BeginDoc << YAML::BeginMap;
  e << YAML::Key << "apiVersion" << YAML::Value << kRbacApiVersion;
  e << YAML::Key << "kind" << YAML::Value << "ClusterRoleBinding";
  metadata(e, name);
  e << YAML::Key << "roleRef" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "apiGroup" << YAML::Value << kRbacGroup;
  e << YAML::Key << "kind" << YAML::Value << "ClusterRole";
  e << YAML::Key << "name" << YAML::Value << role;
  e << YAML::EndMap;
  e << YAML::Key << "subjects" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  e << YAML::Key << "apiGroup" << YAML::Value << kRbacGroup;
  e << YAML::Key << "kind" << YAML::Value << subject_kind;
  e << YAML::Key << "name" << YAML::Value << subject;
  e << YAML::EndMap << YAML::EndSeq;
  e << YAML::EndMap;
}

std::string emitted(const YAML::Emitter& e, const char* what) {
  if (!e.good()) throw Error(ErrorKind::Internal, std::string("emitting ") + what + ": " + e.GetLastError());
  return std::string(e.c_str()) + "\n";
}

}  // namespace

std::vector<std::string> default_signer_names() {
  return {kKubeletClientSigner, kKubeletServingSigner, kKubeApiserverClientSigner};
}

RbacOptions checked(RbacOptions options) {
  std::vector<std::string> names;
  for (const auto& n : options.signer_names) {
    if (n.empty()) continue;  // "--signer-names a,,b" or ""
    if (!builtin_signer(n)) {
      std::string can;
      for (const auto& d : default_signer_names()) can += (can.empty() ? "" : ", ") + d;
      throw Error(ErrorKind::Usage, "--signer-names: '" + n + "' is not a signer hwca can sign (hwca signs " + can + ")");
    }
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  }
  if (names.empty()) throw Error(ErrorKind::Usage, "--signer-names: no signer name given");
  options.signer_names = names;
  if (options.signer_user.empty()) throw Error(ErrorKind::Usage, "--signer-user: empty user name");
  for (char c : options.signer_user)
    if (const auto ch = static_cast<unsigned char>(c); ch < 0x20 || ch == 0x7f)
      throw Error(ErrorKind::Usage, "--signer-user: the user name holds a control character");
  return options;
}

std::string render_signer_rbac(const RbacOptions& options) {
  // certificate-signing-requests.md, "Authorization": a signer reads CSRs, writes status, and needs
  // `sign` on its signer names; an approver also `update`s approval and needs `approve` on them.
  std::vector<Rule> rules = {
      {{"certificatesigningrequests"}, {}, {"get", "list", "watch"}},
      {{"certificatesigningrequests/status"}, {}, {"update"}},
      {{"signers"}, options.signer_names, {"sign"}},
  };
  if (options.approve) {
    rules.push_back({{"certificatesigningrequests/approval"}, {}, {"update"}});
    rules.push_back({{"signers"}, options.signer_names, {"approve"}});
  }
  YAML::Emitter e;
  cluster_role(e, kSignerRoleName, rules);
  cluster_role_binding(e, kSignerRoleName, kSignerRoleName, "User", options.signer_user);
  return emitted(e, "the signer's RBAC manifests");
}

std::string render_node_bootstrap_rbac() {
  YAML::Emitter e;
  // Not a built-in role: kubelet-tls-bootstrapping.md and the seed document define it this way.
  cluster_role(e, kSelfNodeServerRole, {{{"certificatesigningrequests/selfnodeserver"}, {}, {"create"}}});
  // Bootstrapping kubelets may create CSRs (kubeadm's kubeadm:kubelet-bootstrap; the docs' name).
  cluster_role_binding(e, "create-csrs-for-bootstrapping", kNodeBootstrapperRole, "Group", "system:bootstrappers");
  // The seed document's three approval bindings, by its names.
  cluster_role_binding(e, "node-client-auto-approve-csr", kNodeClientRole, "Group", "system:bootstrappers");
  cluster_role_binding(e, "node-client-auto-renew-crt", kSelfNodeClientRole, "Group", "system:nodes");
  cluster_role_binding(e, "node-server-auto-renew-crt", kSelfNodeServerRole, "Group", "system:nodes");
  return emitted(e, "the node bootstrap RBAC manifests");
}

std::vector<ManifestFile> rbac_manifests(const RbacOptions& options) {
  const RbacOptions o = checked(options);
  return {{kSignerRbacFile, render_signer_rbac(o)}, {kNodeBootstrapRbacFile, render_node_bootstrap_rbac()}};
}

void write_manifests(const std::string& out, const std::vector<ManifestFile>& files) {
  make_output_folder(out);
  AtomicBatch batch;
  for (const auto& f : files) batch.add(out + "/" + f.name, f.yaml, 0644);
  batch.commit();
}

}  // namespace hwca::core::k8s
