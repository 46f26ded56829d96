// cfssl's remote signing API (spec §5.4) over hwca's issuance engine: /api/v1/cfssl/{sign, authsign,
// info, newcert}, plus GET /healthz and GET /metrics (Prometheus text). Every certificate goes through
// core::Issuer (and so into the ledger before it is answered); every refusal is recorded as a ledger
// event. The HTTP transport is cli/serve_http.h.
#pragma once

#include "cli/serve_http.h"
#include "core/base/ossl.h"
#include "core/cfssl.h"
#include "core/ledger.h"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hwca::cli::serve {

// Counters and the signing latency histogram behind GET /metrics. Thread-safe.
class Metrics {
 public:
  static const std::vector<double>& latency_buckets();  // seconds
  void request(const std::string& endpoint, unsigned status);
  void refusal(const std::string& endpoint, const std::string& reason);
  void signing_latency(double seconds);
  void auth_token_error();
  void key_error();
  void reload(bool ok);
  std::string render(const ConnectionStats* connections) const;

 private:
  mutable std::mutex m_mutex;
  std::map<std::pair<std::string, unsigned>, long long> m_requests;
  std::map<std::pair<std::string, std::string>, long long> m_refusals;
  std::vector<long long> m_buckets = std::vector<long long>(latency_buckets().size(), 0);
  long long m_latency_count = 0;
  double m_latency_sum = 0;
  long long m_auth_token_errors = 0;
  long long m_key_errors = 0;
  long long m_reloads_ok = 0;
  long long m_reloads_failed = 0;
};

class CfsslService {
 public:
  // `ca_cert`/`ca_key`/`ledger` outlive the service. `config_path` empty: cfssl's built-in default
  // config, and SIGHUP has nothing to reload. `strict_profile`: a profile the config does not define
  // is refused (cfssl, and hwca by default, fall back to the default profile).
  CfsslService(const X509* ca_cert, EVP_PKEY* ca_key, core::Ledger& ledger, std::string config_path,
               bool strict_profile = false);

  // GET /healthz and GET /metrics (on the I/O thread); nullopt for everything else.
  std::optional<HttpResponse> handle_io(const HttpRequest& req);
  // Everything else, on a worker thread. Never throws.
  HttpResponse handle(const HttpRequest& req);
  // SIGHUP: re-reads the config; a broken file keeps the previous one and says why on stderr.
  void reload();
  void set_connection_stats(const ConnectionStats* stats) { m_connections = stats; }

  // Loads and checks a ca-config.json for serving: every profile must have usages and an expiry.
  static core::CfsslConfig load_config(const std::string& path);

 private:
  std::shared_ptr<const core::CfsslConfig> config() const;

  const X509* m_ca_cert;
  EVP_PKEY* m_ca_key;
  core::Ledger& m_ledger;
  std::string m_config_path;
  bool m_strict_profile = false;
  mutable std::mutex m_config_mutex;
  std::shared_ptr<const core::CfsslConfig> m_config;
  Metrics m_metrics;
  const ConnectionStats* m_connections = nullptr;
};

}  // namespace hwca::cli::serve
