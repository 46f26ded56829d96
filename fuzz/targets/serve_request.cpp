// Request bodies of `hwca serve` (cli/serve_api.h): CfsslService::handle() with a software-key CA, a
// ca-config.json with an authenticated profile, and a ledger on tmpfs (renewed every few thousand
// runs so that it stays small). The first input byte picks the request:
//   0 POST /api/v1/cfssl/sign      body = the rest
//   1 POST /api/v1/cfssl/authsign  body = the rest (the outer {"token","request"} envelope)
//   2 POST /api/v1/cfssl/authsign  the rest is the inner sign request; the harness wraps it with a valid
//                                  token for auth key "fuzz-key" (so the fuzzer gets past the HMAC)
//   3 POST /api/v1/cfssl/info      body = the rest
//   4 POST /api/v1/cfssl/newcert   body = the rest
// Every answer must be a JSON envelope; a certificate is issued only through core::Issuer (so into the
// ledger), as in the server.
#include "fuzz.h"

#include "cli/serve_api.h"
#include "core/base/algorithm.h"
#include "core/files.h"
#include "core/ledger.h"
#include "core/x509.h"

#include <nlohmann/json.hpp>
#include <openssl/hmac.h>
#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

using namespace hwca;
using namespace hwca::cli::serve;

namespace {

constexpr const char* kAuthKeyHex = "00112233445566778899aabbccddeeff";

const char* kConfig = R"({
  "signing": {
    "default": {"usages": ["signing", "key encipherment", "server auth", "client auth"], "expiry": "8760h"},
    "profiles": {
      "server": {"usages": ["signing", "key encipherment", "server auth"], "expiry": "720h",
                 "name_whitelist": "^[a-z0-9.-]+$"},
      "intermediate": {"usages": ["cert sign", "crl sign"], "expiry": "43800h",
                       "ca_constraint": {"is_ca": true, "max_path_len": 0, "max_path_len_zero": true}},
      "authed": {"usages": ["signing", "client auth"], "expiry": "24h", "auth_key": "fuzz-key"}
    }
  },
  "auth_keys": {"fuzz-key": {"type": "standard", "key": "00112233445566778899aabbccddeeff"}}
})";

struct World {
  std::string dir;
  EVP_PKEY_ptr ca_key = generate_software_key(KeySpec::parse("ecdsa-p256"));
  X509_ptr ca_cert;
  std::unique_ptr<core::Ledger> ledger;
  std::unique_ptr<CfsslService> service;
  unsigned runs = 0;

  World() {
    // SQLite's page cache grows page by page as the ledger does: a run that adds a page looks to libFuzzer
    // like a leak candidate, and each candidate costs a re-run and a full LeakSanitizer scan (4x slower
    // overall). Pages come from this fixed buffer instead (SQLite falls back to malloc when it is full).
    static std::vector<std::uint64_t> pages;
    int header = 0;
    if (sqlite3_config(SQLITE_CONFIG_PCACHE_HDRSZ, &header) == SQLITE_OK) {
      const int slot = 4096 + header;
      constexpr int kSlots = 4096;
      pages.resize(static_cast<std::size_t>(slot) * kSlots / sizeof(std::uint64_t) + 1);
      (void)sqlite3_config(SQLITE_CONFIG_PAGECACHE, pages.data(), slot, kSlots);
    }
    std::string tmpl = (std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp") + std::string("/hwca-fuzz-serve.XXXXXX");
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    HWCA_FUZZ_CHECK(::mkdtemp(buf.data()) != nullptr);
    dir = buf.data();
    core::CertTemplate t;
    t.subject = core::make_name({{NID_commonName, "fuzz root", false}});
    t.key_usage = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN;
    t.is_ca = true;
    t.not_before = core::now() - 86400;
    t.not_after = core::now() + 10LL * 365 * 86400;
    ca_cert = core::build_certificate(t, core::random_serial().get(), ca_key.get(), nullptr, ca_key.get());
    core::write_file_atomic(dir + "/ca-config.json", kConfig, 0644);
    renew();
  }
  ~World() {
    service.reset();
    ledger.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  void renew() {
    service.reset();
    ledger.reset();
    std::error_code ec;
    for (const char* f : {"/ledger.db", "/ledger.db-wal", "/ledger.db-shm", "/ledger.db-journal"})
      std::filesystem::remove(dir + f, ec);
    ledger = core::Ledger::open(dir + "/ledger.db");
    service = std::make_unique<CfsslService>(ca_cert.get(), ca_key.get(), *ledger, dir + "/ca-config.json");
  }
};

std::string base64(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::string wrap_with_token(const std::string& inner) {
  std::string key = unhex(kAuthKeyHex);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HWCA_FUZZ_CHECK(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                       reinterpret_cast<const unsigned char*>(inner.data()), inner.size(), mac, &len) != nullptr);
  nlohmann::json j = {{"token", base64(std::string(reinterpret_cast<char*>(mac), len))}, {"request", base64(inner)}};
  return j.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static World world;
  if (++world.runs % 4000 == 0) world.renew();
  static const char* const kTargets[] = {"/api/v1/cfssl/sign", "/api/v1/cfssl/authsign", "/api/v1/cfssl/authsign",
                                         "/api/v1/cfssl/info", "/api/v1/cfssl/newcert"};
  const unsigned mode = data[0] % 5u;
  HttpRequest req;
  req.method = "POST";
  req.target = kTargets[mode];
  req.remote = "127.0.0.1:40000";
  req.body = fuzz::bytes(data + 1, size - 1);
  if (mode == 2) req.body = wrap_with_token(req.body);
  HttpResponse res = world.service->handle(req);
  HWCA_FUZZ_CHECK(res.status >= 200 && res.status < 600);
  nlohmann::json envelope = nlohmann::json::parse(res.body, nullptr, false);
  HWCA_FUZZ_CHECK(!envelope.is_discarded() && envelope.is_object() && envelope.contains("success"));
  return 0;
}
