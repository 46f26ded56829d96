// The audit chain (core/audit.h) in the ledger: appends, checkpoints signed by a dedicated key, and
// `verify_audit_chain` finding the first broken entry for each kind of tampering.
#include "core_helpers.h"

#include "core/audit.h"
#include "core/engine.h"
#include "core/ledger.h"

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <filesystem>
#include <random>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using hwca::test::TempDir;
using namespace hwca::core;

namespace {

void exec_sql(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  INFO((err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

AuditReport verify_file(const std::string& path, EVP_PKEY* trusted = nullptr) {
  auto ledger = Ledger::open(path);
  return verify_audit_chain(ledger->audit_entries(), ledger->audit_checkpoints(), trusted);
}

// One chain of 1,000 events with a checkpoint every 100 up to entry 900 (entries 901..1000 unsigned),
// built once and copied for each tampering.
struct Chain {
  TempDir dir;
  std::string path = dir / "base.db";
  hwca::EVP_PKEY_ptr audit_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  Chain() {
    auto ledger = Ledger::open(path);
    for (int i = 1; i <= 1000; ++i) {
      ledger->append_audit("test-event", nlohmann::json{{"n", i}, {"text", "event number " + std::to_string(i)}}.dump());
      if (i % 100 == 0 && i <= 900) {
        auto cp = make_audit_checkpoint(*ledger->audit_head(), audit_key.get(), audit_key.get(), "file:test-audit-key");
        ledger->add_audit_checkpoint(cp);
      }
    }
  }
  std::string copy(const std::string& name) const {
    std::string to = dir / name;
    std::filesystem::copy_file(path, to);
    return to;
  }
};

const Chain& chain() {
  static Chain c;
  return c;
}

}  // namespace

TEST_CASE("audit: entry hashes chain, and the encoding keeps fields apart", "[core][audit]") {
  AuditEntry a = next_audit_entry(std::nullopt, "2026-01-01T00:00:00Z", "k", "{\"a\":1}");
  CHECK(a.id == 1);
  CHECK(a.prev_hash == kAuditGenesis);
  CHECK(a.hash.size() == 64);
  AuditEntry b = next_audit_entry(a, "2026-01-01T00:00:01Z", "k", "{}");
  CHECK(b.id == 2);
  CHECK(b.prev_hash == a.hash);
  // Moving bytes from one field to the next changes the hash.
  AuditEntry c1 = next_audit_entry(std::nullopt, "t", "ab", "c");
  AuditEntry c2 = next_audit_entry(std::nullopt, "t", "a", "bc");
  CHECK(c1.hash != c2.hash);
}

TEST_CASE("audit: an intact chain of 1,000 events verifies - entries after the last checkpoint are unsigned",
          "[core][audit]") {
  AuditReport r = verify_file(chain().copy("intact.db"), chain().audit_key.get());
  INFO(r.summary());
  CHECK(r.intact);
  CHECK(r.entries == 1000);
  CHECK(r.checkpoints == 9);
  CHECK(r.last_signed_id == 900);
  CHECK(r.unsigned_entries == 100);
  CHECK(r.summary().find("100 entries after the last checkpoint (entry 900) not yet signed") != std::string::npos);
  REQUIRE(r.audit_keys.size() == 1);
  CHECK(r.audit_keys[0] == hwca::sha256_hex(hwca::public_key_der(chain().audit_key.get())));
}

TEST_CASE("audit: a flipped byte in a random entry is found at that entry", "[core][audit]") {
  std::mt19937 rng(20260101);
  for (int round = 0; round < 3; ++round) {
    int victim = std::uniform_int_distribution<int>(1, 1000)(rng);
    const char* column = round == 0 ? "detail" : round == 1 ? "at" : "prev_hash";
    std::string path = chain().copy("flip" + std::to_string(round) + ".db");
    // Flip the lowest bit of one character (a digit or letter stays printable).
    std::string c = column, u = "unicode(substr(" + c + ", 5, 1))";
    exec_sql(path, "UPDATE audit_events SET " + c + " = substr(" + c + ", 1, 4) || char((" + u + " | 1) - (" + u +
                       " & 1)) || substr(" + c + ", 6) WHERE id = " + std::to_string(victim));
    AuditReport r = verify_file(path);
    INFO(column << " of entry " << victim << ": " << r.summary());
    CHECK_FALSE(r.intact);
    CHECK(r.first_bad_id == victim);
  }
  // The stored hash itself.
  std::string path = chain().copy("flip-hash.db");
  exec_sql(path, "UPDATE audit_events SET hash = substr(hash, 1, 10) || char((unicode(substr(hash, 11, 1)) | 1) - "
                 "(unicode(substr(hash, 11, 1)) & 1)) || substr(hash, 12) WHERE id = 640");
  AuditReport r = verify_file(path);
  CHECK(r.first_bad_id == 640);
  CHECK(r.problem.find("modified") != std::string::npos);
}

TEST_CASE("audit: a deleted entry is found where it is missing", "[core][audit]") {
  std::string path = chain().copy("deleted.db");
  exec_sql(path, "DELETE FROM audit_events WHERE id = 437");
  AuditReport r = verify_file(path);
  CHECK_FALSE(r.intact);
  CHECK(r.first_bad_id == 437);
  CHECK(r.problem == "entry 437 is missing (deleted)");
  // Renumbering the rest to hide the gap does not help: entry 437 then points at the wrong predecessor.
  std::string renumbered = chain().copy("renumbered.db");
  exec_sql(renumbered, "DELETE FROM audit_events WHERE id = 437; UPDATE audit_events SET id = -id WHERE id > 437;"
                       "UPDATE audit_events SET id = -id - 1 WHERE id < 0;");
  r = verify_file(renumbered);
  CHECK(r.first_bad_id == 437);
  CHECK(r.problem.find("prev_hash") != std::string::npos);
}

TEST_CASE("audit: two swapped entries are found at the first of them", "[core][audit]") {
  for (auto [a, b] : {std::pair{250, 251}, std::pair{120, 777}}) {
    std::string path = chain().copy("swap" + std::to_string(a) + ".db");
    std::string sa = std::to_string(a), sb = std::to_string(b);
    exec_sql(path, "UPDATE audit_events SET id = -1 WHERE id = " + sa + "; UPDATE audit_events SET id = " + sa +
                       " WHERE id = " + sb + "; UPDATE audit_events SET id = " + sb + " WHERE id = -1;");
    AuditReport r = verify_file(path);
    INFO(r.summary());
    CHECK_FALSE(r.intact);
    CHECK(r.first_bad_id == a);
  }
}

TEST_CASE("audit: a truncation back past a signed checkpoint is found", "[core][audit]") {
  std::string path = chain().copy("truncated.db");
  exec_sql(path, "DELETE FROM audit_events WHERE id > 750");
  AuditReport r = verify_file(path);
  INFO(r.summary());
  CHECK_FALSE(r.intact);
  CHECK(r.first_bad_id == 751);
  CHECK(r.problem.find("truncated") != std::string::npos);
  CHECK(r.problem.find("entries 751..800 were removed") != std::string::npos);
}

TEST_CASE("audit: a truncation after the last checkpoint shows as fewer unsigned entries", "[core][audit]") {
  std::string path = chain().copy("truncated-unsigned.db");
  exec_sql(path, "DELETE FROM audit_events WHERE id > 950");
  AuditReport r = verify_file(path);
  INFO(r.summary());
  CHECK(r.intact);
  CHECK(r.entries == 950);
  CHECK(r.last_signed_id == 900);
  CHECK(r.unsigned_entries == 50);
}

TEST_CASE("audit: a rewritten chain (hashes recomputed) is caught by the checkpoints", "[core][audit]") {
  std::string path = chain().copy("rewritten.db");
  {
    auto ledger = Ledger::open(path);
    auto entries = ledger->audit_entries();
    entries[349].detail = R"({"n":350,"text":"something else"})";
    std::optional<AuditEntry> prev = entries[348];
    std::string sql = "BEGIN;";
    for (size_t i = 349; i < entries.size(); ++i) {
      AuditEntry e = next_audit_entry(prev, entries[i].at, entries[i].kind, entries[i].detail);
      sql += "UPDATE audit_events SET detail = '" + e.detail + "', prev_hash = '" + e.prev_hash + "', hash = '" + e.hash +
             "' WHERE id = " + std::to_string(e.id) + ";";
      prev = e;
    }
    sql += "COMMIT;";
    ledger.reset();
    exec_sql(path, sql);
  }
  AuditReport r = verify_file(path);
  INFO(r.summary());
  CHECK_FALSE(r.intact);
  CHECK(r.first_bad_id == 301);
  CHECK(r.problem.find("rewritten") != std::string::npos);
}

TEST_CASE("audit: checkpoints by another key, or with a bad signature, are refused", "[core][audit]") {
  std::string path = chain().copy("forged.db");
  auto other = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  {
    auto ledger = Ledger::open(path);
    ledger->add_audit_checkpoint(make_audit_checkpoint(*ledger->audit_head(), other.get(), other.get(), "file:other"));
  }
  AuditReport r = verify_file(path);
  CHECK_FALSE(r.intact);
  CHECK(r.first_bad_id == 1000);
  CHECK(r.problem.find("different audit key") != std::string::npos);
  // With the real key pinned, the same.
  r = verify_file(path, chain().audit_key.get());
  CHECK_FALSE(r.intact);
  CHECK(r.problem.find("not the trusted one") != std::string::npos);

  std::string bad_sig = chain().copy("badsig.db");
  exec_sql(bad_sig, "UPDATE audit_checkpoints SET at = '2030-01-01T00:00:00Z' WHERE entry_id = 500");
  r = verify_file(bad_sig);
  CHECK_FALSE(r.intact);
  CHECK(r.first_bad_id == 500);
  CHECK(r.problem.find("signature does not verify") != std::string::npos);
}

TEST_CASE("audit: record() and record_event() append to the chain in the same transaction", "[core][audit][ledger]") {
  TempDir dir;
  std::string path = dir / "ledger.db";
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  CertTemplate t;
  t.subject = hwca::test::cn_name("audit test root");
  t.key_usage = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN;
  t.is_ca = true;
  t.not_before = now() - 60;
  t.not_after = now() + 86400;
  auto cert = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  {
    auto ledger = Ledger::open(path);
    CHECK(ledger->schema_version() == Ledger::kSchemaVersion);
    ledger->record(cert.get(), "root-ca", "test");
    ledger->record_event("key-generate", "pkcs11:token=x;object=y");
    auto entries = ledger->audit_entries();
    REQUIRE(entries.size() == 2);
    CHECK(entries[0].kind == "certificate-issued");
    auto detail = nlohmann::json::parse(entries[0].detail);
    CHECK(detail["serial"] == hwca::serial_hex(X509_get0_serialNumber(cert.get())));
    CHECK(detail["sha256"] == hwca::sha256_hex(hwca::x509_to_der(cert.get())));
    CHECK(entries[1].kind == "key-generate");
    CHECK(nlohmann::json::parse(entries[1].detail)["detail"] == "pkcs11:token=x;object=y");
    CHECK(verify_audit_chain(entries, {}).intact);
  }
  // An audit chain that refuses the entry: the certificate is not recorded either.
  exec_sql(path, "CREATE TRIGGER refuse BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit disk on fire'); END;");
  auto ledger = Ledger::open(path);
  t.subject = hwca::test::cn_name("second");
  auto cert2 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  Error e = error_of([&] { ledger->record(cert2.get(), "root-ca", "test"); });
  CHECK(e.kind() == ErrorKind::Io);
  CHECK(std::string(e.what()).find("audit disk on fire") != std::string::npos);
  CHECK(ledger->list().size() == 1);
  CHECK(error_of([&] { ledger->record_event("x", "y"); }).kind() == ErrorKind::Io);
  CHECK(ledger->events().size() == 1);
}

TEST_CASE("ledger v2: revoke, revoked_by, CRL numbers", "[core][ledger]") {
  TempDir dir;
  auto ledger = Ledger::open(dir / "ledger.db");
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  CertTemplate t;
  t.subject = hwca::test::cn_name("revoke test");
  t.not_before = now() - 60;
  t.not_after = now() + 86400;
  auto cert = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  ledger->record(cert.get(), "p", "r");
  std::string serial = hwca::serial_hex(X509_get0_serialNumber(cert.get()));
  CHECK(ledger->revoked_by("CN=revoke test").empty());
  LedgerEntry e = ledger->revoke(serial, "keyCompromise", 1800000000);
  CHECK(e.status == "revoked");
  CHECK(e.revoked_at == "2027-01-15T08:00:00Z");
  auto revoked = ledger->revoked_by("CN=revoke test");
  REQUIRE(revoked.size() == 1);
  CHECK(revoked[0].revocation_reason == "keyCompromise");
  CHECK(ledger->find(serial)->status == "revoked");
  CHECK(error_of([&] { ledger->revoke(serial, "superseded", 1800000000); }).kind() == ErrorKind::Conflict);
  CHECK(error_of([&] { ledger->revoke("abcdef", "superseded", 1800000000); }).kind() == ErrorKind::NotFound);
  CHECK(ledger->next_crl_number("k1", "CN=a") == 1);
  CHECK(ledger->next_crl_number("k1", "CN=a") == 2);
  CHECK(ledger->next_crl_number("k2", "CN=b") == 1);
  CHECK(ledger->next_crl_number("k1", "CN=a") == 3);
  auto entries = ledger->audit_entries();
  REQUIRE(entries.size() == 6);
  CHECK(entries[1].kind == "certificate-revoked");
  CHECK(verify_audit_chain(entries, {}).intact);
}

TEST_CASE("ledger: a version 1 database migrates to the current version and keeps its rows", "[core][ledger]") {
  TempDir dir;
  std::string path = dir / "v1.db";
  exec_sql(path,
           "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
           "CREATE TABLE certificates (serial TEXT PRIMARY KEY, issuer TEXT NOT NULL, subject TEXT NOT NULL,"
           " sans TEXT NOT NULL, not_before TEXT NOT NULL, not_after TEXT NOT NULL, profile TEXT NOT NULL,"
           " requester TEXT NOT NULL, issued_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'issued', pem TEXT NOT NULL);"
           "CREATE INDEX certificates_issued_at ON certificates(issued_at);"
           "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);"
           "INSERT INTO certificates VALUES ('0a', 'CN=r', 'CN=old', '', '2026-01-01T00:00:00Z', '2027-01-01T00:00:00Z',"
           " 'p', 'r', '2026-01-01T00:00:00Z', 'issued', 'PEM');"
           "INSERT INTO events(at, kind, detail) VALUES ('2026-01-01T00:00:00Z', 'key-generate', 'old');");
  auto ledger = Ledger::open(path);
  CHECK(ledger->schema_version() == Ledger::kSchemaVersion);
  auto rows = ledger->list();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].subject == "CN=old");
  CHECK(rows[0].revoked_at.empty());
  CHECK(ledger->events().size() == 1);
  CHECK(ledger->audit_entries().empty());
  ledger->revoke("0a", "superseded", 1800000000);
  CHECK(ledger->revoked_by("CN=r").size() == 1);
  CHECK(verify_audit_chain(ledger->audit_entries(), ledger->audit_checkpoints()).intact);
}

TEST_CASE("ledger v3: request ids are unique and orphaned rows are marked with an audit event", "[core][ledger]") {
  TempDir dir;
  auto ledger = Ledger::open(dir / "ledger.db");
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  CertTemplate t;
  t.subject = hwca::test::cn_name("request id test");
  t.not_before = now() - 60;
  t.not_after = now() + 86400;
  auto c1 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  auto c2 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  auto c3 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  auto c4 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  const std::string s1 = hwca::serial_hex(X509_get0_serialNumber(c1.get()));
  ledger->record(c1.get(), "p", "k8s:node", "k8s-csr:uid-1");
  CHECK_FALSE(ledger->find_by_request_id("k8s-csr:uid-2"));
  CHECK_FALSE(ledger->find_by_request_id(""));
  auto found = ledger->find_by_request_id("k8s-csr:uid-1");
  REQUIRE(found);
  CHECK(found->serial == s1);
  CHECK(found->request_id == "k8s-csr:uid-1");
  // The same request again, under another serial: refused, and the first row stays the answer.
  Error dup = error_of([&] { ledger->record(c2.get(), "p", "k8s:node", "k8s-csr:uid-1"); });
  CHECK(dup.kind() == ErrorKind::Conflict);
  CHECK(std::string(dup.what()).find("k8s-csr:uid-1") != std::string::npos);
  CHECK(ledger->list().size() == 1);
  // Rows without a request id never collide with each other.
  ledger->record(c3.get(), "p", "cli:gencert");
  ledger->record(c4.get(), "p", "cli:gencert", "");
  CHECK(ledger->list().size() == 3);
  // A batch with a repeated request id is refused whole.
  auto c5 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  auto c6 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  CHECK(error_of([&] {
          ledger->record_batch({{c5.get(), "p", "r", "k8s-csr:uid-9"}, {c6.get(), "p", "r", "k8s-csr:uid-9"}});
        }).kind() == ErrorKind::Conflict);
  CHECK(ledger->list().size() == 3);
  // The rows by request-id prefix: serial, status and request id only, oldest first; a prefix is a prefix.
  auto c7 = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  ledger->record(c7.get(), "p", "k8s init", "k8s-file:1:/out/pki/apiserver.crt");
  auto k8s_csr = ledger->request_ids_with_prefix("k8s-csr:");
  REQUIRE(k8s_csr.size() == 1);
  CHECK(k8s_csr[0].serial == s1);
  CHECK(k8s_csr[0].status == "issued");
  CHECK(k8s_csr[0].request_id == "k8s-csr:uid-1");
  CHECK(k8s_csr[0].pem.empty());
  CHECK(ledger->request_ids_with_prefix("k8s-").size() == 2);
  CHECK(ledger->request_ids_with_prefix("k8s-file:1:/out/").size() == 1);
  CHECK(ledger->request_ids_with_prefix("k8s-file:2").empty());
  CHECK(ledger->request_ids_with_prefix("k8s-csr:uid-1x").empty());
  CHECK(error_of([&] { ledger->request_ids_with_prefix(""); }).kind() == ErrorKind::Internal);

  ledger->mark_orphaned(s1, "its files never reached out/pki/x.crt");
  CHECK(ledger->find(s1)->status == "orphaned");
  CHECK(error_of([&] { ledger->mark_orphaned(s1, "again"); }).kind() == ErrorKind::Conflict);
  CHECK(error_of([&] { ledger->mark_orphaned("abcdef", "nope"); }).kind() == ErrorKind::NotFound);
  auto entries = ledger->audit_entries();
  REQUIRE(entries.size() == 5);
  CHECK(entries.back().kind == "certificate-orphaned");
  auto detail = nlohmann::json::parse(entries.back().detail);
  CHECK(detail["serial"] == s1);
  CHECK(detail["why"] == "its files never reached out/pki/x.crt");
  CHECK(verify_audit_chain(entries, {}).intact);
}
