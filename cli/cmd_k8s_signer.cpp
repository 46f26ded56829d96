// hwca k8s signer: the long-running signer kube-controller-manager cannot be when the cluster CA's key is
// in hardware (it runs with --controllers=*,-csrsigning). It watches certificates.k8s.io/v1
// CertificateSigningRequests through the API server and signs each approved request for the signers it
// serves, under exactly the rules `k8s sign-csr` applies (core/k8s_csr.h); with --approve it also
// approves what the seed document's RBAC bindings would.
//   hwca k8s signer --kubeconfig signer.conf --config cluster.yaml [--pki DIR] [--signer-names a,b]
//                   [--signing-duration 8760h] [--approve] [--listen 127.0.0.1:10271]
//
// Exactly once: the ledger records each certificate with the CSR's uid as its request id (unique), so a
// CSR delivered twice, or met again after a restart, has its recorded certificate written back instead
// of being signed again. The watch: list, then watch from the list's resourceVersion; 410 Gone (or an
// expired watch) re-lists; a broken connection re-watches from the last resourceVersion seen, with
// backoff; any write that failed sends the loop back to a re-list after the backoff. /healthz and
// /metrics are served on --listen; SIGTERM or SIGINT finish the CSR in hand and stop.
#include "cli/context.h"
#include "cli/issue.h"
#include "cli/k8s_api.h"
#include "cli/serve_http.h"
#include "core/base/error.h"
#include "core/k8s_cluster.h"
#include "core/k8s_csr.h"
#include "core/k8s_kubeconfig.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_set>

namespace hwca::cli {

namespace {

using nlohmann::json;
namespace k8score = core::k8s;
using k8s::ApiResponse;

constexpr const char* kCsrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

struct SignerOptions {
  std::string kubeconfig;
  std::string context;
  std::string config;
  std::string pki;
  std::vector<std::string> signer_names;
  std::string signing_duration = "8760h";
  bool approve = false;
  std::string listen = "127.0.0.1:10271";
  int watch_timeout = 300;  // seconds the API server is asked to keep one watch open
  bool allow_file_ca_key = false;
};

std::mutex g_log_mutex;
void log(const std::string& line) {
  std::lock_guard lock(g_log_mutex);
  std::cerr << "hwca: k8s signer: " << line << std::endl;
}

struct Metrics {
  std::atomic<long long> signed_{0}, rewritten{0}, refused{0}, approved{0}, not_approved{0}, watch_restarts{0},
      relists{0}, api_errors{0}, sign_errors{0};
  std::atomic<bool> healthy{false};
  std::mutex mu;
  std::string last_error;

  std::string text() const {
    std::ostringstream out;
    auto counter = [&](const char* name, const char* help, const std::atomic<long long>& v) {
      out << "# HELP hwca_k8s_signer_" << name << "_total " << help << "\n# TYPE hwca_k8s_signer_" << name
          << "_total counter\nhwca_k8s_signer_" << name << "_total " << v.load() << "\n";
    };
    counter("signed", "CertificateSigningRequests signed (certificate issued and written to status).", signed_);
    counter("rewritten", "Certificates found in the ledger for a CSR and written to its status again, not re-signed.", rewritten);
    counter("refused", "CertificateSigningRequests marked Failed (SignerValidationFailure).", refused);
    counter("approved", "CertificateSigningRequests approved by --approve's policy.", approved);
    counter("not_approved", "CertificateSigningRequests --approve's policy left for a human.", not_approved);
    counter("watch_restarts", "Watches that ended (server timeout, connection loss, 410 Gone) and were started again.",
            watch_restarts);
    counter("relists", "Full lists of CertificateSigningRequests.", relists);
    counter("api_errors", "API server requests that failed (connection, TLS, or an unexpected status).", api_errors);
    counter("sign_errors", "Signing attempts that failed (token, ledger).", sign_errors);
    out << "# HELP hwca_k8s_signer_up 1 while the last list or watch succeeded.\n# TYPE hwca_k8s_signer_up gauge\n"
        << "hwca_k8s_signer_up " << (healthy.load() ? 1 : 0) << "\n";
    return out.str();
  }
};

struct WatchExpired {};  // 410 Gone: re-list
struct RelistNeeded {};  // a write failed: back off, then re-list

bool is_2xx(unsigned status) { return status >= 200 && status < 300; }

std::string status_message(const ApiResponse& r) {
  try {
    json j = json::parse(r.body);
    if (j.is_object() && j.contains("message") && j["message"].is_string())
      return "HTTP " + std::to_string(r.status) + ": " + j["message"].get<std::string>();
  } catch (const json::exception&) {
  }
  return "HTTP " + std::to_string(r.status) + (r.body.empty() ? "" : ": " + r.body.substr(0, 200));
}

class CsrSigner {
 public:
  CsrSigner(k8s::ApiClient& api, core::Ledger& ledger, core::Issuer& issuer, const X509* ca_cert,
            k8score::SignOptions sign, std::set<std::string> served, Metrics& metrics)
      : m_api(api), m_ledger(ledger), m_issuer(issuer), m_ca(ca_cert), m_sign(std::move(sign)),
        m_served(std::move(served)), m_metrics(metrics) {}

  // One CertificateSigningRequest as the API server returned it (a list item or a watch event's object).
  void handle(json obj) {
    if (!obj.is_object()) return;
    obj["apiVersion"] = "certificates.k8s.io/v1";  // list items come without them
    obj["kind"] = "CertificateSigningRequest";
    const std::string name = obj["metadata"].value("name", "");
    for (int attempt = 0; attempt < 5; ++attempt) {
      std::optional<k8score::CsrObject> csr = parse(obj, name);
      if (!csr) return;
      if (csr->has_certificate() || csr->has_true_condition("Failed") || csr->has_true_condition("Denied")) return;
      if (!m_served.count(csr->signer_name())) return;
      const auto signer = k8score::builtin_signer(csr->signer_name());
      if (!signer) return;
      const std::string label = "CSR " + name + " (uid " + csr->uid() + ", " + csr->signer_name() + ")";
      if (csr->uid().empty()) {
        once(name, label + " has no metadata.uid; not signed");
        return;
      }

      if (!csr->has_true_condition("Approved")) {
        if (!m_sign.approve) return;  // a human approves it; the watch brings it back then
        const auto content = k8score::CsrContent::of(csr->request());
        auto verdict = k8score::approval_policy(*signer, content, csr->usages(), csr->expiration_seconds(),
                                                csr->username(), csr->groups(), m_sign.nodes);
        if (!verdict.approved) {
          if (once(csr->uid(), label + " left for a human to approve: " + verdict.message)) ++m_metrics.not_approved;
          return;
        }
        csr->add_condition("Approved", "AutoApproved", "hwca k8s signer --approve: " + verdict.message, std::time(nullptr));
        ApiResponse r = m_api.request("PUT", std::string(kCsrPath) + "/" + name + "/approval", csr->serialize());
        if (r.status == 409) {
          if (!refetch(name, obj)) return;
          continue;
        }
        if (r.status == 404) return;  // deleted meanwhile
        if (!is_2xx(r.status)) fail_write(label + ": approving: " + status_message(r));
        ++m_metrics.approved;
        log(label + " approved: " + verdict.message);
        obj = parse_body(r, label);
        obj["apiVersion"] = "certificates.k8s.io/v1";
        obj["kind"] = "CertificateSigningRequest";
        continue;  // now approved: sign it on the next pass, from what the server returned
      }

      const std::string request_id = "k8s-csr:" + csr->uid();
      std::string outcome;
      if (auto row = m_ledger.find_by_request_id(request_id)) {
        csr->set_certificate(row->pem);
        outcome = "rewritten";
      } else {
        k8score::SignOptions sign = m_sign;
        sign.approve = false;
        sign.request_id = request_id;
        k8score::SignReport report;
        try {
          report = k8score::sign_csr(*csr, sign, m_ca, [this]() -> core::Issuer& { return m_issuer; });
        } catch (const Error& e) {
          if (e.kind() == ErrorKind::Conflict && m_ledger.find_by_request_id(request_id)) continue;  // signed meanwhile
          ++m_metrics.sign_errors;
          log(label + ": " + e.what());
          throw RelistNeeded{};
        }
        if (report.outcome == k8score::SignReport::Outcome::Skipped) return;
        outcome = report.outcome == k8score::SignReport::Outcome::Issued ? "signed" : "refused";
        if (outcome == "refused") log(report.message);
      }
      ApiResponse r = m_api.request("PUT", std::string(kCsrPath) + "/" + name + "/status", csr->serialize());
      if (r.status == 409) {
        if (!refetch(name, obj)) return;
        continue;  // the ledger row makes the next pass a rewrite, never a second signature
      }
      if (r.status == 404) {
        log(label + " was deleted before its status was written");
        return;
      }
      if (!is_2xx(r.status)) fail_write(label + ": writing status: " + status_message(r));
      if (outcome == "signed") {
        ++m_metrics.signed_;
        log(label + " signed for " + csr->username());
      } else if (outcome == "rewritten") {
        ++m_metrics.rewritten;
        log(label + ": its certificate was already in the ledger; written to status again");
      } else {
        ++m_metrics.refused;
      }
      return;
    }
    fail_write("CSR " + name + ": still conflicting after 5 attempts");
  }

 private:
  std::optional<k8score::CsrObject> parse(const json& obj, const std::string& name) {
    try {
      return k8score::CsrObject::parse(obj.dump(), "CSR " + name);
    } catch (const Error& e) {
      const std::string uid = obj["metadata"].value("uid", name);
      once(uid, std::string(e.what()) + "; not signed");
      return std::nullopt;
    }
  }

  json parse_body(const ApiResponse& r, const std::string& label) {
    try {
      json j = json::parse(r.body);
      if (j.is_object()) return j;
    } catch (const json::exception&) {
    }
    fail_write(label + ": the API server answered with something that is not a JSON object");
  }

  // Reads the object again after a 409 Conflict; false when it is gone.
  bool refetch(const std::string& name, json& obj) {
    ApiResponse r = m_api.request("GET", std::string(kCsrPath) + "/" + name);
    if (r.status == 404) return false;
    if (!is_2xx(r.status)) fail_write("CSR " + name + ": reading it again: " + status_message(r));
    obj = parse_body(r, "CSR " + name);
    obj["apiVersion"] = "certificates.k8s.io/v1";
    obj["kind"] = "CertificateSigningRequest";
    return true;
  }

  [[noreturn]] void fail_write(const std::string& message) {
    ++m_metrics.api_errors;
    log(message);
    throw RelistNeeded{};
  }

  // Logs a message about a CSR once (the watch brings the same object back with every change).
  bool once(const std::string& key, const std::string& message) {
    if (m_logged.size() > 100000) m_logged.clear();
    if (!m_logged.insert(key + "\n" + message).second) return false;
    log(message);
    return true;
  }

  k8s::ApiClient& m_api;
  core::Ledger& m_ledger;
  core::Issuer& m_issuer;
  const X509* m_ca;
  k8score::SignOptions m_sign;
  std::set<std::string> m_served;
  Metrics& m_metrics;
  std::unordered_set<std::string> m_logged;
};

class WatchLoop {
 public:
  WatchLoop(k8s::ApiClient& api, CsrSigner& signer, Metrics& metrics, int watch_timeout)
      : m_api(api), m_signer(signer), m_metrics(metrics), m_watch_timeout(watch_timeout) {}

  void run() {
    std::string rv;
    bool relist = true;
    auto backoff = std::chrono::milliseconds(200);
    while (!m_stop.load()) {
      try {
        if (relist) {
          rv = list();
          relist = false;
        }
        const std::string path = std::string(kCsrPath) + "?watch=1&allowWatchBookmarks=true&resourceVersion=" + rv +
                                 "&timeoutSeconds=" + std::to_string(m_watch_timeout);
        ApiResponse r = m_api.watch(path, std::chrono::seconds(m_watch_timeout + 60), [&](const std::string& line) {
          on_event(line, rv);
          m_metrics.healthy = true;
        });
        if (r.status == 410) throw WatchExpired{};
        if (r.status != 200) throw Error(ErrorKind::Io, "watch: " + status_message(r));
        ++m_metrics.watch_restarts;  // the server's timeoutSeconds: watch again from rv
        backoff = std::chrono::milliseconds(200);
      } catch (const WatchExpired&) {
        ++m_metrics.watch_restarts;
        log("the watch's resourceVersion " + rv + " has expired (410 Gone); listing again");
        relist = true;
      } catch (const RelistNeeded&) {
        ++m_metrics.watch_restarts;
        relist = true;
        pause(backoff);
      } catch (const Error& e) {
        if (m_stop.load()) break;
        ++m_metrics.api_errors;
        ++m_metrics.watch_restarts;
        m_metrics.healthy = false;
        {
          std::lock_guard lock(m_metrics.mu);
          m_metrics.last_error = e.what();
        }
        log(std::string(e.what()) + "; retrying in " + std::to_string(backoff.count()) + " ms");
        pause(backoff);
        // rv may be unknown (the list itself failed): then list again.
        if (rv.empty()) relist = true;
      }
      backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    }
  }

  void stop() {
    m_stop = true;
    m_api.interrupt();
    std::lock_guard lock(m_mu);
    m_cv.notify_all();
  }

 private:
  std::string list() {
    std::string rv;
    std::string cont;
    do {
      std::string path = std::string(kCsrPath) + "?limit=500";
      if (!cont.empty()) path += "&continue=" + cont;
      ApiResponse r = m_api.request("GET", path);
      if (r.status == 410) {  // the continue token expired: start over
        cont.clear();
        continue;
      }
      if (r.status != 200) throw Error(ErrorKind::Io, "listing CertificateSigningRequests: " + status_message(r));
      json list;
      try {
        list = json::parse(r.body);
      } catch (const json::exception& e) {
        throw Error(ErrorKind::Io, std::string("listing CertificateSigningRequests: not JSON: ") + e.what());
      }
      if (!list.is_object() || !list["items"].is_array())
        throw Error(ErrorKind::Io, "listing CertificateSigningRequests: no items in the answer");
      rv = list["metadata"].value("resourceVersion", "");
      cont = list["metadata"].value("continue", "");
      for (auto& item : list["items"]) {
        if (m_stop.load()) throw Error(ErrorKind::Io, "stopping");
        m_signer.handle(std::move(item));
      }
    } while (!cont.empty());
    if (rv.empty()) throw Error(ErrorKind::Io, "listing CertificateSigningRequests: no metadata.resourceVersion");
    ++m_metrics.relists;
    m_metrics.healthy = true;
    return rv;
  }

  void on_event(const std::string& line, std::string& rv) {
    json ev;
    try {
      ev = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(ErrorKind::Io, std::string("a watch event that is not JSON: ") + e.what());
    }
    if (!ev.is_object() || !ev["type"].is_string() || !ev["object"].is_object())
      throw Error(ErrorKind::Io, "a watch event without type and object");
    const std::string type = ev["type"].get<std::string>();
    json& obj = ev["object"];
    if (type == "ERROR") {
      if (obj.value("code", 0) == 410) throw WatchExpired{};
      throw Error(ErrorKind::Io, "the watch ended with an error: " + obj.value("message", obj.dump()));
    }
    if (obj["metadata"].is_object()) {
      const std::string next = obj["metadata"].value("resourceVersion", "");
      if (!next.empty()) rv = next;
    }
    if (m_stop.load()) throw Error(ErrorKind::Io, "stopping");
    if (type == "ADDED" || type == "MODIFIED") m_signer.handle(std::move(obj));
  }

  void pause(std::chrono::milliseconds d) {
    std::unique_lock lock(m_mu);
    m_cv.wait_for(lock, d, [this] { return m_stop.load(); });
  }

  k8s::ApiClient& m_api;
  CsrSigner& m_signer;
  Metrics& m_metrics;
  int m_watch_timeout;
  std::atomic<bool> m_stop{false};
  std::mutex m_mu;
  std::condition_variable m_cv;
};

std::pair<std::string, unsigned short> parse_listen(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw Error(ErrorKind::Usage, "--listen " + text + ": expected ADDRESS:PORT (127.0.0.1:10271)");
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535)
    throw Error(ErrorKind::Usage, "--listen " + text + ": the port must be 0..65535");
  return {host, static_cast<unsigned short>(std::stoi(port))};
}

void run_signer(const Context& ctx, const SignerOptions& opts) {
  if (opts.kubeconfig.empty()) throw Error(ErrorKind::Usage, "k8s signer needs --kubeconfig FILE (its credentials for the API server)");
  if (opts.config.empty()) throw Error(ErrorKind::Usage, "k8s signer needs --config cluster.yaml (it names the kubernetes-ca key)");
  if (opts.watch_timeout < 1 || opts.watch_timeout > 3600)
    throw Error(ErrorKind::Usage, "--watch-timeout must be 1..3600 seconds");
  k8score::SignOptions sign;
  sign.signing_duration = core::parse_go_duration(opts.signing_duration);
  if (sign.signing_duration.count() <= 0)
    throw Error(ErrorKind::Usage, "--signing-duration must be positive (got " + opts.signing_duration + ")");
  sign.approve = opts.approve;
  std::set<std::string> served;
  const std::vector<std::string> names =
      opts.signer_names.empty()
          ? std::vector<std::string>{k8score::kKubeletClientSigner, k8score::kKubeletServingSigner, k8score::kKubeApiserverClientSigner}
          : opts.signer_names;
  for (const auto& n : names) {
    if (!k8score::builtin_signer(n))
      throw Error(ErrorKind::Usage, "--signer-names: \"" + n + "\" is not a signer hwca serves (it serves " +
                                        k8score::kKubeletClientSigner + ", " + k8score::kKubeletServingSigner + " and " +
                                        k8score::kKubeApiserverClientSigner + ")");
    served.insert(n);
  }
  const auto [listen_host, listen_port] = parse_listen(opts.listen);

  // Everything that can be checked is checked before the CA key is opened.
  // --pki defaults to the cluster file's installDir, where pki/ca.crt lives on a control-plane node.
  std::string dir = opts.pki;
  if (dir.empty()) dir = k8score::ClusterSpec::load(opts.config).install_dir;
  KubernetesCa ca = load_kubernetes_ca(opts.config, dir);
  sign.nodes = ca.cluster.all_nodes();
  const std::string& key_uri = ca.key_uri;
  X509_ptr& ca_cert = ca.cert;
  k8s::ApiClient api(k8score::ClientConfig::load(opts.kubeconfig, opts.context));

  // The CA key is opened once, here.
  auto key = ctx.open_ca_key(key_uri, opts.allow_file_ca_key);
  core::check_key_matches_cert(ca_cert.get(), key->public_key());
  auto ledger = ctx.open_ledger(LedgerUse::Server);
  core::Issuer issuer(ca_cert.get(), key->pkey(), *ledger);

  Metrics metrics;
  CsrSigner signer(api, *ledger, issuer, ca_cert.get(), sign, served, metrics);
  WatchLoop loop(api, signer, metrics, opts.watch_timeout);

  serve::HttpOptions http;
  http.address = listen_host;
  http.port = listen_port;
  http.workers = 1;
  serve::HttpHandlers handlers;
  handlers.on_io_thread = [&metrics](const serve::HttpRequest& r) -> std::optional<serve::HttpResponse> {
    serve::HttpResponse out;
    out.content_type = "text/plain; charset=utf-8";
    if (r.method != "GET") {
      out.status = 405;
      out.body = "GET only\n";
    } else if (r.target == "/healthz") {
      if (metrics.healthy.load()) {
        out.body = "ok\n";
      } else {
        std::lock_guard lock(metrics.mu);
        out.status = 503;
        out.body = "not watching: " + (metrics.last_error.empty() ? std::string("starting") : metrics.last_error) + "\n";
      }
    } else if (r.target == "/metrics") {
      out.content_type = "text/plain; version=0.0.4";
      out.body = metrics.text();
    } else {
      out.status = 404;
      out.body = "not found: /healthz and /metrics only\n";
    }
    return out;
  };
  handlers.on_worker = [](const serve::HttpRequest&) {
    serve::HttpResponse out;
    out.status = 404;
    return out;
  };
  handlers.log = log;
  serve::HttpServer server(http, handlers);

  const std::string served_list = [&] {
    std::string s;
    for (const auto& n : served) s += (s.empty() ? "" : ",") + n;
    return s;
  }();
  ledger->record_event("k8s-signer-started", "server=" + api.config().server + " signers=" + served_list +
                                                 (opts.approve ? " approve" : ""));
  log("watching CertificateSigningRequests on " + api.config().server + " for " + served_list +
      (opts.approve ? " (approving by policy)" : "") + "; health and metrics on http://" + listen_host + ":" +
      std::to_string(server.port()) + "; ledger " + ledger->path());

  std::exception_ptr loop_error;
  std::thread worker([&] {
    try {
      loop.run();
    } catch (...) {
      loop_error = std::current_exception();
      std::raise(SIGTERM);  // ends server.run()
    }
  });
  server.run();  // until SIGTERM or SIGINT
  loop.stop();
  worker.join();
  ledger->record_event("k8s-signer-stopped", "signed=" + std::to_string(metrics.signed_.load()) +
                                                 " refused=" + std::to_string(metrics.refused.load()) +
                                                 " approved=" + std::to_string(metrics.approved.load()));
  log("stopped: " + std::to_string(metrics.signed_.load()) + " signed, " + std::to_string(metrics.refused.load()) +
      " refused, " + std::to_string(metrics.approved.load()) + " approved");
  if (loop_error) std::rethrow_exception(loop_error);
}

}  // namespace

void add_k8s_signer_command(CLI::App& k8s, Context& ctx) {
  auto opts = std::make_shared<SignerOptions>();
  auto* cmd = k8s.add_subcommand(
      "signer",
      "run as the cluster's CSR signer: watch CertificateSigningRequests through the API server and sign approved "
      "ones with the kubernetes-ca key in hardware (kube-controller-manager runs with --controllers=*,-csrsigning)");
  cmd->add_option("--kubeconfig", opts->kubeconfig, "kubeconfig with the signer's credentials for the API server");
  cmd->add_option("--context", opts->context, "kubeconfig context (default: current-context)");
  cmd->add_option("--config", opts->config, "cluster.yaml (names the kubernetes-ca key URI and the nodes)");
  cmd->add_option("--pki", opts->pki, "folder holding pki/ca.crt (default: the cluster file's installDir)");
  cmd->add_option("--signer-names", opts->signer_names,
                  "signers to serve (default: kube-apiserver-client-kubelet, kubelet-serving, kube-apiserver-client)")
      ->delimiter(',');
  cmd->add_option("--signing-duration", opts->signing_duration,
                  "longest certificate lifetime, as kube-controller-manager's --cluster-signing-duration (default 8760h)");
  cmd->add_flag("--approve", opts->approve,
                "approve kubelet CSRs that the seed document's RBAC bindings would (new node and renewal client "
                "certificates, serving certificates for the node's own names and addresses); leave the rest to a human");
  cmd->add_option("--listen", opts->listen, "address:port for /healthz and /metrics (port 0: any free port, logged)")
      ->capture_default_str();
  cmd->add_option("--watch-timeout", opts->watch_timeout, "seconds each watch is asked to stay open (default 300)");
  cmd->add_flag("--allow-file-ca-key", opts->allow_file_ca_key, "accept a file: CA key (not for production)");
  cmd->callback([opts, &ctx] { ctx.action = [opts, &ctx] { run_signer(ctx, *opts); }; });
}

}  // namespace hwca::cli
