#include "core/ledger.h"

#include "core/base/error.h"
#include "core/x509.h"

#include <sqlite3.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sys/stat.h>
#include <sys/types.h>

namespace hwca::core {

namespace {

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

std::string errmsg(sqlite3* db) { return db ? sqlite3_errmsg(db) : "out of memory"; }

[[noreturn]] void fail(sqlite3* db, const std::string& path, const std::string& what) {
  throw Error(ErrorKind::Io, "ledger " + path + ": " + what + ": " + errmsg(db));
}

Stmt prepare(sqlite3* db, const std::string& path, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    sqlite3_finalize(raw);
    fail(db, path, "preparing a statement");
  }
  return Stmt(raw);
}

void bind_text(sqlite3* db, const std::string& path, sqlite3_stmt* s, int index, const std::string& value) {
  if (sqlite3_bind_text(s, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT) != SQLITE_OK)
    fail(db, path, "binding a value");
}

std::string column_text(sqlite3_stmt* s, int col) {
  const unsigned char* t = sqlite3_column_text(s, col);
  if (!t) return {};
  return std::string(reinterpret_cast<const char*>(t), static_cast<size_t>(sqlite3_column_bytes(s, col)));
}

// Runs constant SQL (schema statements and pragmas; never user data).
void exec(sqlite3* db, const std::string& path, const char* sql, const std::string& what) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : errmsg(db);
    sqlite3_free(err);
    throw Error(ErrorKind::Io, "ledger " + path + ": " + what + ": " + msg);
  }
}

void rollback(sqlite3* db) noexcept {
  if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
}

int read_version(sqlite3* db, const std::string& path) {
  Stmt s = prepare(db, path, "SELECT version FROM schema_version LIMIT 1");
  int rc = sqlite3_step(s.get());
  if (rc == SQLITE_ROW) return sqlite3_column_int(s.get(), 0);
  if (rc == SQLITE_DONE) return 0;
  fail(db, path, "reading the schema version");
}

// Schema migrations: kMigrations[n] takes the schema from version n to n + 1.
void migrate_0_to_1(sqlite3* db, const std::string& path) {
  exec(db, path,
       "CREATE TABLE certificates ("
       "  serial TEXT PRIMARY KEY,"
       "  issuer TEXT NOT NULL,"
       "  subject TEXT NOT NULL,"
       "  sans TEXT NOT NULL,"
       "  not_before TEXT NOT NULL,"
       "  not_after TEXT NOT NULL,"
       "  profile TEXT NOT NULL,"
       "  requester TEXT NOT NULL,"
       "  issued_at TEXT NOT NULL,"
       "  status TEXT NOT NULL DEFAULT 'issued',"
       "  pem TEXT NOT NULL);"
       "CREATE INDEX certificates_issued_at ON certificates(issued_at);"
       "CREATE TABLE events ("
       "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
       "  at TEXT NOT NULL,"
       "  kind TEXT NOT NULL,"
       "  detail TEXT NOT NULL);",
       "migrating the schema to version 1");
}

using Migration = void (*)(sqlite3*, const std::string&);
const Migration kMigrations[] = {&migrate_0_to_1};
static_assert(sizeof kMigrations / sizeof kMigrations[0] == Ledger::kSchemaVersion);

void set_version(sqlite3* db, const std::string& path, int version) {
  exec(db, path, "DELETE FROM schema_version", "updating the schema version");
  Stmt s = prepare(db, path, "INSERT INTO schema_version(version) VALUES (?1)");
  if (sqlite3_bind_int(s.get(), 1, version) != SQLITE_OK) fail(db, path, "binding a value");
  if (sqlite3_step(s.get()) != SQLITE_DONE) fail(db, path, "updating the schema version");
}

void migrate(sqlite3* db, const std::string& path) {
  while (true) {
    exec(db, path, "BEGIN IMMEDIATE", "starting a transaction");
    try {
      exec(db, path, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", "creating schema_version");
      int version = read_version(db, path);
      if (version > Ledger::kSchemaVersion) {
        throw Error(ErrorKind::Io, "ledger " + path + " has schema version " + std::to_string(version) +
                                       ", newer than this hwca knows (" + std::to_string(Ledger::kSchemaVersion) +
                                       "); use a newer hwca");
      }
      if (version == Ledger::kSchemaVersion) {
        exec(db, path, "COMMIT", "committing");
        return;
      }
      kMigrations[version](db, path);
      set_version(db, path, version + 1);
      exec(db, path, "COMMIT", "committing the migration to version " + std::to_string(version + 1));
    } catch (...) {
      rollback(db);
      throw;
    }
  }
}

void make_folders(const std::string& folder) {
  if (folder.empty()) return;
  std::string prefix;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = folder.find('/', pos + 1);
    prefix = folder.substr(0, pos);
    if (prefix.empty()) continue;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::Io, "ledger folder " + prefix + " is not a folder");
      continue;
    }
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST)
      throw Error(ErrorKind::Io, "cannot create the ledger folder " + prefix + ": " + std::strerror(errno));
  }
}

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

}  // namespace

Ledger::Ledger(sqlite3* db, std::string path) : m_db(db), m_path(std::move(path)) {}

Ledger::~Ledger() { sqlite3_close_v2(m_db); }

std::unique_ptr<Ledger> Ledger::open(const std::string& path) {
  if (path.empty()) throw Error(ErrorKind::Io, "ledger: empty path");
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) make_folders(path.substr(0, slash));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  // The Ledger owns the handle from here on, even when opening failed.
  std::unique_ptr<Ledger> ledger(new Ledger(db, path));
  if (rc != SQLITE_OK) fail(db, path, "cannot open");
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  exec(db, path, "PRAGMA journal_mode=WAL", "setting WAL mode");
  exec(db, path, "PRAGMA synchronous=FULL", "setting synchronous=FULL");
  exec(db, path, "PRAGMA foreign_keys=ON", "enabling foreign keys");
  migrate(db, path);
  return ledger;
}

void Ledger::record(const X509* cert, const std::string& profile, const std::string& requester) {
  std::string serial = serial_hex(X509_get0_serialNumber(cert));
  LedgerEntry e;
  e.serial = serial;
  e.issuer = name_to_string(X509_get_issuer_name(cert));
  e.subject = name_to_string(X509_get_subject_name(cert));
  e.sans = join(SubjectAltNames::of_cert(cert).describe(), ", ");
  e.not_before = iso8601(asn1_time_to_time_t(X509_get0_notBefore(cert)));
  e.not_after = iso8601(asn1_time_to_time_t(X509_get0_notAfter(cert)));
  e.issued_at = iso8601(now());
  e.pem = x509_to_pem(cert);

  std::lock_guard<std::mutex> lock(m_mutex);
  auto io_error = [&](const std::string& msg) {
    return Error(ErrorKind::Io, "ledger " + m_path + ": could not record certificate " + serial + ": " + msg);
  };
  if (sqlite3_exec(m_db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) throw io_error(errmsg(m_db));
  try {
    Stmt s = prepare(m_db, m_path,
                     "INSERT INTO certificates(serial, issuer, subject, sans, not_before, not_after, profile, requester,"
                     " issued_at, status, pem) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'issued', ?10)");
    const std::string* values[] = {&e.serial, &e.issuer, &e.subject, &e.sans, &e.not_before,
                                   &e.not_after, &profile, &requester, &e.issued_at, &e.pem};
    for (int i = 0; i < 10; ++i) bind_text(m_db, m_path, s.get(), i + 1, *values[i]);
    int rc = sqlite3_step(s.get());
    if (rc != SQLITE_DONE) {
      int ext = sqlite3_extended_errcode(m_db);
      std::string msg = errmsg(m_db);
      if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE)
        throw Error(ErrorKind::Conflict, "serial " + serial + " already in the ledger");
      throw io_error(msg);
    }
    s.reset();
    if (sqlite3_exec(m_db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) throw io_error(errmsg(m_db));
  } catch (...) {
    rollback(m_db);
    throw;
  }
}

void Ledger::record_event(const std::string& kind, const std::string& detail) {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path, "INSERT INTO events(at, kind, detail) VALUES (?1, ?2, ?3)");
  bind_text(m_db, m_path, s.get(), 1, iso8601(now()));
  bind_text(m_db, m_path, s.get(), 2, kind);
  bind_text(m_db, m_path, s.get(), 3, detail);
  if (sqlite3_step(s.get()) != SQLITE_DONE) fail(m_db, m_path, "could not record the event '" + kind + "'");
}

std::vector<LedgerEntry> Ledger::list() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path,
                   "SELECT serial, issuer, subject, sans, not_before, not_after, profile, requester, issued_at, status, pem"
                   " FROM certificates ORDER BY issued_at, rowid");
  std::vector<LedgerEntry> out;
  int rc = 0;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    LedgerEntry e;
    e.serial = column_text(s.get(), 0);
    e.issuer = column_text(s.get(), 1);
    e.subject = column_text(s.get(), 2);
    e.sans = column_text(s.get(), 3);
    e.not_before = column_text(s.get(), 4);
    e.not_after = column_text(s.get(), 5);
    e.profile = column_text(s.get(), 6);
    e.requester = column_text(s.get(), 7);
    e.issued_at = column_text(s.get(), 8);
    e.status = column_text(s.get(), 9);
    e.pem = column_text(s.get(), 10);
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) fail(m_db, m_path, "listing certificates");
  return out;
}

std::vector<LedgerEvent> Ledger::events() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path, "SELECT id, at, kind, detail FROM events ORDER BY id");
  std::vector<LedgerEvent> out;
  int rc = 0;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    LedgerEvent e;
    e.id = sqlite3_column_int64(s.get(), 0);
    e.at = column_text(s.get(), 1);
    e.kind = column_text(s.get(), 2);
    e.detail = column_text(s.get(), 3);
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) fail(m_db, m_path, "listing events");
  return out;
}

bool Ledger::has_serial(const std::string& serial_hex_value) const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path, "SELECT 1 FROM certificates WHERE serial = ?1");
  bind_text(m_db, m_path, s.get(), 1, serial_hex_value);
  int rc = sqlite3_step(s.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(m_db, m_path, "looking up a serial");
}

int Ledger::schema_version() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  return read_version(m_db, m_path);
}

std::string hwca_home() {
  const char* home = std::getenv("HWCA_HOME");
  if (home && *home) return home;
  return "./.hwca";
}

std::string default_ledger_path() { return hwca_home() + "/ledger.db"; }

}  // namespace hwca::core
