// hwca k8s: the Kubernetes PKI from one cluster file.
//   hwca k8s init --config cluster.yaml --out DIR [--only NAME,...]
//   hwca k8s check-expiration --pki DIR [--output json]
//   hwca k8s renew --config cluster.yaml --out DIR [NAME... | --all] [--reuse-keys]
//   hwca k8s sign-csr ...                                   (cmd_k8s_sign_csr.cpp)
#include "cli/issue.h"
#include "core/base/error.h"
#include "core/k8s_cluster.h"
#include "core/k8s_layout.h"
#include "core/profile.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

namespace hwca::cli {

namespace {

// The KeySource port of core/k8s_layout.h over the key registry.
class RegistryCaKey final : public core::k8s::CaKey {
 public:
  explicit RegistryCaKey(std::unique_ptr<tokens::Signer> signer) : m_signer(std::move(signer)) {}
  EVP_PKEY* pkey() const override { return m_signer->pkey(); }
  EVP_PKEY* public_key() const override { return m_signer->public_key(); }

 private:
  std::unique_ptr<tokens::Signer> m_signer;
};

class RegistryKeySource final : public core::k8s::KeySource {
 public:
  explicit RegistryKeySource(tokens::Registry& registry) : m_registry(registry) {}
  bool exists(const std::string& uri) override { return m_registry.backend_for(uri).exists(uri); }
  std::unique_ptr<core::k8s::CaKey> open(const std::string& uri) override {
    return std::make_unique<RegistryCaKey>(m_registry.backend_for(uri).open(uri));
  }
  std::unique_ptr<core::k8s::CaKey> generate(const std::string& uri, const KeySpec& spec) override {
    return std::make_unique<RegistryCaKey>(m_registry.backend_for(uri).generate(uri, tokens::GenerateOptions{spec}));
  }

 private:
  tokens::Registry& m_registry;
};

struct K8sOptions {
  std::string config, out, pki, output = "text", warn_within = "720h";
  std::vector<std::string> names, only;
  bool all = false;
  bool reuse_keys = false;
};

void run_init(const Context& ctx, const K8sOptions& o, bool renew) {
  if (o.config.empty()) throw Error(ErrorKind::Usage, "missing --config (the cluster file)");
  if (o.out.empty()) throw Error(ErrorKind::Usage, "missing --out (the output folder, such as /etc/kubernetes)");
  core::k8s::ClusterSpec spec = core::k8s::ClusterSpec::load(o.config);
  RegistryKeySource keys(ctx.registry);
  auto ledger = ctx.open_ledger();
  core::k8s::InitOptions opt;
  opt.out = o.out;
  opt.requester = requester(renew ? "k8s renew" : "k8s init");
  opt.renew = renew;
  opt.renew_all = o.all;
  opt.renew_names = o.names;
  opt.reuse_keys = renew ? o.reuse_keys : true;
  if (!renew) opt.only = o.only;
  for (const auto& n : o.names)
    if (n == "all") opt.renew_all = true;
  opt.report = [](const std::string& line) { std::cout << line << "\n"; };
  core::k8s::InitResult r = core::k8s::init_cluster(spec, keys, *ledger, opt);
  if (r.orphaned > 0)
    std::cout << (renew ? "renew: " : "init: ") << r.orphaned << " ledger row" << (r.orphaned == 1 ? "" : "s")
              << " marked orphaned (an earlier run stopped before writing " << (r.orphaned == 1 ? "its file)" : "their files)")
              << "\n";
  std::cout << (renew ? "renew: " : "init: ") << r.issued << " certificate" << (r.issued == 1 ? "" : "s") << " issued, "
            << r.kept << " kept; " << r.files_written << " file" << (r.files_written == 1 ? "" : "s") << " written, "
            << r.files_unchanged << " unchanged (" << o.out << ")" << std::endl;
}

std::string rfc3339(std::time_t t) { return core::iso8601(t); }

void run_check_expiration(const K8sOptions& o) {
  if (o.pki.empty()) throw Error(ErrorKind::Usage, "missing --pki (the folder that holds pki/ and the kubeconfigs)");
  std::chrono::seconds within = core::parse_go_duration(o.warn_within);
  auto entries = core::k8s::scan_expiration(o.pki);
  if (entries.empty()) throw Error(ErrorKind::NotFound, o.pki + ": no certificates found (pki/*.crt, pki/etcd/*.crt, *.conf)");
  std::time_t now = core::now();
  auto status = [&](std::time_t na) -> std::string {
    if (na <= now) return "EXPIRED";
    if (na - now <= within.count()) return "EXPIRES SOON";
    return "ok";
  };
  if (o.output == "json") {
    nlohmann::ordered_json certs = nlohmann::ordered_json::array(), cas = nlohmann::ordered_json::array();
    for (const auto& e : entries) {
      nlohmann::ordered_json j = {{"name", e.name},
                                  {"path", e.path},
                                  {"expirationDate", rfc3339(e.not_after)},
                                  {"residualTime", (static_cast<long long>(e.not_after) - static_cast<long long>(now)) * 1000000000LL},
                                  {"caName", e.ca_name},
                                  {"externallyManaged", false},
                                  {"missing", false},
                                  {"expiresSoon", status(e.not_after) != "ok"},
                                  {"status", status(e.not_after)}};
      (e.is_ca ? cas : certs).push_back(j);
    }
    nlohmann::ordered_json out = {{"kind", "CertificateExpirationInfo"},
                                  {"apiVersion", "output.kubeadm.k8s.io/v1alpha3"},
                                  {"certificates", certs},
                                  {"certificateAuthorities", cas}};
    std::cout << out.dump(2) << std::endl;
    return;
  }
  auto table = [&](bool ca_rows) {
    std::vector<std::vector<std::string>> rows;
    rows.push_back(ca_rows ? std::vector<std::string>{"CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "STATUS"}
                           : std::vector<std::string>{"CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "STATUS"});
    for (const auto& e : entries) {
      if (e.is_ca != ca_rows) continue;
      std::vector<std::string> row = {e.name, core::k8s::kubeadm_date(e.not_after), core::k8s::residual_time(e.not_after, now)};
      if (!ca_rows) row.push_back(e.ca_name.empty() ? "?" : e.ca_name);
      row.push_back(status(e.not_after));
      rows.push_back(row);
    }
    if (rows.size() == 1) return;
    std::vector<size_t> width(rows[0].size(), 0);
    for (const auto& r : rows)
      for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    for (const auto& r : rows) {
      std::string line;
      for (size_t i = 0; i < r.size(); ++i) line += i + 1 < r.size() ? r[i] + std::string(width[i] - r[i].size() + 3, ' ') : r[i];
      std::cout << line << "\n";
    }
  };
  table(false);
  std::cout << "\n";
  table(true);
  std::cout.flush();
}

}  // namespace

void add_k8s_commands(CLI::App& app, Context& ctx) {
  auto* k8s = app.add_subcommand("k8s", "the Kubernetes PKI from one cluster file");
  k8s->require_subcommand(1);

  auto init_opts = std::make_shared<K8sOptions>();
  auto* init = k8s->add_subcommand("init", "issue every certificate of cluster.yaml that is missing or out of date (kubeadm's layout)");
  init->add_option("--config", init_opts->config, "the cluster file (cluster.yaml)")->required();
  init->add_option("--out", init_opts->out, "the output folder (kubeadm's /etc/kubernetes layout)")->required();
  init->add_option("--only", init_opts->only,
                   "issue only these certificates (comma-separated: NAME or NODE/NAME as check-expiration lists them, "
                   "ca, etcd-ca, front-proxy-ca, sa) and the CAs they chain to")
      ->delimiter(',');
  init->callback([init_opts, &ctx] { ctx.action = [init_opts, &ctx] { run_init(ctx, *init_opts, false); }; });

  auto check_opts = std::make_shared<K8sOptions>();
  auto* check = k8s->add_subcommand("check-expiration", "list every certificate of a kubeadm-layout folder and when it expires");
  check->add_option("--pki", check_opts->pki, "the folder (holding pki/ and the *.conf files)")->required();
  check->add_option("--output,-o", check_opts->output, "text (default) or json")->check(CLI::IsMember({"text", "json"}));
  check->add_option("--warn-within", check_opts->warn_within, "flag certificates that expire within this duration (default 720h)");
  check->callback([check_opts, &ctx] { ctx.action = [check_opts] { run_check_expiration(*check_opts); }; });

  auto renew_opts = std::make_shared<K8sOptions>();
  auto* renew = k8s->add_subcommand("renew", "re-issue leaf certificates through the hardware CAs (new keys unless --reuse-keys)");
  renew->add_option("--config", renew_opts->config, "the cluster file (cluster.yaml)")->required();
  renew->add_option("--out", renew_opts->out, "the folder init wrote")->required();
  renew->add_option("names", renew_opts->names, "certificates to renew: NAME (every node's) or NODE/NAME, as check-expiration lists them");
  renew->add_flag("--all", renew_opts->all, "renew every leaf certificate");
  renew->add_flag("--reuse-keys", renew_opts->reuse_keys, "keep each certificate's key");
  renew->callback([renew_opts, &ctx] {
    if (renew_opts->all && !renew_opts->names.empty())
      throw CLI::ValidationError("renew", "give certificate names or --all, not both");
    ctx.action = [renew_opts, &ctx] { run_init(ctx, *renew_opts, true); };
  });

  add_k8s_sign_csr_command(*k8s, ctx);
  add_k8s_bootstrap_commands(*k8s, ctx);
  add_k8s_signer_command(*k8s, ctx);
}

}  // namespace hwca::cli
