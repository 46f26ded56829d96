// The SQLite ledger and atomic output files.
#include "core_helpers.h"

#include "core/engine.h"
#include "core/files.h"
#include "core/ledger.h"
#include "core/profile.h"

#include <sqlite3.h>

#include <fstream>
#include <sstream>
#include <sys/stat.h>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using hwca::test::TempDir;
using namespace hwca::core;

namespace {

struct MiniCa {
  hwca::EVP_PKEY_ptr key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  hwca::X509_ptr cert;
  MiniCa() {
    CertTemplate t;
    t.subject = hwca::test::cn_name("ledger test root");
    t.key_usage = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN;
    t.is_ca = true;
    t.not_before = now() - 60;
    t.not_after = now() + 86400;
    cert = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  }
  hwca::X509_ptr leaf(const std::string& cn, const ASN1_INTEGER* serial) const {
    CertTemplate t;
    t.subject = hwca::test::cn_name(cn);
    t.sans = SubjectAltNames::classify({cn + ".example", "10.0.0.9"});
    t.key_usage = X509v3_KU_DIGITAL_SIGNATURE;
    t.ext_key_usage = {NID_server_auth};
    t.not_before = 1800000000;
    t.not_after = 1800003600;
    auto k = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
    return build_certificate(t, serial, k.get(), cert.get(), key.get());
  }
};

int count_rows(const std::string& db_path, const char* table) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  std::string sql = std::string("SELECT count(*) FROM ") + table;
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

void exec_sql(const std::string& db_path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  INFO((err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("Ledger::open creates the folder and schema v1 - reopening is idempotent", "[core][ledger]") {
  TempDir dir;
  std::string path = dir / "state/nested/ledger.db";
  {
    auto ledger = Ledger::open(path);
    CHECK(ledger->schema_version() == Ledger::kSchemaVersion);
    CHECK(ledger->schema_version() == Ledger::kSchemaVersion);  // v2: revocation, CRL numbers, audit chain; v3: request ids
    CHECK(ledger->path() == path);
    CHECK(ledger->list().empty());
    CHECK(ledger->events().empty());
  }
  CHECK(mode_of(dir / "state") == 0700);
  CHECK(mode_of(dir / "state/nested") == 0700);
  CHECK(count_rows(path, "schema_version") == 1);
  {
    auto again = Ledger::open(path);
    CHECK(again->schema_version() == Ledger::kSchemaVersion);
  }
  CHECK(count_rows(path, "schema_version") == 1);
  CHECK(count_rows(path, "certificates") == 0);
  // WAL mode.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_CASE("Ledger refuses a schema newer than it knows, and a path it cannot create", "[core][ledger]") {
  TempDir dir;
  std::string path = dir / "ledger.db";
  { auto l = Ledger::open(path); }
  exec_sql(path, "UPDATE schema_version SET version = 99");
  Error e = error_of([&] { Ledger::open(path); });
  CHECK(e.kind() == ErrorKind::Io);
  CHECK(std::string(e.what()).find("99") != std::string::npos);

  std::ofstream(dir / "afile") << "x";
  CHECK(error_of([&] { Ledger::open(dir / "afile/ledger.db"); }).kind() == ErrorKind::Io);
}

TEST_CASE("Ledger::record and list", "[core][ledger]") {
  TempDir dir;
  auto ledger = Ledger::open(dir / "ledger.db");
  MiniCa ca;
  auto s1 = random_serial();
  auto s2 = random_serial();
  auto c1 = ca.leaf("one", s1.get());
  auto c2 = ca.leaf("two", s2.get());
  ledger->record(c1.get(), "kubernetes", "cli:gencert");
  ledger->record(c2.get(), "default", "serve:127.0.0.1");
  CHECK(ledger->has_serial(hwca::serial_hex(s1.get())));
  CHECK_FALSE(ledger->has_serial("00"));

  auto entries = ledger->list();
  REQUIRE(entries.size() == 2);
  const LedgerEntry& e = entries[0];
  CHECK(e.serial == hwca::serial_hex(s1.get()));
  CHECK(e.serial.size() == 40);
  CHECK(e.issuer == "CN=ledger test root");
  CHECK(e.subject == "CN=one");
  CHECK(e.sans == "DNS:one.example, IP:10.0.0.9");
  CHECK(e.not_before == "2027-01-15T08:00:00Z");
  CHECK(e.not_after == "2027-01-15T09:00:00Z");
  CHECK(e.profile == "kubernetes");
  CHECK(e.requester == "cli:gencert");
  CHECK(e.status == "issued");
  CHECK(e.issued_at.size() == 20);
  CHECK(e.pem == hwca::x509_to_pem(c1.get()));
  CHECK(entries[1].subject == "CN=two");
  CHECK(entries[1].requester == "serve:127.0.0.1");

  ledger->record_event("key-generate", "pkcs11:token=x;object=y");
  auto events = ledger->events();
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == "key-generate");
  CHECK(events[0].detail == "pkcs11:token=x;object=y");
  CHECK(events[0].id > 0);

  // Persisted across reopen.
  ledger.reset();
  auto reopened = Ledger::open(dir / "ledger.db");
  CHECK(reopened->list().size() == 2);
}

TEST_CASE("Ledger::record: a duplicate serial is a Conflict and records nothing", "[core][ledger]") {
  TempDir dir;
  auto ledger = Ledger::open(dir / "ledger.db");
  MiniCa ca;
  auto serial = random_serial();
  auto c1 = ca.leaf("one", serial.get());
  auto c2 = ca.leaf("other", serial.get());
  ledger->record(c1.get(), "p", "r");
  Error e = error_of([&] { ledger->record(c2.get(), "p", "r"); });
  CHECK(e.kind() == ErrorKind::Conflict);
  CHECK(std::string(e.what()) == "serial " + hwca::serial_hex(serial.get()) + " already in the ledger");
  auto entries = ledger->list();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].subject == "CN=one");
  // The ledger still works after the failed transaction.
  auto c3 = ca.leaf("three", random_serial().get());
  CHECK_NOTHROW(ledger->record(c3.get(), "p", "r"));
  CHECK(ledger->list().size() == 2);
}

TEST_CASE("A ledger that refuses the row makes Issuer::issue throw and hand back nothing", "[core][ledger][engine]") {
  TempDir dir;
  std::string path = dir / "ledger.db";
  { auto l = Ledger::open(path); }
  exec_sql(path,
           "CREATE TRIGGER refuse BEFORE INSERT ON certificates BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;");
  auto ledger = Ledger::open(path);
  MiniCa ca;
  Issuer issuer(ca.cert.get(), ca.key.get(), *ledger);
  Profile profile = builtin_profile("server");
  auto leaf_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  IssueRequest req;
  req.subject = hwca::test::cn_name("refused");
  req.public_key = leaf_key.get();
  req.profile = &profile;
  req.requester = "test";
  hwca::X509_ptr got;
  Error e = error_of([&] { got = issuer.issue(req); });
  CHECK(!got);
  CHECK(e.kind() == ErrorKind::Io);
  std::string msg = e.what();
  CHECK(msg.rfind("ledger " + path + ": could not record certificate ", 0) == 0);
  CHECK(msg.find("disk on fire") != std::string::npos);
  CHECK(ledger->list().empty());
  CHECK(count_rows(path, "certificates") == 0);
}

TEST_CASE("hwca_home and default_ledger_path", "[core][ledger]") {
  const char* old = std::getenv("HWCA_HOME");
  std::string saved = old ? old : "";
  ::setenv("HWCA_HOME", "/srv/hwca", 1);
  CHECK(hwca_home() == "/srv/hwca");
  CHECK(default_ledger_path() == "/srv/hwca/ledger.db");
  ::unsetenv("HWCA_HOME");
  CHECK(hwca_home() == "./.hwca");
  CHECK(default_ledger_path() == "./.hwca/ledger.db");
  if (old) ::setenv("HWCA_HOME", saved.c_str(), 1);
}

// ---------------------------------------------------------------------------------------------
// Files

TEST_CASE("write_file_atomic: mode, replacement, no temporary left behind", "[core][files]") {
  TempDir dir;
  std::string path = dir / "ca-key.pem";
  write_file_atomic(path, "secret\n", 0600);
  CHECK(slurp(path) == "secret\n");
  CHECK(mode_of(path) == 0600);
  // Replace an existing file (with another mode).
  ::chmod(path.c_str(), 0644);
  write_file_atomic(path, "new", 0640);
  CHECK(slurp(path) == "new");
  CHECK(mode_of(path) == 0640);
  // Empty data is a valid (empty) file.
  write_file_atomic(dir / "empty", "", 0644);
  CHECK(slurp(dir / "empty").empty());
  // Only the two files exist: no .tmp leftovers.
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    CHECK(entry.path().filename().string().find(".tmp.") == std::string::npos);
    ++count;
  }
  CHECK(count == 2);
  // A relative name in the current folder works too (folder ".").
  CHECK_NOTHROW(check_output_path("relative-name.pem"));
}

TEST_CASE("write_file_atomic: a missing folder is NotFound and creates nothing", "[core][files]") {
  TempDir dir;
  std::string path = dir / "missing/out.pem";
  Error e = error_of([&] { write_file_atomic(path, "x", 0644); });
  CHECK(e.kind() == ErrorKind::NotFound);
  CHECK(std::string(e.what()) == "output folder " + dir.path() + "/missing does not exist");
  CHECK_FALSE(std::filesystem::exists(dir / "missing"));
  CHECK(std::filesystem::is_empty(dir.path()));
  // A folder where the file should go.
  std::filesystem::create_directory(dir / "sub");
  CHECK(error_of([&] { write_file_atomic(dir / "sub", "x", 0644); }).kind() == ErrorKind::BadInput);
  CHECK(std::filesystem::is_directory(dir / "sub"));
  // A file where the folder should be.
  std::ofstream(dir / "plain") << "x";
  CHECK(error_of([&] { check_output_path(dir / "plain/out.pem"); }).kind() == ErrorKind::NotFound);
}

TEST_CASE("write_bare writes cfssljson's three files", "[core][files]") {
  TempDir dir;
  std::string name = dir / "kubernetes";
  mode_t old_mask = ::umask(022);
  write_bare(name, BareFiles{"CERT", "KEY", "CSR"});
  ::umask(old_mask);
  CHECK(slurp(name + ".pem") == "CERT");
  CHECK(slurp(name + "-key.pem") == "KEY");
  CHECK(slurp(name + ".csr") == "CSR");
  CHECK(mode_of(name + "-key.pem") == 0600);
  CHECK(mode_of(name + ".pem") == 0644);  // 0664 less the umask
  CHECK(mode_of(name + ".csr") == 0644);

  // Empty parts are not written.
  write_bare(dir / "certonly", BareFiles{"C", "", ""});
  CHECK(std::filesystem::exists(dir / "certonly.pem"));
  CHECK_FALSE(std::filesystem::exists(dir / "certonly-key.pem"));
  CHECK_FALSE(std::filesystem::exists(dir / "certonly.csr"));

  Error e = error_of([&] { check_bare_output(dir / "nope/name"); });
  CHECK(e.kind() == ErrorKind::NotFound);
  CHECK(error_of([&] { write_bare(dir / "nope/name", BareFiles{"C", "K", "R"}); }).kind() == ErrorKind::NotFound);
  CHECK_FALSE(std::filesystem::exists(dir / "nope"));
}
