// Kubelet TLS bootstrapping (issue #10): a bootstrap token in kubeadm's format, its
// `bootstrap-token-<id>` Secret, and the bootstrap-kubelet.conf that a kubelet uses to ask for its
// client certificate (kubelet-tls-bootstrapping.md, kubeadm's bootstraptoken and kubeconfig packages).
// Everything here is emitted with yaml-cpp; `hwca k8s bootstrap-token create` (cli/cmd_k8s_bootstrap.cpp)
// wires it to the cluster file, pki/ca.crt and the ledger.
//
// Output layout, under the --out folder (k8s init's folder or any other):
//   bootstrap-token                       "<id>.<secret>\n" (0600), as `kubeadm join --token` takes it
//   bootstrap-token-secret.yaml           the Secret kube-system/bootstrap-token-<id> (0600)
//   nodes/<node>/bootstrap-kubelet.conf   one per node of the cluster file (0600), next to the
//                                         nodes/<node>/kubelet.conf that k8s init writes
#pragma once

#include "core/k8s_cluster.h"

#include <ctime>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace hwca::core::k8s {

// kubeadm's constants (cmd/kubeadm/app/constants, k8s.io/cluster-bootstrap/token/api).
inline constexpr const char* kBootstrapTokenUser = "tls-bootstrap-token-user";
inline constexpr const char* kDefaultBootstrapTokenGroup = "system:bootstrappers:kubeadm:default-node-token";
inline constexpr const char* kBootstrapTokenSecretType = "bootstrap.kubernetes.io/token";
inline constexpr const char* kBootstrapTokenAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz";

// File names of the layout above.
inline constexpr const char* kBootstrapTokenFile = "bootstrap-token";
inline constexpr const char* kBootstrapSecretFile = "bootstrap-token-secret.yaml";
inline constexpr const char* kBootstrapKubeconfigFile = "bootstrap-kubelet.conf";

// The rejection sampling behind every token character: a random byte b < 252 (= 7 * 36) maps to
// alphabet[b % 36], so each of the 36 characters has exactly 7 bytes; b >= 252 is thrown away (no
// modulo bias). nullopt for a rejected byte.
std::optional<char> token_char_from_byte(unsigned char b);
// `length` characters of [a-z0-9] from OpenSSL's RAND_bytes through token_char_from_byte.
std::string random_token_string(size_t length);

struct BootstrapToken {
  std::string id;      // [a-z0-9]{6}: public, names the Secret and the user system:bootstrap:<id>
  std::string secret;  // [a-z0-9]{16}

  std::string str() const { return id + "." + secret; }
  // A fresh token from RAND_bytes.
  static BootstrapToken generate();
  // "<id>.<secret>" (kubeadm's ^([a-z0-9]{6})\.([a-z0-9]{16})$; surrounding white space ignored);
  // Error(BadInput) naming `what` otherwise (never quoting the text: it may be a secret).
  static BootstrapToken parse(const std::string& text, const std::string& what);
};

struct BootstrapSecretOptions {
  std::optional<std::time_t> expiration;  // nullopt: never expires (no expiration field)
  std::string description;                // empty: no description field
  std::vector<std::string> extra_groups{kDefaultBootstrapTokenGroup};
};

// The Secret as kubeadm's BootstrapTokenToSecret writes it: apiVersion v1, kind Secret, metadata
// {name: bootstrap-token-<id>, namespace: kube-system}, type bootstrap.kubernetes.io/token, and `data`
// (base64, as the API stores it) with auth-extra-groups, description, expiration (RFC 3339 UTC),
// token-id, token-secret, usage-bootstrap-authentication "true", usage-bootstrap-signing "true".
std::string render_bootstrap_secret(const BootstrapToken& token, const BootstrapSecretOptions& options);

// kubeadm's bootstrap-kubelet.conf (kubeconfig.CreateWithToken): clusters[cluster_name]{server,
// certificate-authority-data}, users[tls-bootstrap-token-user]{token: <id>.<secret>}, context
// "tls-bootstrap-token-user@<cluster_name>", current-context that context.
std::string render_bootstrap_kubeconfig(const std::string& cluster_name, const std::string& server, const std::string& ca_pem,
                                        const BootstrapToken& token);

struct BootstrapFile {
  std::string path;     // relative to the output folder
  std::string content;  // every one is a secret: written 0600
};
// The files of the layout above for every node of `spec` (ClusterSpec::all_nodes), with the cluster's
// API endpoint (ClusterSpec::server_url, as kubelet.conf) and `ca_pem` (pki/ca.crt).
std::vector<BootstrapFile> bootstrap_files(const ClusterSpec& spec, const std::string& ca_pem, const BootstrapToken& token,
                                           const BootstrapSecretOptions& options);

// The --out folder of both commands: Error(BadInput) when `out` exists and is not a folder,
// Error(NotFound) when it is missing and so is its parent. check_output_folder creates nothing;
// make_output_folder then creates `out` (0755) when missing.
void check_output_folder(const std::string& out);
void make_output_folder(const std::string& out);

// Writes `files` under `out` (created when missing, as k8s init does; its parent must exist), each
// 0600, in one AtomicBatch: either every file is the new one or none changed. When any of them
// already exists, Error(Conflict) naming the token it holds, unless `force`. `before_commit` runs once
// every temporary file is written and before any is renamed into place (the ledger record); when it
// throws, nothing is written.
void write_bootstrap_files(const std::string& out, const std::vector<BootstrapFile>& files, bool force,
                           const std::function<void()>& before_commit);

}  // namespace hwca::core::k8s
