// hwca k8s bootstrap-token create | manifests: what kubelet TLS bootstrapping needs besides a signer.
//   hwca k8s bootstrap-token create --config cluster.yaml [--ttl 24h] [--pki DIR] --out DIR [--force]
//       A bootstrap token in kubeadm's format, its Secret and a bootstrap-kubelet.conf per node of the
//       cluster file (layout in core/k8s_bootstrap.h; all 0600). --pki is the folder k8s init wrote
//       (its pki/ca.crt is the kubeconfigs' CA; default: --out). An existing token in --out is
//       replaced only with --force. The secret is never printed: stdout names the token id and files.
//   hwca k8s manifests --out DIR [--signer-names a,b,c] [--approve] [--signer-user NAME]
//       RBAC for the signer and for node bootstrapping (two files; see core/k8s_rbac.h).
#include "cli/context.h"
#include "core/base/error.h"
#include "core/k8s_bootstrap.h"
#include "core/k8s_cluster.h"
#include "core/k8s_rbac.h"
#include "core/profile.h"

#include <openssl/x509v3.h>

#include <iostream>
#include <memory>

namespace hwca::cli {

namespace {

std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

struct TokenOptions {
  std::string config;
  std::string ttl = "24h";
  std::string pki;
  std::string out;
  std::string description = "bootstrap token made by 'hwca k8s bootstrap-token create'";
  bool force = false;
};

void run_token_create(const Context& ctx, const TokenOptions& o) {
  if (o.config.empty()) throw Error(ErrorKind::Usage, "missing --config (the cluster file)");
  if (o.out.empty()) throw Error(ErrorKind::Usage, "missing --out (the folder for the token, its Secret and the kubeconfigs)");
  const std::chrono::seconds ttl = core::parse_go_duration(o.ttl);
  if (ttl.count() < 0) throw Error(ErrorKind::Usage, "--ttl must not be negative (0 means the token never expires)");
  for (char c : o.description)
    if (const auto ch = static_cast<unsigned char>(c); ch < 0x20 || ch == 0x7f)
      throw Error(ErrorKind::Usage, "--description holds a control character");
  const std::string out = without_trailing_slashes(o.out);
  const std::string dir = without_trailing_slashes(o.pki.empty() ? o.out : o.pki);

  const core::k8s::ClusterSpec spec = core::k8s::ClusterSpec::load(o.config);
  const std::string ca_path = dir + "/pki/ca.crt";
  X509_ptr ca;
  try {
    ca = x509_from_pem(read_file(ca_path), ca_path);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::NotFound) throw;
    throw Error(ErrorKind::NotFound,
                ca_path + ": not found (--pki names the folder k8s init wrote, its --out, holding pki/ca.crt; default --out)");
  }
  if (X509_check_ca(ca.get()) == 0) throw Error(ErrorKind::BadInput, ca_path + ": not a CA certificate");

  core::k8s::BootstrapSecretOptions secret;
  secret.description = o.description;
  const std::time_t now = core::now();
  if (ttl.count() > 0) secret.expiration = now + static_cast<std::time_t>(ttl.count());
  const core::k8s::BootstrapToken token = core::k8s::BootstrapToken::generate();
  const auto files = core::k8s::bootstrap_files(spec, x509_to_pem(ca.get()), token, secret);

  // The ledger records the token id (never the secret) before any file is in place.
  core::k8s::write_bootstrap_files(out, files, o.force, [&] {
    auto ledger = ctx.open_ledger();
    ledger->record_event("bootstrap-token-created",
                         "token-id=" + token.id + " expires=" + (secret.expiration ? core::iso8601(*secret.expiration) : "never") +
                             " out=" + out + " nodes=" + std::to_string(files.size() - 2));
  });

  std::cout << "bootstrap token " << token.id << " (user system:bootstrap:" << token.id << "), "
            << (secret.expiration ? "expires " + core::iso8601(*secret.expiration) : std::string("never expires")) << "\n";
  std::cout << "  the token (secret, 0600):  " << out << "/" << core::k8s::kBootstrapTokenFile << "\n";
  std::cout << "  its Secret (0600):         " << out << "/" << core::k8s::kBootstrapSecretFile
            << "  (kubectl apply -f it; it is kube-system/bootstrap-token-" << token.id << ")\n";
  for (size_t i = 2; i < files.size(); ++i) std::cout << "  kubelet bootstrap (0600):  " << out << "/" << files[i].path << "\n";
  std::cout.flush();
}

struct ManifestOptions {
  std::string out;
  std::vector<std::string> signer_names = core::k8s::default_signer_names();
  bool approve = false;
  std::string signer_user = core::k8s::kDefaultSignerUser;
};

void run_manifests(const ManifestOptions& o) {
  if (o.out.empty()) throw Error(ErrorKind::Usage, "missing --out (the folder for the manifests)");
  core::k8s::RbacOptions r;
  r.signer_names = o.signer_names;
  r.approve = o.approve;
  r.signer_user = o.signer_user;
  const auto files = core::k8s::rbac_manifests(r);
  const std::string out = without_trailing_slashes(o.out);
  core::k8s::write_manifests(out, files);
  for (const auto& f : files) std::cout << out << "/" << f.name << "\n";
  std::cout.flush();
}

}  // namespace

void add_k8s_bootstrap_commands(CLI::App& k8s, Context& ctx) {
  auto* bt = k8s.add_subcommand("bootstrap-token", "bootstrap tokens for kubelet TLS bootstrapping (kubeadm's format)");
  bt->require_subcommand(1);
  auto topts = std::make_shared<TokenOptions>();
  auto* create = bt->add_subcommand(
      "create",
      "make a bootstrap token, its kube-system Secret and a bootstrap-kubelet.conf per node of the cluster file (all 0600)");
  create->add_option("--config", topts->config, "the cluster file (cluster.yaml): nodes, API endpoint, cluster name")->required();
  create->add_option("--out", topts->out,
                     "the output folder: bootstrap-token, bootstrap-token-secret.yaml, nodes/<node>/bootstrap-kubelet.conf")
      ->required();
  create->add_option("--pki", topts->pki, "the folder k8s init wrote (its --out), holding pki/ca.crt (default: --out)");
  create->add_option("--ttl", topts->ttl, "how long the token is valid (Go duration, default 24h; 0: never expires)");
  create->add_option("--description", topts->description, "the Secret's description");
  create->add_flag("--force", topts->force, "replace a token (and its kubeconfigs) that --out already holds");
  create->callback([topts, &ctx] { ctx.action = [topts, &ctx] { run_token_create(ctx, *topts); }; });

  auto mopts = std::make_shared<ManifestOptions>();
  auto* man = k8s.add_subcommand(
      "manifests",
      "write RBAC manifests: hwca-signer-rbac.yaml (the signer's ClusterRole and binding) and node-bootstrap-rbac.yaml "
      "(system:bootstrappers may create CSRs; nodeclient, selfnodeclient, selfnodeserver approval bindings)");
  man->add_option("--out", mopts->out, "the output folder (created when missing; files of the same names are replaced)")
      ->required();
  man->add_option("--signer-names", mopts->signer_names,
                  "signer names the signer may sign (comma-separated; default the three built-in ones hwca signs)")
      ->delimiter(',');
  man->add_flag("--approve", mopts->approve, "also let the signer approve CSRs (as `hwca k8s signer --approve` does)");
  man->add_option("--signer-user", mopts->signer_user, "the user the signer authenticates as (default system:hwca-signer)");
  man->callback([mopts, &ctx] { ctx.action = [mopts] { run_manifests(*mopts); }; });
}

}  // namespace hwca::cli
