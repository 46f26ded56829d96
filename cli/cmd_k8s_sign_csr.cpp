// hwca k8s sign-csr: kube-controller-manager's built-in signers (spec §3.1) with the kubernetes-ca key
// in hardware. Reads one CertificateSigningRequest (YAML or JSON, as `kubectl get csr NAME -o yaml|json`
// prints it) and writes it back with status.certificate set, or with a Failed condition when the
// signer's rules refuse it, or unchanged (with a warning) when kube-controller-manager would ignore it.
//   hwca k8s sign-csr --config cluster.yaml --pki /etc/kubernetes [--signing-duration 8760h] [--approve]
//                     [--in csr.yaml] > signed.yaml
#include "cli/issue.h"
#include "core/base/error.h"
#include "core/k8s_cluster.h"
#include "core/k8s_csr.h"

#include <iostream>
#include <memory>
#include <optional>

namespace hwca::cli {

KubernetesCa load_kubernetes_ca(const std::string& cluster_file, const std::string& pki_dir) {
  KubernetesCa ca{core::k8s::ClusterSpec::load(cluster_file), {}, {}};
  ca.key_uri = ca.cluster.ca_key(core::k8s::CaRole::Kubernetes);
  if (ca.key_uri.empty())
    throw Error(ErrorKind::BadInput, ca.cluster.where("cas.kubernetes-ca.key") + ": no key URI for the kubernetes-ca");
  const std::string ca_path = pki_dir + "/pki/ca.crt";
  try {
    ca.cert = x509_from_pem(read_file(ca_path), ca_path);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::NotFound) throw;
    throw Error(ErrorKind::NotFound, ca_path + ": not found (--pki names the folder that holds pki/ca.crt, as k8s init's --out)");
  }
  return ca;
}

namespace {

struct SignCsrOptions {
  std::string config;
  std::string pki;
  std::string out;
  std::string in = "-";
  std::string signing_duration = "8760h";
  bool approve = false;
  bool allow_file_ca_key = false;
};

void run_sign_csr(const Context& ctx, const SignCsrOptions& opts) {
  if (opts.config.empty()) throw Error(ErrorKind::Usage, "k8s sign-csr needs --config cluster.yaml (it names the kubernetes-ca key)");
  if (!opts.pki.empty() && !opts.out.empty() && opts.pki != opts.out)
    throw Error(ErrorKind::Usage, "--pki and --out name the same folder (k8s init's --out); give one of them");
  const std::string dir = opts.pki.empty() ? opts.out : opts.pki;
  if (dir.empty())
    throw Error(ErrorKind::Usage, "k8s sign-csr needs --pki DIR: the folder k8s init wrote (--out), holding pki/ca.crt");
  core::k8s::SignOptions sign;
  sign.signing_duration = core::parse_go_duration(opts.signing_duration);
  if (sign.signing_duration.count() <= 0)
    throw Error(ErrorKind::Usage, "--signing-duration must be positive (got " + opts.signing_duration + ")");
  sign.approve = opts.approve;

  // Everything that can be checked is checked before the CA key is opened.
  KubernetesCa ca = load_kubernetes_ca(opts.config, dir);
  sign.nodes = ca.cluster.all_nodes();
  const std::string& key_uri = ca.key_uri;
  X509_ptr& ca_cert = ca.cert;
  const std::string what = opts.in == "-" ? "the CSR object on stdin" : opts.in;
  core::k8s::CsrObject csr = core::k8s::CsrObject::parse(read_input(opts.in), what);

  std::unique_ptr<tokens::Signer> key;
  std::unique_ptr<core::Ledger> ledger;
  std::optional<core::Issuer> issuer;
  auto get_issuer = [&]() -> core::Issuer& {
    if (!issuer) {
      key = ctx.open_ca_key(key_uri, opts.allow_file_ca_key);
      core::check_key_matches_cert(ca_cert.get(), key->public_key());
      ledger = ctx.open_ledger();
      issuer.emplace(ca_cert.get(), key->pkey(), *ledger);
    }
    return *issuer;
  };
  core::k8s::SignReport report = core::k8s::sign_csr(csr, sign, ca_cert.get(), get_issuer);
  const std::string text = csr.serialize();  // whole before anything is written
  if (!report.message.empty()) warn(report.message);
  std::cout << text << std::flush;
  if (!std::cout) throw Error(ErrorKind::Io, "cannot write to standard output");
}

}  // namespace

void add_k8s_sign_csr_command(CLI::App& k8s, Context& ctx) {
  auto opts = std::make_shared<SignCsrOptions>();
  auto* cmd = k8s.add_subcommand(
      "sign-csr",
      "sign one Kubernetes CertificateSigningRequest with the kubernetes-ca, as kube-controller-manager's built-in "
      "signers do (kube-apiserver-client, kube-apiserver-client-kubelet, kubelet-serving)");
  cmd->add_option("--config", opts->config, "cluster.yaml (names the kubernetes-ca key URI and the nodes)");
  cmd->add_option("--pki", opts->pki, "the folder k8s init wrote (its --out): the CA certificate is DIR/pki/ca.crt");
  cmd->add_option("--out", opts->out, "same as --pki");
  cmd->add_option("--in", opts->in, "the CertificateSigningRequest (YAML or JSON); default - (stdin)");
  cmd->add_option("--signing-duration", opts->signing_duration,
                  "longest certificate lifetime, as kube-controller-manager's --cluster-signing-duration (default 8760h)");
  cmd->add_flag("--approve", opts->approve,
                "approve unapproved kubelet CSRs that hwca's policy allows (bootstrap and renewal client certificates, "
                "serving certificates for the node's own name and IP)");
  cmd->add_flag("--allow-file-ca-key", opts->allow_file_ca_key, "accept a file: CA key (not for production)");
  cmd->callback([opts, &ctx] { ctx.action = [opts, &ctx] { run_sign_csr(ctx, *opts); }; });
}

}  // namespace hwca::cli
