// The Kubernetes planner: a ClusterSpec -> the certificates kubeadm makes (spec §1-2), with their exact
// CN, O, usages and SANs, the per-node sets, the seed document's extras and the kubeconfig files.
// Pure data: nothing here touches a key or a file.
#pragma once

#include "core/k8s_cluster.h"
#include "core/profile.h"
#include "core/x509.h"

#include <string>
#include <vector>

namespace hwca::core::k8s {

struct CertSpec {
  std::string id;          // unique: "ca", "apiserver", "etcd-server@cp1", "admin.conf", "kubelet.conf@w1"
  std::string name;        // kubeadm's name (check-expiration, renew): "apiserver", "etcd-server", "admin.conf"
  std::string node;        // the node it belongs to; empty for cluster-wide certificates
  bool is_ca = false;
  CaRole ca = CaRole::Kubernetes;  // the issuing CA (a CA's own role for a CA)
  std::string cn;
  std::vector<std::string> organizations;
  SubjectAltNames sans;
  bool server_auth = false;
  bool client_auth = false;
  std::chrono::seconds validity{0};
  // Where it is kept (relative to the output folder): `pki/<base>.crt|key` for files, or a kubeconfig
  // that embeds it. Node certificates live in nodes/<node>/; copies elsewhere are derived.
  std::string base;        // "apiserver", "etcd/server"; empty for kubeconfig-embedded certificates
  std::string kubeconfig;  // "admin.conf", "kubelet.conf"; empty for file certificates

  // The primary location: "pki/apiserver.crt", "nodes/cp1/pki/etcd/server.crt", "admin.conf",
  // "nodes/w1/kubelet.conf".
  std::string primary_path() const;
  // The subject as make_name builds it: O before CN, as Go's pkix.Name orders them.
  X509_NAME_ptr subject() const;
  // The issuance profile: usages (keyUsage for CAs: keyEncipherment|digitalSignature|certSign|cRLSign;
  // leaves: digitalSignature + keyEncipherment for RSA keys only), validity, CA constraint.
  Profile profile() const;
  // keyUsage bits and EKU NIDs this certificate must carry with a subject key of `leaf_key` type.
  Usages usages(bool rsa_key) const;
};

struct KubeconfigSpec {
  std::string path;       // relative to the output folder: "admin.conf", "nodes/cp2/controller-manager.conf"
  std::string cert_id;    // the CertSpec whose certificate and key it embeds
  std::string server;     // https://...
};

// A file that is a copy of a certificate or key kept elsewhere.
struct CopySpec {
  std::string path;       // "nodes/cp1/pki/apiserver.crt", "pki/etcd/server.key"
  std::string cert_id;
  bool key = false;       // the key rather than the certificate
};

struct FlagsSpec {
  std::string path;       // "flags/kube-apiserver.flags", "nodes/cp2/flags/etcd.flags"
  std::vector<std::string> flags;
};

struct Plan {
  std::vector<CertSpec> certs;  // the three CAs first, then leaves
  std::vector<KubeconfigSpec> kubeconfigs;
  std::vector<CopySpec> copies;
  // CA certificates to place: path -> role ("nodes/w1/pki/ca.crt").
  std::vector<std::pair<std::string, CaRole>> ca_copies;
  // sa.key / sa.pub locations (top level and each control-plane node).
  std::vector<std::string> sa_dirs;  // "pki", "nodes/cp1/pki"
  std::vector<FlagsSpec> flags;
  std::vector<std::string> folders;  // every folder to create, parents first

  const CertSpec* find(const std::string& id) const;
  const CertSpec& ca(CaRole role) const;
};

// The whole plan. The "init node" (the top level of the output folder) is the first control-plane node.
Plan make_plan(const ClusterSpec& spec);

// The O of certificates whose convention changed with the Kubernetes version (§1.2, §2).
std::vector<std::string> apiserver_kubelet_client_orgs(const ClusterSpec& spec);
std::vector<std::string> admin_orgs(const ClusterSpec& spec);
std::vector<std::string> etcd_client_orgs(const ClusterSpec& spec);  // apiserver-etcd-client, healthcheck
// The apiserver's SANs (§1.3) over every control-plane node, without duplicates.
SubjectAltNames apiserver_sans(const ClusterSpec& spec);
// The etcd server / peer SANs of one member (§1.3).
SubjectAltNames etcd_sans(const Node& node);

}  // namespace hwca::core::k8s
