// hwca serve: cfssl's remote signing API (`cfssl serve`) with the CA key in a token.
//   hwca serve -ca=ca.pem -ca-key='pkcs11:...?pin-source=file:...' -config=ca-config.json [-address=127.0.0.1]
//              [-port=8888] [-tls-cert=... -tls-key=... [-mutual-tls-ca=... [-mutual-tls-cn=REGEX]]] [--workers N]
// The CA key is opened once (its PIN read once, through pin-source); requests are served until
// SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads -config. See docs/serve.md.
#include "cli/issue.h"
#include "cli/serve_api.h"
#include "cli/serve_http.h"
#include "core/base/error.h"

#include <csignal>
#include <iostream>
#include <memory>
#include <mutex>
#include <sys/resource.h>
#include <thread>

namespace hwca::cli {

namespace {

struct ServeOptions {
  std::string ca, ca_key, config, address = "127.0.0.1", tls_cert, tls_key, mutual_tls_ca, mutual_tls_cn;
  int port = 8888;
  unsigned workers = 0;
  std::size_t max_connections = 4096;
  double header_timeout = 5;
  double body_timeout = 30;
  std::size_t body_limit = 1024 * 1024;
  bool allow_file_ca_key = false;
  bool strict_profile = false;
};

std::mutex g_log_mutex;
void log(const std::string& line) {
  std::lock_guard lock(g_log_mutex);
  std::cerr << "hwca: serve: " << line << std::endl;
}

// Every connection is a descriptor: lift the soft limit as far as the bound needs (and the hard limit
// allows), and lower the bound when it cannot be met.
std::size_t fit_descriptor_limit(std::size_t max_connections) {
  constexpr rlim_t kSpare = 256;  // ledger, token, log, listening socket, accept headroom
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return max_connections;
  rlim_t want = static_cast<rlim_t>(max_connections) + kSpare;
  if (lim.rlim_cur < want) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min(want, lim.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    std::size_t fit = lim.rlim_cur > kSpare * 2 ? static_cast<std::size_t>(lim.rlim_cur - kSpare) : static_cast<std::size_t>(lim.rlim_cur / 2);
    warn("the descriptor limit (" + std::to_string(lim.rlim_cur) + ") allows " + std::to_string(fit) +
         " connections, not --max-connections=" + std::to_string(max_connections));
    return fit;
  }
  return max_connections;
}

std::chrono::milliseconds to_ms(double seconds, const char* name) {
  if (!(seconds > 0) || seconds > 3600) throw Error(ErrorKind::Usage, std::string(name) + " must be between 0 and 3600 seconds");
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

void run_serve(const Context& ctx, const ServeOptions& opts) {
  if (opts.port < 0 || opts.port > 65535) throw Error(ErrorKind::Usage, "-port must be 0..65535");
  if (opts.body_limit < 1024) throw Error(ErrorKind::Usage, "--body-limit must be at least 1024 bytes");
  serve::HttpOptions http;
  http.address = opts.address;
  http.port = static_cast<unsigned short>(opts.port);
  http.tls_cert = opts.tls_cert;
  http.tls_key = opts.tls_key;
  http.mutual_tls_ca = opts.mutual_tls_ca;
  http.mutual_tls_cn = opts.mutual_tls_cn;
  http.header_timeout = to_ms(opts.header_timeout, "--header-timeout");
  http.body_timeout = to_ms(opts.body_timeout, "--body-timeout");
  http.body_limit = opts.body_limit;
  http.workers = opts.workers ? opts.workers : std::max(1u, std::thread::hardware_concurrency());
  if (http.workers > 256) throw Error(ErrorKind::Usage, "--workers must be 1..256");

  // The config first (a broken one fails before the token is touched), then the key: opened once,
  // its PIN read once.
  (void)serve::CfsslService::load_config(opts.config);
  LoadedCa ca = load_ca(ctx, opts.ca, opts.ca_key, opts.allow_file_ca_key);
  if (X509_check_ca(ca.cert.get()) == 0) throw Error(ErrorKind::Policy, opts.ca + " is not a CA certificate");
  auto ledger = ctx.open_ledger(LedgerUse::Server);  // automatic audit checkpoints: a background thread
  serve::CfsslService service(ca.cert.get(), ca.key->pkey(), *ledger, opts.config, opts.strict_profile);

  http.max_connections = fit_descriptor_limit(opts.max_connections);
  std::signal(SIGPIPE, SIG_IGN);
  serve::HttpHandlers handlers;
  handlers.on_io_thread = [&service](const serve::HttpRequest& r) { return service.handle_io(r); };
  handlers.on_worker = [&service](const serve::HttpRequest& r) { return service.handle(r); };
  handlers.on_reload = [&service] { service.reload(); };
  handlers.log = log;
  serve::HttpServer server(http, handlers);
  service.set_connection_stats(&server.stats());

  const std::string scheme = opts.tls_cert.empty() ? "http" : "https";
  const std::string where = scheme + "://" + (opts.address.find(':') != std::string::npos ? "[" + opts.address + "]" : opts.address) +
                            ":" + std::to_string(server.port());
  ledger->record_event("serve-started", where + " ca=" + core::name_to_string(X509_get_subject_name(ca.cert.get())) +
                                            " key=" + ca.key->uri().substr(0, ca.key->uri().find('?')) +
                                            " config=" + (opts.config.empty() ? "(built-in)" : opts.config));
  log("listening on " + where + " (" + std::to_string(http.workers) + " workers, at most " +
      std::to_string(http.max_connections) + " connections, ledger " + ledger->path() + ")");
  server.run();
  ledger->record_event("serve-stopped", where);
}

}  // namespace

void add_serve_command(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "serve cfssl's remote signing API (cfssl serve) with the CA key in a token");
  cmd->add_option("--ca", opts->ca, "CA certificate (PEM)");
  cmd->add_option("--ca-key", opts->ca_key, "CA key URI (pkcs11:..., tpm2:...); opened once at start");
  cmd->add_option("--config", opts->config, "cfssl ca-config.json (profiles, auth_keys); SIGHUP reloads it");
  cmd->add_option("--address", opts->address, "address to listen on")->capture_default_str();
  cmd->add_option("--port", opts->port, "port to listen on (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("--tls-cert", opts->tls_cert, "serve HTTPS with this certificate (PEM, chain allowed)");
  cmd->add_option("--tls-key", opts->tls_key, "the TLS certificate's key (PEM file)");
  cmd->add_option("--mutual-tls-ca", opts->mutual_tls_ca, "require client certificates issued by this CA (PEM)");
  cmd->add_option("--mutual-tls-cn", opts->mutual_tls_cn, "regex the client certificate's CN must match");
  cmd->add_option("--workers", opts->workers, "signing threads (default: the number of cores)");
  cmd->add_option("--max-connections", opts->max_connections, "connections open at once; more are closed at once")
      ->capture_default_str();
  cmd->add_option("--header-timeout", opts->header_timeout, "seconds a client has to send its request headers")
      ->capture_default_str();
  cmd->add_option("--body-timeout", opts->body_timeout, "seconds a client has to send its request body")->capture_default_str();
  cmd->add_option("--body-limit", opts->body_limit, "largest request body in bytes")->capture_default_str();
  cmd->add_flag("--strict-profile", opts->strict_profile,
                "refuse a profile the config does not define (cfssl falls back to the default profile)");
  cmd->add_flag("--allow-file-ca-key", opts->allow_file_ca_key, "accept a file: CA key (not for production)");
  cmd->callback([opts, &ctx] { ctx.action = [opts, &ctx] { run_serve(ctx, *opts); }; });
}

}  // namespace hwca::cli
