#include "core/ledger.h"
#include "core/ledger_pg.h"

#include "core/base/error.h"
#include "core/x509.h"

#include <nlohmann/json.hpp>
#include <openssl/pem.h>
#include <sqlite3.h>

#include <cerrno>
#include <exception>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <unordered_map>
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

// Version 2: revocation, CRL numbers and the audit chain (core/audit.h). audit_events ids are given
// explicitly (head id + 1), so a deleted entry leaves a gap that `audit verify` names.
void migrate_1_to_2(sqlite3* db, const std::string& path) {
  exec(db, path,
       "ALTER TABLE certificates ADD COLUMN revoked_at TEXT;"
       "ALTER TABLE certificates ADD COLUMN revocation_reason TEXT;"
       "CREATE TABLE crl_numbers ("
       "  issuer_key_id TEXT PRIMARY KEY,"
       "  issuer TEXT NOT NULL,"
       "  last_number INTEGER NOT NULL);"
       "CREATE TABLE audit_events ("
       "  id INTEGER PRIMARY KEY,"
       "  at TEXT NOT NULL,"
       "  kind TEXT NOT NULL,"
       "  detail TEXT NOT NULL,"
       "  prev_hash TEXT NOT NULL,"
       "  hash TEXT NOT NULL);"
       "CREATE TABLE audit_checkpoints ("
       "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
       "  entry_id INTEGER NOT NULL,"
       "  head_hash TEXT NOT NULL,"
       "  count INTEGER NOT NULL,"
       "  at TEXT NOT NULL,"
       "  signature TEXT NOT NULL,"
       "  key_uri TEXT NOT NULL,"
       "  public_key TEXT NOT NULL);",
       "migrating the schema to version 2");
}

// Version 3: the request a certificate answered (a Kubernetes CSR's uid), unique when set.
void migrate_2_to_3(sqlite3* db, const std::string& path) {
  exec(db, path,
       "ALTER TABLE certificates ADD COLUMN request_id TEXT;"
       "CREATE UNIQUE INDEX certificates_request_id ON certificates(request_id) WHERE request_id IS NOT NULL;",
       "migrating the schema to version 3");
}

using Migration = void (*)(sqlite3*, const std::string&);
const Migration kMigrations[] = {&migrate_0_to_1, &migrate_1_to_2, &migrate_2_to_3};
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

const char* kAuditColumns = "id, at, kind, detail, prev_hash, hash";

AuditEntry audit_row(sqlite3_stmt* s) {
  AuditEntry e;
  e.id = sqlite3_column_int64(s, 0);
  e.at = column_text(s, 1);
  e.kind = column_text(s, 2);
  e.detail = column_text(s, 3);
  e.prev_hash = column_text(s, 4);
  e.hash = column_text(s, 5);
  return e;
}

}  // namespace

// The statements every issuance runs, prepared once per connection: preparing parses the SQL again, which
// was 3-4 % of the CPU of a bulk `k8s init` and of `hwca serve` (perf). Used under the ledger's mutex
// only; a statement is reset and its bindings cleared when its use ends.
class SqliteStatements {
 public:
  SqliteStatements(sqlite3* db, const std::string& path) : m_db(db), m_path(path) {}
  class Use {
   public:
    explicit Use(sqlite3_stmt* s) : m_s(s) {}
    ~Use() {
      sqlite3_reset(m_s);
      sqlite3_clear_bindings(m_s);
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    sqlite3_stmt* get() const { return m_s; }

   private:
    sqlite3_stmt* m_s;
  };
  Use use(const std::string& sql) {
    auto it = m_cache.find(sql);
    if (it == m_cache.end()) it = m_cache.emplace(sql, prepare(m_db, m_path, sql.c_str())).first;
    return Use(it->second.get());
  }
  void clear() { m_cache.clear(); }
  sqlite3* db() const { return m_db; }
  const std::string& path() const { return m_path; }

 private:
  sqlite3* m_db;
  const std::string& m_path;
  std::unordered_map<std::string, Stmt> m_cache;
};

namespace {

std::optional<AuditEntry> read_audit_head(SqliteStatements& st) {
  auto s = st.use("SELECT id, at, kind, detail, prev_hash, hash FROM audit_events ORDER BY id DESC LIMIT 1");
  int rc = sqlite3_step(s.get());
  if (rc == SQLITE_ROW) return audit_row(s.get());
  if (rc == SQLITE_DONE) return std::nullopt;
  fail(st.db(), st.path(), "reading the audit chain head");
}

// Appends one entry; the caller holds the write lock (an open BEGIN IMMEDIATE transaction).
AuditEntry append_audit_in_transaction(SqliteStatements& st, const std::string& kind, const std::string& detail) {
  sqlite3* db = st.db();
  const std::string& path = st.path();
  AuditEntry e = next_audit_entry(read_audit_head(st), iso8601(now()), kind, detail);
  auto s = st.use("INSERT INTO audit_events(id, at, kind, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (sqlite3_bind_int64(s.get(), 1, e.id) != SQLITE_OK) fail(db, path, "binding a value");
  bind_text(db, path, s.get(), 2, e.at);
  bind_text(db, path, s.get(), 3, e.kind);
  bind_text(db, path, s.get(), 4, e.detail);
  bind_text(db, path, s.get(), 5, e.prev_hash);
  bind_text(db, path, s.get(), 6, e.hash);
  if (sqlite3_step(s.get()) != SQLITE_DONE) fail(db, path, "appending the audit event '" + kind + "'");
  return e;
}

const char* kCertColumns =
    "serial, issuer, subject, sans, not_before, not_after, profile, requester, issued_at, status, pem, revoked_at,"
    " revocation_reason, request_id";

LedgerEntry cert_row(sqlite3_stmt* s) {
  LedgerEntry e;
  e.serial = column_text(s, 0);
  e.issuer = column_text(s, 1);
  e.subject = column_text(s, 2);
  e.sans = column_text(s, 3);
  e.not_before = column_text(s, 4);
  e.not_after = column_text(s, 5);
  e.profile = column_text(s, 6);
  e.requester = column_text(s, 7);
  e.issued_at = column_text(s, 8);
  e.status = column_text(s, 9);
  e.pem = column_text(s, 10);
  e.revoked_at = column_text(s, 11);
  e.revocation_reason = column_text(s, 12);
  e.request_id = column_text(s, 13);
  return e;
}

// Runs `body` inside BEGIN IMMEDIATE ... COMMIT; rolls back on any exception.
template <typename Fn>
auto in_transaction(sqlite3* db, const std::string& path, const std::string& what, Fn&& body) {
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) fail(db, path, what);
  try {
    auto result = body();
    if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) fail(db, path, what);
    return result;
  } catch (...) {
    rollback(db);
    throw;
  }
}

}  // namespace

// The SQLite ledger: one connection (SQLITE_OPEN_FULLMUTEX) shared by the threads, WAL, synchronous=FULL.
class SqliteLedger final : public Ledger {
 public:
  static std::unique_ptr<Ledger> open(const std::string& path);
  ~SqliteLedger() override;

  void record(const X509* cert, const std::string& profile, const std::string& requester,
              const std::string& request_id) override;
  void record_batch(const std::vector<BatchItem>& items) override;
  void record_event(const std::string& kind, const std::string& detail) override;
  LedgerEntry revoke(const std::string& serial_hex, const std::string& reason, std::time_t revoked_at) override;
  std::optional<LedgerEntry> find(const std::string& serial_hex) const override;
  std::optional<LedgerEntry> find_by_request_id(const std::string& request_id) const override;
  std::vector<LedgerEntry> request_ids_with_prefix(const std::string& prefix) const override;
  void mark_orphaned(const std::string& serial_hex, const std::string& why) override;
  std::vector<LedgerEntry> revoked_by(const std::string& issuer) const override;
  long long next_crl_number(const std::string& issuer_key_id, const std::string& issuer) override;
  AuditEntry append_audit(const std::string& kind, const std::string& detail_json) override;
  std::optional<AuditEntry> audit_head() const override;
  std::vector<AuditEntry> audit_entries() const override;
  std::vector<AuditCheckpoint> audit_checkpoints() const override;
  long long add_audit_checkpoint(const AuditCheckpoint& checkpoint) override;
  std::optional<AuditCheckpoint> add_audit_checkpoint_if_due(
      long long every, const std::function<AuditCheckpoint(const AuditEntry& head)>& sign) override;
  std::vector<LedgerEntry> list() const override;
  std::vector<LedgerEvent> events() const override;
  bool has_serial(const std::string& serial_hex) const override;
  int schema_version() const override;

 private:
  SqliteLedger(sqlite3* db, std::string path);
  sqlite3* m_db;
  mutable std::mutex m_mutex;  // one connection, used from several threads
  mutable SqliteStatements m_stmts;  // under m_mutex

  // Group commit (record()): records waiting for the next transaction.
  struct Pending;
  std::mutex m_queue_mutex;
  std::condition_variable m_queue_cv;
  std::vector<Pending*> m_queue;
  bool m_committing = false;
  void commit_group(std::vector<Pending*>& group);
};

bool Ledger::is_postgres_url(const std::string& p) {
  return p.rfind("postgresql://", 0) == 0 || p.rfind("postgres://", 0) == 0;
}

std::unique_ptr<Ledger> Ledger::open(const std::string& path_or_url) {
  if (is_postgres_url(path_or_url)) return PgLedger::open(path_or_url);
  return SqliteLedger::open(path_or_url);
}

SqliteLedger::SqliteLedger(sqlite3* db, std::string path)
    : Ledger(std::move(path)), m_db(db), m_stmts(db, m_path) {}

SqliteLedger::~SqliteLedger() {
  m_stmts.clear();
  sqlite3_close_v2(m_db);
}

std::unique_ptr<Ledger> SqliteLedger::open(const std::string& path) {
  if (path.empty()) throw Error(ErrorKind::Io, "ledger: empty path");
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) make_folders(path.substr(0, slash));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  // The Ledger owns the handle from here on, even when opening failed.
  std::unique_ptr<SqliteLedger> ledger(new SqliteLedger(db, path));
  if (rc != SQLITE_OK) fail(db, path, "cannot open");
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  exec(db, path, "PRAGMA journal_mode=WAL", "setting WAL mode");
  exec(db, path, "PRAGMA synchronous=FULL", "setting synchronous=FULL");
  exec(db, path, "PRAGMA foreign_keys=ON", "enabling foreign keys");
  migrate(db, path);
  return ledger;
}

// What one certificate row holds, computed before any lock is taken.
LedgerEntry ledger_entry_for(const X509* cert, std::string* der_sha256) {
  LedgerEntry e;
  e.serial = serial_hex(X509_get0_serialNumber(cert));
  e.issuer = name_to_string(X509_get_issuer_name(cert));
  e.subject = name_to_string(X509_get_subject_name(cert));
  e.sans = join(SubjectAltNames::of_cert(cert).describe(), ", ");
  e.not_before = iso8601(asn1_time_to_time_t(X509_get0_notBefore(cert)));
  e.not_after = iso8601(asn1_time_to_time_t(X509_get0_notAfter(cert)));
  e.issued_at = iso8601(now());
  const std::string der = x509_to_der(cert);
  e.pem = der_to_pem(der, PEM_STRING_X509);
  if (der_sha256) *der_sha256 = sha256_hex(der);
  return e;
}

namespace {

// Inserts one certificate row and its `certificate-issued` audit entry inside the open transaction.
void insert_certificate(SqliteStatements& st, const LedgerEntry& e, const std::string& profile,
                        const std::string& requester, const std::string& request_id, const std::string& der_sha256) {
  sqlite3* db = st.db();
  const std::string& path = st.path();
  auto io_error = [&](const std::string& msg) {
    return Error(ErrorKind::Io, "ledger " + path + ": could not record certificate " + e.serial + ": " + msg);
  };
  {
    auto s = st.use(
        "INSERT INTO certificates(serial, issuer, subject, sans, not_before, not_after, profile, requester,"
        " issued_at, status, pem, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'issued', ?10, ?11)");
    const std::string* values[] = {&e.serial, &e.issuer, &e.subject, &e.sans, &e.not_before,
                                   &e.not_after, &profile, &requester, &e.issued_at, &e.pem};
    for (int i = 0; i < 10; ++i) bind_text(db, path, s.get(), i + 1, *values[i]);
    if (!request_id.empty()) bind_text(db, path, s.get(), 11, request_id);  // else NULL: not in the unique index
    int rc = sqlite3_step(s.get());
    if (rc != SQLITE_DONE) {
      int ext = sqlite3_extended_errcode(db);
      std::string msg = errmsg(db);
      if (ext == SQLITE_CONSTRAINT_UNIQUE && msg.find("request_id") != std::string::npos)
        throw Error(ErrorKind::Conflict, "request " + request_id + " already has a certificate in the ledger");
      if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE)
        throw Error(ErrorKind::Conflict, "serial " + e.serial + " already in the ledger");
      throw io_error(msg);
    }
  }
  const std::string detail = audit_detail_issued(e, profile, requester, der_sha256);
  try {
    append_audit_in_transaction(st, "certificate-issued", detail);
  } catch (const Error& err) {
    throw io_error(err.what());
  }
}

}  // namespace

struct SqliteLedger::Pending {
  LedgerEntry entry;
  std::string profile;
  std::string requester;
  std::string request_id;
  std::string der_sha256;
  std::exception_ptr error;
  bool done = false;
};

void SqliteLedger::record(const X509* cert, const std::string& profile, const std::string& requester,
                          const std::string& request_id) {
  Pending mine{{}, profile, requester, request_id, {}, nullptr, false};
  mine.entry = ledger_entry_for(cert, &mine.der_sha256);
  std::unique_lock<std::mutex> lk(m_queue_mutex);
  m_queue.push_back(&mine);
  while (!mine.done) {
    if (m_committing) {
      m_queue_cv.wait(lk);
      continue;
    }
    // Become the committer for everything queued so far (this record included).
    m_committing = true;
    std::vector<Pending*> group;
    group.swap(m_queue);
    lk.unlock();
    commit_group(group);
    lk.lock();
    for (Pending* p : group) p->done = true;
    m_committing = false;
    m_queue_cv.notify_all();
  }
  if (mine.error) std::rethrow_exception(mine.error);
}

void SqliteLedger::commit_group(std::vector<Pending*>& group) {
  std::lock_guard<std::mutex> lock(m_mutex);
  auto fail_all = [&](const std::string& msg) {
    for (Pending* p : group)
      if (!p->error)
        p->error = std::make_exception_ptr(
            Error(ErrorKind::Io, "ledger " + m_path + ": could not record certificate " + p->entry.serial + ": " + msg));
  };
  if (sqlite3_exec(m_db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    fail_all(errmsg(m_db));
    return;
  }
  size_t recorded = 0;
  for (Pending* p : group) {
    // A savepoint per record: one refused record (a duplicate serial, a trigger) fails alone.
    if (sqlite3_exec(m_db, "SAVEPOINT one", nullptr, nullptr, nullptr) != SQLITE_OK) {
      p->error = std::make_exception_ptr(Error(ErrorKind::Io, "ledger " + m_path + ": " + errmsg(m_db)));
      continue;
    }
    try {
      insert_certificate(m_stmts, p->entry, p->profile, p->requester, p->request_id, p->der_sha256);
      sqlite3_exec(m_db, "RELEASE one", nullptr, nullptr, nullptr);
      ++recorded;
    } catch (...) {
      p->error = std::current_exception();
      sqlite3_exec(m_db, "ROLLBACK TO one", nullptr, nullptr, nullptr);
      sqlite3_exec(m_db, "RELEASE one", nullptr, nullptr, nullptr);
    }
  }
  if (sqlite3_exec(m_db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    std::string msg = errmsg(m_db);
    rollback(m_db);
    for (Pending* p : group) p->error = nullptr;
    fail_all(msg);
  }
  (void)recorded;
}

void SqliteLedger::record_batch(const std::vector<BatchItem>& items) {
  if (items.empty()) return;
  std::vector<LedgerEntry> entries;
  std::vector<std::string> hashes;
  entries.reserve(items.size());
  hashes.reserve(items.size());
  for (const auto& it : items) {
    hashes.emplace_back();
    entries.push_back(ledger_entry_for(it.cert, &hashes.back()));
  }
  std::lock_guard<std::mutex> lock(m_mutex);
  if (sqlite3_exec(m_db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
    throw Error(ErrorKind::Io, "ledger " + m_path + ": could not record " + std::to_string(items.size()) +
                                   " certificates: " + errmsg(m_db));
  try {
    for (size_t i = 0; i < items.size(); ++i)
      insert_certificate(m_stmts, entries[i], items[i].profile, items[i].requester, items[i].request_id,
                         hashes[i]);
    if (sqlite3_exec(m_db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK)
      throw Error(ErrorKind::Io, "ledger " + m_path + ": could not commit " + std::to_string(items.size()) +
                                     " certificates: " + errmsg(m_db));
  } catch (...) {
    rollback(m_db);
    throw;
  }
  // Recorded: the caller may have the PEM the row holds.
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].pem) *items[i].pem = std::move(entries[i].pem);
}

void SqliteLedger::record_event(const std::string& kind, const std::string& detail) {
  std::lock_guard<std::mutex> lock(m_mutex);
  in_transaction(m_db, m_path, "could not record the event '" + kind + "'", [&] {
    Stmt s = prepare(m_db, m_path, "INSERT INTO events(at, kind, detail) VALUES (?1, ?2, ?3)");
    bind_text(m_db, m_path, s.get(), 1, iso8601(now()));
    bind_text(m_db, m_path, s.get(), 2, kind);
    bind_text(m_db, m_path, s.get(), 3, detail);
    if (sqlite3_step(s.get()) != SQLITE_DONE) fail(m_db, m_path, "could not record the event '" + kind + "'");
    s.reset();
    append_audit_in_transaction(m_stmts, kind, audit_detail_event(detail));
    return 0;
  });
}

LedgerEntry SqliteLedger::revoke(const std::string& serial, const std::string& reason, std::time_t revoked_at) {
  std::lock_guard<std::mutex> lock(m_mutex);
  return in_transaction(m_db, m_path, "could not revoke " + serial, [&] {
    Stmt q = prepare(m_db, m_path, (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE serial = ?1").c_str());
    bind_text(m_db, m_path, q.get(), 1, serial);
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) throw Error(ErrorKind::NotFound, "serial " + serial + " is not in the ledger " + m_path);
    if (rc != SQLITE_ROW) fail(m_db, m_path, "looking up a serial");
    LedgerEntry e = cert_row(q.get());
    q.reset();
    if (e.status == "revoked")
      throw Error(ErrorKind::Conflict, "serial " + serial + " was already revoked at " + e.revoked_at + " (" +
                                           e.revocation_reason + ")");
    e.status = "revoked";
    e.revoked_at = iso8601(revoked_at);
    e.revocation_reason = reason;
    Stmt u = prepare(m_db, m_path,
                     "UPDATE certificates SET status = 'revoked', revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1");
    bind_text(m_db, m_path, u.get(), 1, serial);
    bind_text(m_db, m_path, u.get(), 2, e.revoked_at);
    bind_text(m_db, m_path, u.get(), 3, reason);
    if (sqlite3_step(u.get()) != SQLITE_DONE) fail(m_db, m_path, "could not revoke " + serial);
    u.reset();
    append_audit_in_transaction(m_stmts, "certificate-revoked",
                                audit_detail_revoked(serial, e, reason));
    return e;
  });
}

void SqliteLedger::mark_orphaned(const std::string& serial, const std::string& why) {
  std::lock_guard<std::mutex> lock(m_mutex);
  in_transaction(m_db, m_path, "could not mark " + serial + " orphaned", [&] {
    Stmt q = prepare(m_db, m_path, (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE serial = ?1").c_str());
    bind_text(m_db, m_path, q.get(), 1, serial);
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) throw Error(ErrorKind::NotFound, "serial " + serial + " is not in the ledger " + m_path);
    if (rc != SQLITE_ROW) fail(m_db, m_path, "looking up a serial");
    LedgerEntry e = cert_row(q.get());
    q.reset();
    if (e.status != "issued")
      throw Error(ErrorKind::Conflict, "serial " + serial + " is " + e.status + ", not issued: it cannot be marked orphaned");
    Stmt u = prepare(m_db, m_path, "UPDATE certificates SET status = 'orphaned' WHERE serial = ?1");
    bind_text(m_db, m_path, u.get(), 1, serial);
    if (sqlite3_step(u.get()) != SQLITE_DONE) fail(m_db, m_path, "could not mark " + serial + " orphaned");
    u.reset();
    append_audit_in_transaction(m_stmts, "certificate-orphaned", audit_detail_orphaned(e, why));
    return 0;
  });
}

std::optional<LedgerEntry> SqliteLedger::find_by_request_id(const std::string& request_id) const {
  if (request_id.empty()) return std::nullopt;
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt q = prepare(m_db, m_path,
                   (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE request_id = ?1").c_str());
  bind_text(m_db, m_path, q.get(), 1, request_id);
  int rc = sqlite3_step(q.get());
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) fail(m_db, m_path, "looking up a request");
  return cert_row(q.get());
}

std::vector<LedgerEntry> SqliteLedger::request_ids_with_prefix(const std::string& prefix) const {
  if (prefix.empty()) throw Error(ErrorKind::Internal, "request_ids_with_prefix: empty prefix");
  // A range on the request_id index (BINARY collation: byte order): [prefix, prefix with its last byte + 1).
  std::string end = prefix;
  while (!end.empty() && static_cast<unsigned char>(end.back()) == 0xff) end.pop_back();
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt q = prepare(m_db, m_path,
                   end.empty() ? "SELECT serial, status, request_id FROM certificates WHERE request_id >= ?1 ORDER BY rowid"
                               : "SELECT serial, status, request_id FROM certificates WHERE request_id >= ?1 AND "
                                 "request_id < ?2 ORDER BY rowid");
  bind_text(m_db, m_path, q.get(), 1, prefix);
  if (!end.empty()) {
    end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
    bind_text(m_db, m_path, q.get(), 2, end);
  }
  std::vector<LedgerEntry> out;
  int rc = 0;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    LedgerEntry e;
    e.serial = column_text(q.get(), 0);
    e.status = column_text(q.get(), 1);
    e.request_id = column_text(q.get(), 2);
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) fail(m_db, m_path, "listing request ids");
  return out;
}

std::optional<LedgerEntry> SqliteLedger::find(const std::string& serial) const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt q = prepare(m_db, m_path, (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE serial = ?1").c_str());
  bind_text(m_db, m_path, q.get(), 1, serial);
  int rc = sqlite3_step(q.get());
  if (rc == SQLITE_ROW) return cert_row(q.get());
  if (rc == SQLITE_DONE) return std::nullopt;
  fail(m_db, m_path, "looking up a serial");
}

std::vector<LedgerEntry> SqliteLedger::revoked_by(const std::string& issuer) const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt q = prepare(m_db, m_path,
                   (std::string("SELECT ") + kCertColumns +
                    " FROM certificates WHERE status = 'revoked' AND issuer = ?1 ORDER BY revoked_at, rowid")
                       .c_str());
  bind_text(m_db, m_path, q.get(), 1, issuer);
  std::vector<LedgerEntry> out;
  int rc = 0;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) out.push_back(cert_row(q.get()));
  if (rc != SQLITE_DONE) fail(m_db, m_path, "listing revoked certificates");
  return out;
}

long long SqliteLedger::next_crl_number(const std::string& issuer_key_id, const std::string& issuer) {
  std::lock_guard<std::mutex> lock(m_mutex);
  return in_transaction(m_db, m_path, "could not draw a CRL number", [&] {
    Stmt u = prepare(m_db, m_path,
                     "INSERT INTO crl_numbers(issuer_key_id, issuer, last_number) VALUES (?1, ?2, 1)"
                     " ON CONFLICT(issuer_key_id) DO UPDATE SET last_number = last_number + 1, issuer = ?2");
    bind_text(m_db, m_path, u.get(), 1, issuer_key_id);
    bind_text(m_db, m_path, u.get(), 2, issuer);
    if (sqlite3_step(u.get()) != SQLITE_DONE) fail(m_db, m_path, "could not draw a CRL number");
    u.reset();
    Stmt q = prepare(m_db, m_path, "SELECT last_number FROM crl_numbers WHERE issuer_key_id = ?1");
    bind_text(m_db, m_path, q.get(), 1, issuer_key_id);
    if (sqlite3_step(q.get()) != SQLITE_ROW) fail(m_db, m_path, "could not read the CRL number");
    long long number = sqlite3_column_int64(q.get(), 0);
    q.reset();
    append_audit_in_transaction(m_stmts, "crl-number",
                                audit_detail_crl_number(issuer, issuer_key_id, number));
    return number;
  });
}

AuditEntry SqliteLedger::append_audit(const std::string& kind, const std::string& detail_json) {
  std::lock_guard<std::mutex> lock(m_mutex);
  return in_transaction(m_db, m_path, "could not append the audit event '" + kind + "'",
                        [&] { return append_audit_in_transaction(m_stmts, kind, detail_json); });
}

std::optional<AuditEntry> SqliteLedger::audit_head() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  return read_audit_head(m_stmts);
}

std::vector<AuditEntry> SqliteLedger::audit_entries() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path, (std::string("SELECT ") + kAuditColumns + " FROM audit_events ORDER BY id").c_str());
  std::vector<AuditEntry> out;
  int rc = 0;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(audit_row(s.get()));
  if (rc != SQLITE_DONE) fail(m_db, m_path, "reading the audit chain");
  return out;
}

std::vector<AuditCheckpoint> SqliteLedger::audit_checkpoints() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path,
                   "SELECT id, entry_id, head_hash, count, at, signature, key_uri, public_key FROM audit_checkpoints ORDER BY id");
  std::vector<AuditCheckpoint> out;
  int rc = 0;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    AuditCheckpoint c;
    c.id = sqlite3_column_int64(s.get(), 0);
    c.entry_id = sqlite3_column_int64(s.get(), 1);
    c.head_hash = column_text(s.get(), 2);
    c.count = sqlite3_column_int64(s.get(), 3);
    c.at = column_text(s.get(), 4);
    c.signature = column_text(s.get(), 5);
    c.key_uri = column_text(s.get(), 6);
    c.public_key = column_text(s.get(), 7);
    out.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) fail(m_db, m_path, "reading the audit checkpoints");
  return out;
}

namespace {

long long insert_checkpoint(sqlite3* db, const std::string& path, const AuditCheckpoint& c) {
  Stmt s = prepare(db, path,
                   "INSERT INTO audit_checkpoints(entry_id, head_hash, count, at, signature, key_uri, public_key)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  if (sqlite3_bind_int64(s.get(), 1, c.entry_id) != SQLITE_OK || sqlite3_bind_int64(s.get(), 3, c.count) != SQLITE_OK)
    fail(db, path, "binding a value");
  bind_text(db, path, s.get(), 2, c.head_hash);
  bind_text(db, path, s.get(), 4, c.at);
  bind_text(db, path, s.get(), 5, c.signature);
  bind_text(db, path, s.get(), 6, c.key_uri);
  bind_text(db, path, s.get(), 7, c.public_key);
  if (sqlite3_step(s.get()) != SQLITE_DONE) fail(db, path, "could not store the audit checkpoint");
  return static_cast<long long>(sqlite3_last_insert_rowid(db));
}

}  // namespace

std::optional<AuditCheckpoint> SqliteLedger::add_audit_checkpoint_if_due(
    long long every, const std::function<AuditCheckpoint(const AuditEntry& head)>& sign) {
  std::lock_guard<std::mutex> lock(m_mutex);
  // BEGIN IMMEDIATE: the database's write lock, the one every appender of the chain takes.
  return in_transaction(m_db, m_path, "could not store the audit checkpoint", [&]() -> std::optional<AuditCheckpoint> {
    auto head = read_audit_head(m_stmts);
    if (!head) return std::nullopt;
    Stmt q = prepare(m_db, m_path, "SELECT COALESCE(MAX(entry_id), 0) FROM audit_checkpoints");
    if (sqlite3_step(q.get()) != SQLITE_ROW) fail(m_db, m_path, "reading the newest audit checkpoint");
    const long long newest = sqlite3_column_int64(q.get(), 0);
    q.reset();
    if (head->id - newest < every) return std::nullopt;
    AuditCheckpoint cp = sign(*head);
    cp.id = insert_checkpoint(m_db, m_path, cp);
    return cp;
  });
}

long long SqliteLedger::add_audit_checkpoint(const AuditCheckpoint& c) {
  std::lock_guard<std::mutex> lock(m_mutex);
  return in_transaction(m_db, m_path, "could not store the audit checkpoint", [&] {
    return insert_checkpoint(m_db, m_path, c);
  });
}

std::vector<LedgerEntry> SqliteLedger::list() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path, (std::string("SELECT ") + kCertColumns + " FROM certificates ORDER BY issued_at, rowid").c_str());
  std::vector<LedgerEntry> out;
  int rc = 0;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(cert_row(s.get()));
  if (rc != SQLITE_DONE) fail(m_db, m_path, "listing certificates");
  return out;
}

std::vector<LedgerEvent> SqliteLedger::events() const {
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

bool SqliteLedger::has_serial(const std::string& serial_hex_value) const {
  std::lock_guard<std::mutex> lock(m_mutex);
  Stmt s = prepare(m_db, m_path, "SELECT 1 FROM certificates WHERE serial = ?1");
  bind_text(m_db, m_path, s.get(), 1, serial_hex_value);
  int rc = sqlite3_step(s.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(m_db, m_path, "looking up a serial");
}

int SqliteLedger::schema_version() const {
  std::lock_guard<std::mutex> lock(m_mutex);
  return read_version(m_db, m_path);
}

std::string hwca_home() {
  const char* home = std::getenv("HWCA_HOME");
  if (home && *home) return home;
  return "./.hwca";
}

std::string default_ledger_path() { return hwca_home() + "/ledger.db"; }

std::string audit_detail_issued(const LedgerEntry& e, const std::string& profile, const std::string& requester,
                                const std::string& der_sha256) {
  return nlohmann::json{{"serial", e.serial},     {"subject", e.subject},     {"issuer", e.issuer},
                        {"sans", e.sans},         {"not_after", e.not_after}, {"profile", profile},
                        {"requester", requester}, {"sha256", der_sha256}}
      .dump();
}

std::string audit_detail_event(const std::string& detail) { return nlohmann::json{{"detail", detail}}.dump(); }

std::string audit_detail_revoked(const std::string& serial, const LedgerEntry& e, const std::string& reason) {
  return nlohmann::json{{"serial", serial}, {"subject", e.subject}, {"issuer", e.issuer},
                        {"reason", reason}, {"revoked_at", e.revoked_at}}
      .dump();
}

std::string audit_detail_orphaned(const LedgerEntry& e, const std::string& why) {
  return nlohmann::json{{"serial", e.serial}, {"subject", e.subject}, {"issuer", e.issuer}, {"why", why}}.dump();
}

std::string audit_detail_crl_number(const std::string& issuer, const std::string& issuer_key_id, long long number) {
  return nlohmann::json{{"issuer", issuer}, {"issuer_key", issuer_key_id}, {"number", number}}.dump();
}

}  // namespace hwca::core
