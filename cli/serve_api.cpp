#include "cli/serve_api.h"

#include "cli/issue.h"
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/engine.h"
#include "core/profile.h"
#include "core/x509.h"

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

namespace hwca::cli::serve {

namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

// cfssl's error codes (errors/error.go): category * 1000 + reason.
constexpr int kCsrDecodeFailed = 9002;    // CSRError + DecodeFailed
constexpr int kCsrBadRequest = 9300;      // CSRError + BadRequest (cfssl: the CSR's signature)
constexpr int kPolicyInvalid = 5200;      // PolicyError + InvalidPolicy
constexpr int kPolicyInvalidRequest = 5300;
constexpr int kPolicyUnknownProfile = 5400;
constexpr int kPolicyWhitelist = 5500;    // PolicyError + UnmatchedWhitelist

// A refusal or failure, answered with cfssl's envelope. `reason` labels it in /metrics.
struct ApiError {
  unsigned status;
  int code;
  std::string message;
  std::string reason;
};

[[noreturn]] void bad_request(const std::string& message, const std::string& reason = "bad_request") {
  throw ApiError{400, 400, message, reason};
}

std::mutex g_log_mutex;
void log_line(const std::string& line) {
  std::lock_guard lock(g_log_mutex);
  std::cerr << "hwca: serve: " << line << std::endl;
}

std::string one_line(std::string s) {
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return s;
}

std::string envelope(bool success, const ojson& result, const ojson& errors, const ojson& messages) {
  ojson e;
  e["success"] = success;
  e["result"] = result;
  e["errors"] = errors;
  e["messages"] = messages;
  return e.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string error_body(int code, const std::string& message) {
  ojson err;
  err["code"] = code;
  err["message"] = message;
  return envelope(false, nullptr, ojson::array({err}), ojson::array());
}

std::string endpoint_of(const std::string& target) {
  static const std::string prefix = "/api/v1/cfssl/";
  if (target == "/healthz") return "healthz";
  if (target == "/metrics") return "metrics";
  if (target.rfind(prefix, 0) == 0) {
    std::string rest = target.substr(prefix.size());
    if (rest == "sign" || rest == "authsign" || rest == "info" || rest == "newcert") return rest;
  }
  return "other";
}

// Go's encoding/json: the exact key, else one that matches case-insensitively; null is absent.
const json* field(const json& obj, const std::string& key) {
  auto it = obj.find(key);
  if (it != obj.end()) return it->is_null() ? nullptr : &*it;
  for (auto i = obj.begin(); i != obj.end(); ++i) {
    const std::string& k = i.key();
    if (k.size() == key.size() && std::equal(k.begin(), k.end(), key.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        }))
      return i->is_null() ? nullptr : &*i;
  }
  return nullptr;
}

std::optional<std::string> string_field(const json& obj, const std::string& key, const std::string& unable) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad_request(unable);
  return v->get<std::string>();
}

// Standard base64 with padding (Go's encoding of []byte in JSON).
std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  for (char c : text)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) return std::nullopt;
  if (text.empty()) return std::string();
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) {
    drain_openssl_errors();
    return std::nullopt;
  }
  size_t len = static_cast<size_t>(n);
  // EVP_DecodeBlock counts the padding as zero bytes.
  if (text.size() >= 1 && text[text.size() - 1] == '=') --len;
  if (text.size() >= 2 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

std::string hex_decode(const std::string& hex) {
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string hmac_sha256(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t len = 0;
  if (!EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                 reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, sizeof out, &len))
    throw_openssl(ErrorKind::Internal, "HMAC-SHA256");
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string upper_hex_digest(const char* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data.data(), data.size(), out, &len, EVP_get_digestbyname(md), nullptr))
    throw_openssl(ErrorKind::Internal, std::string("digest ") + md);
  std::string hex = to_hex(out, len);
  for (auto& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return hex;
}

// cfssl's sums: MD5 and SHA-1 of the DER inside a PEM, upper-case hex.
ojson sums_of(const std::string& der) {
  ojson s;
  s["md5"] = upper_hex_digest("MD5", der);
  s["sha-1"] = upper_hex_digest("SHA1", der);
  return s;
}

std::string csr_der(const X509_REQ* csr) {
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(csr, &der);
  if (len <= 0) throw_openssl(ErrorKind::Internal, "encoding the CSR");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// A go-style duration the way cfssl's configs write them: "8760h" rather than "8760h0m0s".
std::string expiry_string(const core::Profile& p) {
  long long s = p.expiry.count();
  if (s > 0 && s % 3600 == 0) return std::to_string(s / 3600) + "h";
  return core::format_go_duration(p.expiry);
}

// The fields of cfssl's jsonSignRequest that hwca uses or refuses.
struct SignRequest {
  std::string csr;
  std::optional<std::vector<std::string>> hosts;  // present (even empty) replaces the CSR's SANs
  std::optional<json> subject;
  std::string profile;
  std::string label;
  bool bundle = false;
  bool has_serial = false;
  bool has_extensions = false;
};

SignRequest parse_sign_request(const std::string& bytes, const std::string& unable) {
  json j = json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object()) bad_request(unable);
  SignRequest r;
  r.csr = string_field(j, "certificate_request", unable).value_or("");
  if (const json* h = field(j, "hosts")) {
    if (!h->is_array()) bad_request(unable);
    std::vector<std::string> hosts;
    for (const auto& v : *h) {
      if (!v.is_string()) bad_request(unable);
      hosts.push_back(v.get<std::string>());
    }
    r.hosts = std::move(hosts);
  }
  // cfssl's "hostname" (comma-separated) wins over "hosts".
  std::string hostname = string_field(j, "hostname", unable).value_or("");
  if (!hostname.empty()) r.hosts = split_hosts(hostname);
  if (const json* s = field(j, "subject")) {
    if (!s->is_object()) bad_request(unable);
    r.subject = *s;
  }
  r.profile = string_field(j, "profile", unable).value_or("");
  r.label = string_field(j, "label", unable).value_or("");
  if (const json* b = field(j, "bundle")) {
    if (!b->is_boolean()) bad_request(unable);
    r.bundle = b->get<bool>();
  }
  r.has_serial = field(j, "serial") != nullptr;
  if (const json* e = field(j, "extensions")) r.has_extensions = !(e->is_array() && e->empty());
  return r;
}

std::vector<std::string> name_values(const X509_NAME* name, int nid) {
  std::vector<std::string> out;
  for (int i = -1; (i = X509_NAME_get_index_by_NID(name, nid, i)) >= 0;) {
    const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    if (len < 0) continue;
    out.emplace_back(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
    OPENSSL_free(utf8);
  }
  return out;
}

// cfssl's PopulateSubjectFromCSR: the request's subject, with every attribute it leaves empty taken
// from the CSR.
X509_NAME_ptr override_subject(const json& subject, const X509_NAME* csr_name) {
  core::CfsslCsr s;
  try {
    s = core::CfsslCsr::parse(subject.dump(), "the sign request's subject");
  } catch (const Error& e) {
    bad_request(e.what());
  }
  auto fill = [&](int nid, std::string core::CfsslName::*f) {
    for (const auto& n : s.names)
      if (!(n.*f).empty()) return;
    for (const auto& v : name_values(csr_name, nid)) {
      core::CfsslName n;
      n.*f = v;
      s.names.push_back(n);
    }
  };
  fill(NID_countryName, &core::CfsslName::C);
  fill(NID_stateOrProvinceName, &core::CfsslName::ST);
  fill(NID_localityName, &core::CfsslName::L);
  fill(NID_organizationName, &core::CfsslName::O);
  fill(NID_organizationalUnitName, &core::CfsslName::OU);
  if (s.cn.empty()) {
    auto cn = name_values(csr_name, NID_commonName);
    if (!cn.empty()) s.cn = cn.front();
  }
  if (s.serialnumber.empty()) {
    auto sn = name_values(csr_name, NID_serialNumber);
    if (!sn.empty()) s.serialnumber = sn.front();
  }
  try {
    return s.subject();
  } catch (const Error& e) {
    bad_request(e.what());
  }
}

// Who asked, for the ledger and the log.
struct Caller {
  std::string endpoint, remote, client_cn, auth_key, profile;

  std::string requester() const {
    std::string r = "serve:" + endpoint;
    if (!auth_key.empty()) r += " auth_key=" + auth_key;
    if (!client_cn.empty()) r += " client_cn=" + client_cn;
    r += " remote=" + remote;
    return r;
  }
  ojson detail() const {
    ojson d;
    d["endpoint"] = endpoint;
    d["remote"] = remote;
    if (!client_cn.empty()) d["client_cn"] = client_cn;
    if (!auth_key.empty()) d["auth_key"] = auth_key;
    if (!profile.empty()) d["profile"] = profile;
    return d;
  }
};

const core::Profile& select_profile(const core::CfsslConfig& config, const std::string& name, bool strict,
                                   ojson& messages) {
  std::string warning;
  try {
    const core::Profile& p = config.select(name, strict, &warning);
    if (!warning.empty()) {
      ojson m;
      m["code"] = kPolicyUnknownProfile;
      m["message"] = warning;
      messages.push_back(m);
    }
    return p;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::BadInput) throw ApiError{400, kPolicyUnknownProfile, e.what(), "unknown_profile"};
    throw ApiError{400, kPolicyInvalid, e.what(), "policy"};
  }
}

std::string auth_key_name(const core::Profile& p) {
  if (!p.auth_key.empty()) return p.auth_key;
  if (p.auth_remote) return p.auth_remote->auth_key;
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Metrics

const std::vector<double>& Metrics::latency_buckets() {
  static const std::vector<double> b{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return b;
}

void Metrics::request(const std::string& endpoint, unsigned status) {
  std::lock_guard lock(m_mutex);
  ++m_requests[{endpoint, status}];
}

void Metrics::refusal(const std::string& endpoint, const std::string& reason) {
  std::lock_guard lock(m_mutex);
  ++m_refusals[{endpoint, reason}];
}

void Metrics::signing_latency(double seconds) {
  std::lock_guard lock(m_mutex);
  const auto& b = latency_buckets();
  for (size_t i = 0; i < b.size(); ++i)
    if (seconds <= b[i]) ++m_buckets[i];
  ++m_latency_count;
  m_latency_sum += seconds;
}

void Metrics::auth_token_error() {
  std::lock_guard lock(m_mutex);
  ++m_auth_token_errors;
}

void Metrics::key_error() {
  std::lock_guard lock(m_mutex);
  ++m_key_errors;
}

void Metrics::reload(bool ok) {
  std::lock_guard lock(m_mutex);
  ++(ok ? m_reloads_ok : m_reloads_failed);
}

std::string Metrics::render(const ConnectionStats* c) const {
  std::ostringstream o;
  std::lock_guard lock(m_mutex);
  o << "# HELP hwca_serve_requests_total Requests answered, by endpoint and HTTP status.\n"
       "# TYPE hwca_serve_requests_total counter\n";
  for (const auto& [k, v] : m_requests)
    o << "hwca_serve_requests_total{endpoint=\"" << k.first << "\",status=\"" << k.second << "\"} " << v << "\n";
  o << "# HELP hwca_serve_refusals_total Requests refused or failed, by endpoint and reason.\n"
       "# TYPE hwca_serve_refusals_total counter\n";
  for (const auto& [k, v] : m_refusals)
    o << "hwca_serve_refusals_total{endpoint=\"" << k.first << "\",reason=\"" << k.second << "\"} " << v << "\n";
  o << "# HELP hwca_serve_signing_seconds Time to issue one certificate (engine, token signature, ledger record).\n"
       "# TYPE hwca_serve_signing_seconds histogram\n";
  const auto& b = latency_buckets();
  for (size_t i = 0; i < b.size(); ++i) {
    char le[32];
    std::snprintf(le, sizeof le, "%g", b[i]);
    o << "hwca_serve_signing_seconds_bucket{le=\"" << le << "\"} " << m_buckets[i] << "\n";
  }
  o << "hwca_serve_signing_seconds_bucket{le=\"+Inf\"} " << m_latency_count << "\n";
  o << "hwca_serve_signing_seconds_sum " << m_latency_sum << "\n";
  o << "hwca_serve_signing_seconds_count " << m_latency_count << "\n";
  o << "# HELP hwca_serve_auth_token_errors_total authsign requests whose HMAC token did not verify.\n"
       "# TYPE hwca_serve_auth_token_errors_total counter\n"
       "hwca_serve_auth_token_errors_total " << m_auth_token_errors << "\n";
  o << "# HELP hwca_serve_key_errors_total Signing failures of the CA key's backend (PKCS#11 token, TPM).\n"
       "# TYPE hwca_serve_key_errors_total counter\n"
       "hwca_serve_key_errors_total " << m_key_errors << "\n";
  o << "# HELP hwca_serve_config_reloads_total SIGHUP reloads of ca-config.json, by result.\n"
       "# TYPE hwca_serve_config_reloads_total counter\n"
       "hwca_serve_config_reloads_total{result=\"ok\"} " << m_reloads_ok << "\n"
       "hwca_serve_config_reloads_total{result=\"failed\"} " << m_reloads_failed << "\n";
  if (c) {
    o << "# HELP hwca_serve_connections_open Connections open now.\n"
         "# TYPE hwca_serve_connections_open gauge\n"
         "hwca_serve_connections_open " << c->open.load() << "\n"
         "# HELP hwca_serve_connections_accepted_total Connections accepted.\n"
         "# TYPE hwca_serve_connections_accepted_total counter\n"
         "hwca_serve_connections_accepted_total " << c->accepted.load() << "\n"
         "# HELP hwca_serve_connections_refused_total Connections closed at once because the bound was reached.\n"
         "# TYPE hwca_serve_connections_refused_total counter\n"
         "hwca_serve_connections_refused_total " << c->refused_over_bound.load() << "\n"
         "# HELP hwca_serve_connections_timed_out_total Connections closed for being too slow (headers, body, TLS handshake).\n"
         "# TYPE hwca_serve_connections_timed_out_total counter\n"
         "hwca_serve_connections_timed_out_total " << c->timed_out.load() << "\n"
         "# HELP hwca_serve_tls_handshake_failures_total TLS handshakes that failed.\n"
         "# TYPE hwca_serve_tls_handshake_failures_total counter\n"
         "hwca_serve_tls_handshake_failures_total " << c->tls_handshake_failures.load() << "\n";
  }
  return o.str();
}

// ---------------------------------------------------------------------------------------------
// The service

core::CfsslConfig CfsslService::load_config(const std::string& path) {
  core::CfsslConfig cfg = path.empty() ? core::CfsslConfig::builtin() : core::CfsslConfig::parse(read_file(path), path);
  auto check = [&](const core::Profile& p) {
    try {
      if (!p.not_after) p.check_expiry();
      (void)p.resolve_usages();
    } catch (const Error& e) {
      throw Error(e.kind(), path + ": " + e.what());
    }
  };
  if (cfg.has_default) check(cfg.default_profile);
  for (const auto& [name, p] : cfg.profiles) check(p);
  return cfg;
}

CfsslService::CfsslService(const X509* ca_cert, EVP_PKEY* ca_key, core::Ledger& ledger, std::string config_path,
                           bool strict_profile)
    : m_ca_cert(ca_cert), m_ca_key(ca_key), m_ledger(ledger), m_config_path(std::move(config_path)),
      m_strict_profile(strict_profile) {
  m_config = std::make_shared<const core::CfsslConfig>(load_config(m_config_path));
}

std::shared_ptr<const core::CfsslConfig> CfsslService::config() const {
  std::lock_guard lock(m_config_mutex);
  return m_config;
}

void CfsslService::reload() {
  if (m_config_path.empty()) {
    log_line("SIGHUP: no -config was given; nothing to reload");
    return;
  }
  try {
    auto cfg = std::make_shared<const core::CfsslConfig>(load_config(m_config_path));
    {
      std::lock_guard lock(m_config_mutex);
      m_config = cfg;
    }
    m_metrics.reload(true);
    log_line("SIGHUP: reloaded " + m_config_path);
    try {
      m_ledger.record_event("serve-config-reloaded", m_config_path);
    } catch (const std::exception& e) {
      log_line(std::string("could not record the reload in the ledger: ") + e.what());
    }
  } catch (const std::exception& e) {
    m_metrics.reload(false);
    log_line("SIGHUP: keeping the previous configuration: " + one_line(e.what()));
    try {
      m_ledger.record_event("serve-config-reload-failed", m_config_path + ": " + one_line(e.what()));
    } catch (const std::exception& e2) {
      log_line(std::string("could not record the failed reload in the ledger: ") + e2.what());
    }
  }
}

std::optional<HttpResponse> CfsslService::handle_io(const HttpRequest& req) {
  if (req.method != "GET") return std::nullopt;
  if (req.target == "/healthz") {
    m_metrics.request("healthz", 200);
    return HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
  }
  if (req.target == "/metrics") {
    m_metrics.request("metrics", 200);
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", m_metrics.render(m_connections)};
  }
  return std::nullopt;
}

namespace {

// One request's work, with what the ledger and the metrics need.
class Call {
 public:
  Call(const X509* ca_cert, EVP_PKEY* ca_key, core::Ledger& ledger, Metrics& metrics,
       std::shared_ptr<const core::CfsslConfig> config, bool strict, const HttpRequest& req)
      : m_ca_cert(ca_cert), m_ca_key(ca_key), m_ledger(ledger), m_metrics(metrics), m_config(std::move(config)),
        m_strict(strict), m_req(req) {
    m_who.endpoint = endpoint_of(req.target);
    m_who.remote = req.remote;
    m_who.client_cn = req.client_cn;
  }

  Caller& who() { return m_who; }

  ojson run(ojson& messages) {
    if (m_req.refused_status != 0) {
      std::string reason = m_req.refused_status == 413 ? "body_too_large"
                           : m_req.refused_status == 403 ? "client_cn"
                           : m_req.refused_status == 431 ? "headers_too_large"
                                                         : "bad_http";
      throw ApiError{m_req.refused_status, static_cast<int>(m_req.refused_status), m_req.refused_message, reason};
    }
    if (m_who.endpoint == "other") throw ApiError{404, 404, "no such endpoint: " + one_line(m_req.target), "not_found"};
    if (m_req.method != "POST" || m_who.endpoint == "healthz" || m_who.endpoint == "metrics") {
      std::string allowed = (m_who.endpoint == "healthz" || m_who.endpoint == "metrics") ? "GET" : "POST";
      if (m_req.method != allowed)
        throw ApiError{405, 405, "Method is not allowed:\"" + one_line(m_req.method) + "\"", "method"};
    }
    if (m_who.endpoint == "sign") return sign(m_req.body, false, messages);
    if (m_who.endpoint == "authsign") return authsign(messages);
    if (m_who.endpoint == "info") return info(messages);
    return newcert(messages);
  }

 private:
  ojson authsign(ojson& messages) {
    json outer = json::parse(m_req.body, nullptr, false);
    if (outer.is_discarded() || !outer.is_object()) bad_request("Unable to parse authenticated request");
    auto token_b64 = string_field(outer, "token", "Unable to parse authenticated request");
    auto request_b64 = string_field(outer, "request", "Unable to parse authenticated request");
    std::optional<std::string> token = token_b64 ? base64_decode(*token_b64) : std::string();
    std::optional<std::string> request = request_b64 ? base64_decode(*request_b64) : std::string();
    if (!token || !request) bad_request("Unable to parse authenticated request: token and request must be base64");
    return sign(*request, true, messages, &*token);
  }

  ojson sign(const std::string& bytes, bool authenticated, ojson& messages, const std::string* token = nullptr) {
    SignRequest sr = parse_sign_request(bytes, authenticated ? "Unable to parse authenticated sign request"
                                                             : "Unable to parse sign request");
    const core::Profile& profile = select_profile(*m_config, sr.profile, m_strict, messages);
    m_who.profile = profile.name.empty() ? sr.profile : profile.name;
    // cfssl's rules (api/signhandler): sign refuses a profile with an auth provider, authsign one without.
    if (!authenticated && profile.requires_auth()) bad_request("authentication required", "auth_required");
    if (authenticated) {
      if (!profile.requires_auth()) bad_request("no authentication provider", "no_auth_provider");
      std::string key_name = auth_key_name(profile);
      auto key = m_config->auth_keys.find(key_name);
      if (key == m_config->auth_keys.end()) throw ApiError{500, 500, "auth key '" + key_name + "' is not defined", "internal"};
      std::string want = hmac_sha256(hex_decode(key->second.key), bytes);
      if (token->size() != want.size() || CRYPTO_memcmp(token->data(), want.data(), want.size()) != 0) {
        m_metrics.auth_token_error();
        m_who.auth_key = key_name + " (invalid token)";
        bad_request("invalid token", "invalid_token");
      }
      m_who.auth_key = key_name;
    }
    if (sr.csr.empty()) bad_request("missing parameter 'certificate_request'");
    if (sr.has_serial)
      throw ApiError{400, kPolicyInvalidRequest, "hwca draws every serial number itself; a requested serial is refused", "policy"};
    if (sr.has_extensions)
      throw ApiError{400, kPolicyInvalidRequest, "requested extensions are not supported by hwca serve", "policy"};

    X509_REQ_ptr csr;
    try {
      csr = csr_from_pem_or_der(sr.csr, "certificate_request");
    } catch (const Error& e) {
      throw ApiError{400, kCsrDecodeFailed, std::string("CSR Decode failed: ") + e.what(), "bad_csr"};
    }
    try {
      core::verify_csr_signature(csr.get());
    } catch (const Error& e) {
      throw ApiError{400, kCsrBadRequest, e.what(), "bad_csr"};
    }
    EVP_PKEY* pub = X509_REQ_get0_pubkey(csr.get());
    if (!pub) throw ApiError{400, kCsrBadRequest, "the CSR has no usable public key", "bad_csr"};

    core::IssueRequest req;
    if (sr.subject) {
      req.subject = override_subject(*sr.subject, X509_REQ_get_subject_name(csr.get()));
    } else {
      req.subject.reset(X509_NAME_dup(X509_REQ_get_subject_name(csr.get())));
    }
    try {
      req.sans = sr.hosts ? core::SubjectAltNames::classify(*sr.hosts) : core::SubjectAltNames::of_csr(csr.get());
    } catch (const Error& e) {
      bad_request(e.what());
    }
    req.public_key = pub;
    req.profile = &profile;
    req.requested_ca = core::csr_requests_ca(csr.get());
    X509_ptr cert = issue(req);

    ojson result;
    result["certificate"] = x509_to_pem(cert.get());
    if (sr.bundle) {
      ojson m;
      m["code"] = kPolicyInvalidRequest;
      m["message"] = "This request requires a bundler, but one is not initialized for the API server.";
      messages.push_back(m);
    }
    return result;
  }

  ojson newcert(ojson& messages) {
    json j = json::parse(m_req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) bad_request("Unable to parse newcert request");
    const json* request = field(j, "request");
    if (!request || !request->is_object()) bad_request("missing parameter 'request'");
    std::string profile_name = string_field(j, "profile", "Unable to parse newcert request").value_or("");
    core::CfsslCsr csr_json;
    try {
      csr_json = core::CfsslCsr::parse(request->dump(), "the newcert request");
    } catch (const Error& e) {
      bad_request(e.what());
    }
    if (csr_json.ca) bad_request("ca section only permitted in initca");
    const core::Profile& profile = select_profile(*m_config, profile_name, m_strict, messages);
    m_who.profile = profile.name.empty() ? profile_name : profile.name;
    // cfssl 1.2.0 signs newcert requests on authenticated profiles without a token; hwca does not.
    if (profile.requires_auth()) bad_request("authentication required", "auth_required");

    core::IssueRequest req;
    try {
      req.subject = csr_json.subject();
      req.sans = core::SubjectAltNames::classify(csr_json.hosts);
    } catch (const Error& e) {
      bad_request(e.what());
    }
    EVP_PKEY_ptr key = generate_software_key(csr_json.key);
    X509_REQ_ptr csr = core::make_csr(req.subject.get(), req.sans, key.get());
    req.public_key = key.get();
    req.profile = &profile;
    X509_ptr cert = issue(req);

    ojson result;
    result["private_key"] = private_key_to_traditional_pem(key.get());
    result["certificate_request"] = csr_to_pem(csr.get());
    result["certificate"] = x509_to_pem(cert.get());
    ojson sums;
    sums["certificate_request"] = sums_of(csr_der(csr.get()));
    sums["certificate"] = sums_of(x509_to_der(cert.get()));
    result["sums"] = sums;
    return result;
  }

  ojson info(ojson& messages) {
    std::string profile_name;
    if (!m_req.body.empty()) {
      json j = json::parse(m_req.body, nullptr, false);
      if (j.is_discarded() || !j.is_object()) bad_request("Unable to parse info request");
      profile_name = string_field(j, "profile", "Unable to parse info request").value_or("");
    }
    const core::Profile& profile = select_profile(*m_config, profile_name, m_strict, messages);
    m_who.profile = profile.name.empty() ? profile_name : profile.name;
    ojson result;
    result["certificate"] = x509_to_pem(m_ca_cert);
    result["usages"] = profile.usages;
    result["expiry"] = expiry_string(profile);
    return result;
  }

  // The profile's name_whitelist as cfssl words its refusal (the engine checks it again).
  void check_whitelist(const core::IssueRequest& req) {
    const core::Profile& p = *req.profile;
    if (!p.name_whitelist) return;
    std::regex re = core::compile_name_whitelist(*p.name_whitelist);
    auto check = [&](const std::string& n) {
      if (!std::regex_search(n, re))
        throw ApiError{400, kPolicyWhitelist, "Request does not match policy whitelist: '" + one_line(n) + "'", "whitelist"};
    };
    std::string cn = core::common_name(req.subject.get());
    if (!cn.empty()) check(cn);
    for (const auto& d : req.sans.dns) check(d);
  }

  X509_ptr issue(core::IssueRequest& req) {
    check_whitelist(req);
    req.requester = m_who.requester();
    core::Issuer issuer(m_ca_cert, m_ca_key, m_ledger);
    auto t0 = std::chrono::steady_clock::now();
    X509_ptr cert = issuer.issue(req);
    m_metrics.signing_latency(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return cert;
  }

  const X509* m_ca_cert;
  EVP_PKEY* m_ca_key;
  core::Ledger& m_ledger;
  Metrics& m_metrics;
  std::shared_ptr<const core::CfsslConfig> m_config;
  bool m_strict;
  const HttpRequest& m_req;
  Caller m_who;
};

}  // namespace

HttpResponse CfsslService::handle(const HttpRequest& req) {
  Call call(m_ca_cert, m_ca_key, m_ledger, m_metrics, config(), m_strict_profile, req);
  ojson messages = ojson::array();
  std::optional<ApiError> err;
  HttpResponse res;
  try {
    ojson result = call.run(messages);
    res.body = envelope(true, result, ojson::array(), messages);
  } catch (const ApiError& e) {
    err = e;
  } catch (const Error& e) {
    switch (e.kind()) {
      case ErrorKind::BadInput: err = ApiError{400, 400, e.what(), "bad_request"}; break;
      case ErrorKind::Policy: err = ApiError{400, kPolicyInvalid, e.what(), "policy"}; break;
      case ErrorKind::Token:
        m_metrics.key_error();
        err = ApiError{500, 500, std::string("the CA key failed to sign: ") + e.what(), "key_error"};
        break;
      default: err = ApiError{500, 500, e.what(), "internal"}; break;
    }
  } catch (const std::exception& e) {
    err = ApiError{500, 500, std::string("internal error: ") + e.what(), "internal"};
  }
  const std::string& endpoint = call.who().endpoint;
  if (err) {
    res.status = err->status;
    res.body = error_body(err->code, one_line(err->message));
    m_metrics.refusal(endpoint, err->reason);
    ojson d = call.who().detail();
    d["method"] = one_line(req.method);
    if (endpoint == "other") d["target"] = one_line(req.target.substr(0, 200));
    d["status"] = err->status;
    d["code"] = err->code;
    d["message"] = one_line(err->message);
    const char* kind = err->status >= 500 ? "serve-failed" : "serve-refused";
    if (err->status >= 500) log_line(call.who().requester() + ": " + one_line(err->message));
    try {
      m_ledger.record_event(kind, d.dump(-1, ' ', false, json::error_handler_t::replace));
    } catch (const std::exception& e) {
      log_line(std::string("could not record a refusal in the ledger: ") + e.what());
    }
  } else if (endpoint == "info") {
    try {
      m_ledger.record_event("serve-info", call.who().detail().dump(-1, ' ', false, json::error_handler_t::replace));
    } catch (const std::exception& e) {
      log_line(std::string("could not record an info request in the ledger: ") + e.what());
    }
  }
  m_metrics.request(endpoint, res.status);
  return res;
}

}  // namespace hwca::cli::serve
