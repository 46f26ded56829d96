// The Kubernetes planner: a ClusterSpec -> the certificates kubeadm makes (spec §1-2), with their exact
// CN, O, usages and SANs, the per-node sets, the seed document's extras and the kubeconfig files.
// Pure data: nothing here touches a key or a file.
#pragma once

#include "core/k8s_cluster.h"
#include "core/ledger.h"
#include "core/profile.h"
#include "core/x509.h"

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
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

// ---------------------------------------------------------------------------------------------
// Crash consistency (issue 9): which ledger rows of `k8s init` / `renew` never reached their file.
//
// Every certificate init issues names the file it is for in its (unique) ledger request id:
//   "k8s-file:<run>:<absolute path of its primary file>"   (CertSpec::primary_path under the output folder)
// where <run> is one more than the largest run of that output folder in the ledger, so each run issues a
// file's certificate at most once and a later run's rows are newer. A run records a part's certificates
// (committed) before it renames the part's files into place, each certificate's primary file before any
// copy of it; a process killed in between leaves rows whose certificate reached no file. Before a run
// issues anything for a file it marks such rows orphaned, so every older row still "issued" did reach the
// file once (it was superseded since). Hence, for the file P:
//   - P holds the certificate of row R: every "issued" row of P newer than R never reached P: orphaned;
//     older rows were superseded and stay as they are.
//   - P does not exist: the newest row of P, if "issued", never reached it: orphaned (a file deleted by
//     hand cannot be told from one that never arrived: its last certificate is marked too).
//   - P holds something else (a certificate this ledger did not record for P, or nothing readable):
//     nothing is marked (nothing can be proven).
inline constexpr std::string_view kFileRequestIdPrefix = "k8s-file:";
std::string file_request_id(long long run, const std::string& abs_path);
struct FileRequest {
  long long run = 0;
  std::string path;  // absolute
};
// nullopt unless `request_id` is a well-formed "k8s-file:<run>:<path>".
std::optional<FileRequest> parse_file_request_id(const std::string& request_id);

struct FileRow {
  long long run = 0;
  std::string serial;
  std::string status;  // the ledger's: "issued", "orphaned", "revoked"
};

// What a primary file holds now.
struct OnDisk {
  enum class State { Missing, Holds, Unknown };
  State state = State::Missing;
  std::string serial;  // Holds: the certificate's serial (lowercase hex, as the ledger keeps it)
  static OnDisk missing() { return {}; }
  static OnDisk holds(std::string serial) { return {State::Holds, std::move(serial)}; }
  static OnDisk unknown() { return {State::Unknown, {}}; }
};

struct Orphan {
  std::string serial;
  std::string path;  // absolute
  long long run = 0;
  std::string why;   // for Ledger::mark_orphaned: names the path and what it holds
};

// The rules above for one file: `rows` are the file's rows in any order.
std::vector<Orphan> find_orphans(const std::string& abs_path, const std::vector<FileRow>& rows, const OnDisk& disk);

// The k8s-file rows of one output folder, by absolute path, from one Ledger::request_ids_with_prefix().
class FileRows {
 public:
  FileRows() = default;
  // `abs_out`: the output folder's absolute path, no trailing slash.
  FileRows(const std::vector<LedgerEntry>& entries, const std::string& abs_out);
  // The run number for the certificates of a new run (1 for the first).
  long long next_run() const { return m_max_run + 1; }
  std::vector<Orphan> orphans(const std::string& abs_path, const OnDisk& disk) const;
  // Records that `serial` was marked orphaned (so that a second look does not mark it again).
  void marked(const std::string& abs_path, const std::string& serial);
  size_t size() const { return m_count; }

 private:
  std::unordered_map<std::string, std::vector<FileRow>> m_rows;
  long long m_max_run = 0;
  size_t m_count = 0;
};

}  // namespace hwca::core::k8s
