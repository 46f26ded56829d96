// The shared steps of the issuing commands (ca init, sign, gencert): load the CA, pick a profile,
// hand a request to the engine, and write or print the result.
#pragma once

#include "cli/context.h"
#include "core/cfssl.h"
#include "core/engine.h"
#include "core/k8s_cluster.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hwca::cli {

// An issuing CA: its certificate and its key, opened and checked against each other.
struct LoadedCa {
  X509_ptr cert;
  std::unique_ptr<tokens::Signer> key;
};
LoadedCa load_ca(const Context& ctx, const std::string& ca_path, const std::string& ca_key_uri, bool allow_file_ca_key);

// The kubernetes-ca as `k8s sign-csr` and `k8s signer` use it: the cluster file (key URI and nodes)
// and DIR/pki/ca.crt, read and checked before any key is opened. Error(NotFound) naming the path when
// the certificate is not there.
struct KubernetesCa {
  core::k8s::ClusterSpec cluster;
  std::string key_uri;
  X509_ptr cert;
};
KubernetesCa load_kubernetes_ca(const std::string& cluster_file, const std::string& pki_dir);

// The profile a command uses: a built-in one (server, client, peer) when no -config is given and the
// name is one; otherwise the config's (or cfssl's built-in default config's) with cfssl's fallback.
struct ProfileChoice {
  core::CfsslConfig config;
  core::Profile profile;
};
ProfileChoice choose_profile(const std::string& config_path, const std::string& name, bool strict);

// "-hostname=a,b,c" split on commas (empty items dropped).
std::vector<std::string> split_hosts(const std::string& list);

// "cli:<command> uid=<uid> user=<USER>"
std::string requester(const std::string& command);

// One warning line when the engine cut the certificate's validity at its CA's notAfter (cfssl does
// not cut; a leaf outliving its CA would not verify after the CA expires anyway).
void warn_if_validity_capped(const X509* cert, const core::Profile& profile);

// {"cert":..., "csr":..., "key":...} as cfssl prints it (empty members left out), one line.
// Error(Io) when standard output cannot be written (a full disk, a closed pipe).
void print_cfssl_json(const std::string& cert, const std::string& csr, const std::string& key);

// Hands an issued (and recorded) certificate out through `deliver`: writes its files or prints it. When
// that fails, its ledger row is marked orphaned (recorded, never delivered) and the error says so; the
// engine never issues the same serial again, so a retry gets a new certificate.
void deliver_or_orphan(core::Ledger& ledger, const X509* cert, const std::function<void()>& deliver);

}  // namespace hwca::cli
