#include "core/ledger_pg.h"

#include "core/base/error.h"
#include "core/x509.h"

#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <dlfcn.h>
#include <regex>

namespace hwca::core {

namespace {

// libpq is loaded when a PostgreSQL ledger is first opened, not when hwca starts: with what it needs
// (Kerberos, LDAP, SASL, GnuTLS, ...) it is twenty shared libraries, and loading and relocating them was
// about half of every hwca command's start-up time. The handle stays open for the life of the process.
struct Libpq {
  decltype(&::PQclear) PQclear;
  decltype(&::PQconnectdb) PQconnectdb;
  decltype(&::PQconsumeInput) PQconsumeInput;
  decltype(&::PQerrorMessage) PQerrorMessage;
  decltype(&::PQexec) PQexec;
  decltype(&::PQexecParams) PQexecParams;
  decltype(&::PQfinish) PQfinish;
  decltype(&::PQgetisnull) PQgetisnull;
  decltype(&::PQgetlength) PQgetlength;
  decltype(&::PQgetvalue) PQgetvalue;
  decltype(&::PQisBusy) PQisBusy;
  decltype(&::PQntuples) PQntuples;
  decltype(&::PQresultErrorField) PQresultErrorField;
  decltype(&::PQresultStatus) PQresultStatus;
  decltype(&::PQsetNoticeProcessor) PQsetNoticeProcessor;
  decltype(&::PQstatus) PQstatus;
  decltype(&::PQtransactionStatus) PQtransactionStatus;
};

template <typename F>
F symbol(void* handle, const char* name) {
  void* f = ::dlsym(handle, name);
  if (!f) throw Error(ErrorKind::Io, std::string("the PostgreSQL ledger: libpq.so.5 has no ") + name);
  return reinterpret_cast<F>(f);
}

Libpq load_libpq() {
  void* handle = ::dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = ::dlerror();
    throw Error(ErrorKind::Io, std::string("the PostgreSQL ledger needs libpq (libpq.so.5, Debian package libpq5): ") +
                                   (why ? why : "cannot load it"));
  }
  Libpq api{};
  api.PQclear = symbol<decltype(&::PQclear)>(handle, "PQclear");
  api.PQconnectdb = symbol<decltype(&::PQconnectdb)>(handle, "PQconnectdb");
  api.PQconsumeInput = symbol<decltype(&::PQconsumeInput)>(handle, "PQconsumeInput");
  api.PQerrorMessage = symbol<decltype(&::PQerrorMessage)>(handle, "PQerrorMessage");
  api.PQexec = symbol<decltype(&::PQexec)>(handle, "PQexec");
  api.PQexecParams = symbol<decltype(&::PQexecParams)>(handle, "PQexecParams");
  api.PQfinish = symbol<decltype(&::PQfinish)>(handle, "PQfinish");
  api.PQgetisnull = symbol<decltype(&::PQgetisnull)>(handle, "PQgetisnull");
  api.PQgetlength = symbol<decltype(&::PQgetlength)>(handle, "PQgetlength");
  api.PQgetvalue = symbol<decltype(&::PQgetvalue)>(handle, "PQgetvalue");
  api.PQisBusy = symbol<decltype(&::PQisBusy)>(handle, "PQisBusy");
  api.PQntuples = symbol<decltype(&::PQntuples)>(handle, "PQntuples");
  api.PQresultErrorField = symbol<decltype(&::PQresultErrorField)>(handle, "PQresultErrorField");
  api.PQresultStatus = symbol<decltype(&::PQresultStatus)>(handle, "PQresultStatus");
  api.PQsetNoticeProcessor = symbol<decltype(&::PQsetNoticeProcessor)>(handle, "PQsetNoticeProcessor");
  api.PQstatus = symbol<decltype(&::PQstatus)>(handle, "PQstatus");
  api.PQtransactionStatus = symbol<decltype(&::PQtransactionStatus)>(handle, "PQtransactionStatus");
  return api;
}

// Loaded once (a failed load is tried again on the next call).
const Libpq& pq() {
  static const Libpq api = load_libpq();
  return api;
}

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { pq().PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

constexpr const char* kUniqueViolation = "23505";

std::string conn_error(PGconn* c) {
  std::string msg = c ? pq().PQerrorMessage(c) : "out of memory";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  for (char& ch : msg)
    if (ch == '\n') ch = ' ';
  return msg.empty() ? "unknown error" : msg;
}

std::string sqlstate(const PGresult* r) {
  const char* s = r ? pq().PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return s ? s : "";
}

// A statement failed with this SQLSTATE; `what` says what was being done.
struct PgFailure : Error {
  PgFailure(const std::string& message, std::string state)
      : Error(ErrorKind::Io, message), sqlstate(std::move(state)) {}
  std::string sqlstate;
};

// Runs `sql` with text parameters. Throws PgFailure (Error(Io)) unless the result is a command or tuples.
Result run(PGconn* c, const std::string& name, const std::string& what, const char* sql,
           const std::vector<std::string>& params = {}) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  Result r(pq().PQexecParams(c, sql, static_cast<int>(params.size()), nullptr, values.empty() ? nullptr : values.data(),
                        nullptr, nullptr, 0));
  ExecStatusType st = r ? pq().PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    throw PgFailure("ledger " + name + ": " + what + ": " + conn_error(c), sqlstate(r.get()));
  return r;
}

std::string text(const PGresult* r, int row, int col) {
  if (pq().PQgetisnull(r, row, col)) return {};
  return std::string(pq().PQgetvalue(r, row, col), static_cast<size_t>(pq().PQgetlength(r, row, col)));
}

long long integer(const PGresult* r, int row, int col) { return std::strtoll(pq().PQgetvalue(r, row, col), nullptr, 10); }

// Schema migrations: kMigrations[n] takes the schema from version n to n + 1 (as the SQLite ledger's).
// certificates.seq orders rows as SQLite's rowid does.
const char* const kMigrations[] = {
    "CREATE TABLE certificates ("
    "  serial TEXT PRIMARY KEY,"
    "  seq BIGSERIAL NOT NULL,"
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
    "  id BIGSERIAL PRIMARY KEY,"
    "  at TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  detail TEXT NOT NULL);",
    "ALTER TABLE certificates ADD COLUMN revoked_at TEXT;"
    "ALTER TABLE certificates ADD COLUMN revocation_reason TEXT;"
    "CREATE TABLE crl_numbers ("
    "  issuer_key_id TEXT PRIMARY KEY,"
    "  issuer TEXT NOT NULL,"
    "  last_number BIGINT NOT NULL);"
    "CREATE TABLE audit_events ("
    "  id BIGINT PRIMARY KEY,"
    "  at TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  detail TEXT NOT NULL,"
    "  prev_hash TEXT NOT NULL,"
    "  hash TEXT NOT NULL);"
    "CREATE TABLE audit_checkpoints ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  entry_id BIGINT NOT NULL,"
    "  head_hash TEXT NOT NULL,"
    "  count BIGINT NOT NULL,"
    "  at TEXT NOT NULL,"
    "  signature TEXT NOT NULL,"
    "  key_uri TEXT NOT NULL,"
    "  public_key TEXT NOT NULL);",
    // one literal: clang's -Wstring-concatenation takes two adjacent ones in an array for a missing comma
    "ALTER TABLE certificates ADD COLUMN request_id TEXT; CREATE UNIQUE INDEX certificates_request_id ON certificates(request_id) WHERE request_id IS NOT NULL;",
};
static_assert(sizeof kMigrations / sizeof kMigrations[0] == Ledger::kSchemaVersion);

const char* kCertColumns =
    "serial, issuer, subject, sans, not_before, not_after, profile, requester, issued_at, status, pem, revoked_at,"
    " revocation_reason, request_id";

LedgerEntry cert_row(const PGresult* r, int row) {
  LedgerEntry e;
  e.serial = text(r, row, 0);
  e.issuer = text(r, row, 1);
  e.subject = text(r, row, 2);
  e.sans = text(r, row, 3);
  e.not_before = text(r, row, 4);
  e.not_after = text(r, row, 5);
  e.profile = text(r, row, 6);
  e.requester = text(r, row, 7);
  e.issued_at = text(r, row, 8);
  e.status = text(r, row, 9);
  e.pem = text(r, row, 10);
  e.revoked_at = text(r, row, 11);
  e.revocation_reason = text(r, row, 12);
  e.request_id = text(r, row, 13);
  return e;
}

AuditEntry audit_row(const PGresult* r, int row) {
  AuditEntry e;
  e.id = integer(r, row, 0);
  e.at = text(r, row, 1);
  e.kind = text(r, row, 2);
  e.detail = text(r, row, 3);
  e.prev_hash = text(r, row, 4);
  e.hash = text(r, row, 5);
  return e;
}

std::optional<AuditEntry> read_audit_head(PGconn* c, const std::string& name) {
  Result r = run(c, name, "reading the audit chain head",
                 "SELECT id, at, kind, detail, prev_hash, hash FROM audit_events ORDER BY id DESC LIMIT 1");
  if (pq().PQntuples(r.get()) == 0) return std::nullopt;
  return audit_row(r.get(), 0);
}

// Takes the audit chain lock (released at COMMIT/ROLLBACK), reads the head and appends one entry. Inside an
// open transaction.
AuditEntry append_audit_locked(PGconn* c, const std::string& name, const std::string& kind, const std::string& detail) {
  run(c, name, "locking the audit chain", "SELECT pg_advisory_xact_lock($1::bigint)",
      {std::to_string(PgLedger::kAuditLockKey)});
  AuditEntry e = next_audit_entry(read_audit_head(c, name), iso8601(now()), kind, detail);
  run(c, name, "appending the audit event '" + kind + "'",
      "INSERT INTO audit_events(id, at, kind, detail, prev_hash, hash) VALUES ($1::bigint, $2, $3, $4, $5, $6)",
      {std::to_string(e.id), e.at, e.kind, e.detail, e.prev_hash, e.hash});
  return e;
}

// Runs `body` inside BEGIN ... COMMIT; rolls back on any exception (a broken connection is left to the
// pool to discard).
template <typename Fn>
auto in_transaction(PGconn* c, const std::string& name, const std::string& what, Fn&& body) {
  run(c, name, what + ": starting a transaction", "BEGIN");
  try {
    auto result = body();
    run(c, name, what + ": committing", "COMMIT");
    return result;
  } catch (...) {
    if (pq().PQstatus(c) == CONNECTION_OK) pq().PQclear(pq().PQexec(c, "ROLLBACK"));
    throw;
  }
}

// Inserts one certificate row and its audit entry inside the open transaction.
void insert_certificate(PGconn* c, const std::string& name, const LedgerEntry& e, const std::string& profile,
                        const std::string& requester, const std::string& request_id, const std::string& der_sha256) {
  // The chain lock first: every writer takes it before anything else, so no two writers wait on each other
  // in opposite orders.
  run(c, name, "locking the audit chain", "SELECT pg_advisory_xact_lock($1::bigint)",
      {std::to_string(PgLedger::kAuditLockKey)});
  try {
    run(c, name, "could not record certificate " + e.serial,
        "INSERT INTO certificates(serial, issuer, subject, sans, not_before, not_after, profile, requester,"
        " issued_at, status, pem, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'issued', $10, NULLIF($11, ''))",
        {e.serial, e.issuer, e.subject, e.sans, e.not_before, e.not_after, profile, requester, e.issued_at, e.pem,
         request_id});
  } catch (const PgFailure& f) {
    if (f.sqlstate == kUniqueViolation && std::string(f.what()).find("request_id") != std::string::npos)
      throw Error(ErrorKind::Conflict, "request " + request_id + " already has a certificate in the ledger");
    if (f.sqlstate == kUniqueViolation)
      throw Error(ErrorKind::Conflict, "serial " + e.serial + " already in the ledger");
    throw;
  }
  const std::string detail = audit_detail_issued(e, profile, requester, der_sha256);
  append_audit_locked(c, name, "certificate-issued", detail);
}

// An idle connection the server closed (FATAL, then EOF) is found without a round trip: read what arrived
// (libpq's socket is non-blocking), let libpq parse it (the FATAL goes to the notice processor), and read
// again to see the EOF.
bool still_open(PGconn* c) {
  for (int i = 0; i < 2; ++i) {
    if (pq().PQconsumeInput(c) == 0 || pq().PQstatus(c) != CONNECTION_OK) return false;
    (void)pq().PQisBusy(c);
  }
  return pq().PQstatus(c) == CONNECTION_OK && pq().PQtransactionStatus(c) == PQTRANS_IDLE;
}

// Server messages outside a query (a restart's FATAL) are not printed: the failure they announce surfaces
// as Error(Io) from the call that meets it.
void ignore_notice(void*, const char*) {}

}  // namespace

// One pooled connection for the length of a call.
class PgLedger::Lease {
 public:
  explicit Lease(const PgLedger& owner) : m_owner(owner), m_conn(owner.acquire()) {}
  ~Lease() { m_owner.release(m_conn); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  PGconn* get() const { return m_conn; }

 private:
  const PgLedger& m_owner;
  PGconn* m_conn;
};

std::string PgLedger::display_name(const std::string& url) {
  std::string out = url;
  // userinfo "user:password@" -> "user@"
  auto scheme_end = out.find("://");
  if (scheme_end != std::string::npos) {
    size_t start = scheme_end + 3;
    size_t end = out.find_first_of("/?", start);
    size_t at = out.rfind('@', end == std::string::npos ? std::string::npos : end);
    if (at != std::string::npos && at >= start) {
      size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.erase(colon, at - colon);
    }
  }
  // ?password=... / &password=...
  static const std::regex kPasswordParam("([?&])password=[^&]*", std::regex::icase);
  return std::regex_replace(out, kPasswordParam, "$1password=***");
}

PgLedger::PgLedger(std::string url, std::string display) : Ledger(std::move(display)), m_url(std::move(url)) {}

PgLedger::~PgLedger() {
  for (PGconn* c : m_idle) pq().PQfinish(c);
}

PGconn* PgLedger::acquire() const {
  {
    std::unique_lock<std::mutex> lk(m_pool_mutex);
    while (true) {
      m_pool_cv.wait(lk, [&] { return !m_idle.empty() || m_open < kMaxConnections; });
      if (m_idle.empty()) break;
      PGconn* c = m_idle.back();
      m_idle.pop_back();
      // An idle connection the server has closed since (a restart: it sent FATAL and closed the socket) is
      // seen here without a round trip (libpq's socket is non-blocking), and replaced by a new one.
      if (still_open(c)) return c;
      pq().PQfinish(c);
      --m_open;
    }
    ++m_open;
  }
  PGconn* c = pq().PQconnectdb(m_url.c_str());
  if (!c || pq().PQstatus(c) != CONNECTION_OK) {
    std::string msg = conn_error(c);
    pq().PQfinish(c);
    {
      std::lock_guard<std::mutex> lk(m_pool_mutex);
      --m_open;
    }
    m_pool_cv.notify_one();
    throw Error(ErrorKind::Io, "ledger " + m_path + ": cannot connect: " + msg);
  }
  pq().PQsetNoticeProcessor(c, &ignore_notice, nullptr);
  pq().PQclear(pq().PQexec(c, "SET client_min_messages = warning"));
  return c;
}

void PgLedger::release(PGconn* c) const {
  std::vector<PGconn*> close;
  {
    std::lock_guard<std::mutex> lk(m_pool_mutex);
    if (pq().PQstatus(c) == CONNECTION_OK && pq().PQtransactionStatus(c) == PQTRANS_IDLE) {
      m_idle.push_back(c);
    } else {
      // A broken connection, or one left inside a transaction, is closed; the next call opens a new one.
      // When the connection broke, the idle ones most likely did too (the server restarted): close them
      // as well, so that each of them does not fail one more request.
      close.push_back(c);
      if (pq().PQstatus(c) != CONNECTION_OK) {
        close.insert(close.end(), m_idle.begin(), m_idle.end());
        m_idle.clear();
      }
      m_open -= close.size();
    }
  }
  for (PGconn* x : close) pq().PQfinish(x);
  m_pool_cv.notify_all();
}

std::unique_ptr<Ledger> PgLedger::open(const std::string& url) {
  std::unique_ptr<PgLedger> ledger(new PgLedger(url, display_name(url)));
  Lease lease(*ledger);
  PGconn* c = lease.get();
  const std::string& name = ledger->m_path;
  while (true) {
    bool done = in_transaction(c, name, "migrating the schema", [&] {
      // Two processes starting at once must not both migrate.
      run(c, name, "locking the schema", "SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kMigrateLockKey)});
      run(c, name, "creating schema_version", "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
      Result r = run(c, name, "reading the schema version", "SELECT version FROM schema_version LIMIT 1");
      int version = pq().PQntuples(r.get()) == 0 ? 0 : static_cast<int>(integer(r.get(), 0, 0));
      if (version > kSchemaVersion)
        throw Error(ErrorKind::Io, "ledger " + name + " has schema version " + std::to_string(version) +
                                       ", newer than this hwca knows (" + std::to_string(kSchemaVersion) +
                                       "); use a newer hwca");
      if (version == kSchemaVersion) return true;
      // Constant SQL with several statements: the simple query protocol.
      Result m(pq().PQexec(c, kMigrations[version]));
      if (!m || pq().PQresultStatus(m.get()) != PGRES_COMMAND_OK)
        throw Error(ErrorKind::Io, "ledger " + name + ": migrating the schema to version " + std::to_string(version + 1) +
                                       ": " + conn_error(c));
      run(c, name, "updating the schema version", "DELETE FROM schema_version");
      run(c, name, "updating the schema version", "INSERT INTO schema_version(version) VALUES ($1::integer)",
          {std::to_string(version + 1)});
      return false;
    });
    if (done) break;
  }
  return ledger;
}

void PgLedger::record(const X509* cert, const std::string& profile, const std::string& requester,
                      const std::string& request_id) {
  std::string der_sha256;
  LedgerEntry e = ledger_entry_for(cert, &der_sha256);
  Lease lease(*this);
  in_transaction(lease.get(), m_path, "could not record certificate " + e.serial, [&] {
    insert_certificate(lease.get(), m_path, e, profile, requester, request_id, der_sha256);
    return 0;
  });
}

void PgLedger::record_batch(const std::vector<BatchItem>& items) {
  if (items.empty()) return;
  std::vector<LedgerEntry> entries;
  std::vector<std::string> hashes;
  for (const auto& it : items) {
    hashes.emplace_back();
    entries.push_back(ledger_entry_for(it.cert, &hashes.back()));
  }
  Lease lease(*this);
  in_transaction(lease.get(), m_path, "could not record " + std::to_string(items.size()) + " certificates", [&] {
    for (size_t i = 0; i < items.size(); ++i)
      insert_certificate(lease.get(), m_path, entries[i], items[i].profile, items[i].requester, items[i].request_id,
                         hashes[i]);
    return 0;
  });
  // Recorded: the caller may have the PEM the row holds.
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].pem) *items[i].pem = std::move(entries[i].pem);
}

void PgLedger::record_event(const std::string& kind, const std::string& detail) {
  Lease lease(*this);
  PGconn* c = lease.get();
  in_transaction(c, m_path, "could not record the event '" + kind + "'", [&] {
    run(c, m_path, "locking the audit chain", "SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kAuditLockKey)});
    run(c, m_path, "could not record the event '" + kind + "'", "INSERT INTO events(at, kind, detail) VALUES ($1, $2, $3)",
        {iso8601(now()), kind, detail});
    append_audit_locked(c, m_path, kind, audit_detail_event(detail));
    return 0;
  });
}

LedgerEntry PgLedger::revoke(const std::string& serial, const std::string& reason, std::time_t revoked_at) {
  Lease lease(*this);
  PGconn* c = lease.get();
  return in_transaction(c, m_path, "could not revoke " + serial, [&] {
    run(c, m_path, "locking the audit chain", "SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kAuditLockKey)});
    Result q = run(c, m_path, "looking up a serial",
                   (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE serial = $1 FOR UPDATE").c_str(),
                   {serial});
    if (pq().PQntuples(q.get()) == 0) throw Error(ErrorKind::NotFound, "serial " + serial + " is not in the ledger " + m_path);
    LedgerEntry e = cert_row(q.get(), 0);
    if (e.status == "revoked")
      throw Error(ErrorKind::Conflict, "serial " + serial + " was already revoked at " + e.revoked_at + " (" +
                                           e.revocation_reason + ")");
    e.status = "revoked";
    e.revoked_at = iso8601(revoked_at);
    e.revocation_reason = reason;
    run(c, m_path, "could not revoke " + serial,
        "UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3 WHERE serial = $1",
        {serial, e.revoked_at, reason});
    append_audit_locked(c, m_path, "certificate-revoked",
                        audit_detail_revoked(serial, e, reason));
    return e;
  });
}

void PgLedger::mark_orphaned(const std::string& serial, const std::string& why) {
  Lease lease(*this);
  PGconn* c = lease.get();
  in_transaction(c, m_path, "could not mark " + serial + " orphaned", [&] {
    run(c, m_path, "locking the audit chain", "SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kAuditLockKey)});
    Result q = run(c, m_path, "looking up a serial",
                   (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE serial = $1 FOR UPDATE").c_str(),
                   {serial});
    if (pq().PQntuples(q.get()) == 0) throw Error(ErrorKind::NotFound, "serial " + serial + " is not in the ledger " + m_path);
    LedgerEntry e = cert_row(q.get(), 0);
    if (e.status != "issued")
      throw Error(ErrorKind::Conflict, "serial " + serial + " is " + e.status + ", not issued: it cannot be marked orphaned");
    run(c, m_path, "could not mark " + serial + " orphaned",
        "UPDATE certificates SET status = 'orphaned' WHERE serial = $1", {serial});
    append_audit_locked(c, m_path, "certificate-orphaned", audit_detail_orphaned(e, why));
    return 0;
  });
}

std::optional<LedgerEntry> PgLedger::find_by_request_id(const std::string& request_id) const {
  if (request_id.empty()) return std::nullopt;
  Lease lease(*this);
  Result q = run(lease.get(), m_path, "looking up a request",
                 (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE request_id = $1").c_str(),
                 {request_id});
  if (pq().PQntuples(q.get()) == 0) return std::nullopt;
  return cert_row(q.get(), 0);
}

std::vector<LedgerEntry> PgLedger::request_ids_with_prefix(const std::string& prefix) const {
  if (prefix.empty()) throw Error(ErrorKind::Internal, "request_ids_with_prefix: empty prefix");
  Lease lease(*this);
  Result r = run(lease.get(), m_path, "listing request ids",
                 "SELECT serial, status, request_id FROM certificates WHERE starts_with(request_id, $1) ORDER BY seq",
                 {prefix});
  std::vector<LedgerEntry> out;
  for (int i = 0; i < pq().PQntuples(r.get()); ++i) {
    LedgerEntry e;
    e.serial = text(r.get(), i, 0);
    e.status = text(r.get(), i, 1);
    e.request_id = text(r.get(), i, 2);
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<LedgerEntry> PgLedger::find(const std::string& serial) const {
  Lease lease(*this);
  Result q = run(lease.get(), m_path, "looking up a serial",
                 (std::string("SELECT ") + kCertColumns + " FROM certificates WHERE serial = $1").c_str(), {serial});
  if (pq().PQntuples(q.get()) == 0) return std::nullopt;
  return cert_row(q.get(), 0);
}

std::vector<LedgerEntry> PgLedger::revoked_by(const std::string& issuer) const {
  Lease lease(*this);
  Result q = run(lease.get(), m_path, "listing revoked certificates",
                 (std::string("SELECT ") + kCertColumns +
                  " FROM certificates WHERE status = 'revoked' AND issuer = $1 ORDER BY revoked_at, seq")
                     .c_str(),
                 {issuer});
  std::vector<LedgerEntry> out;
  for (int i = 0; i < pq().PQntuples(q.get()); ++i) out.push_back(cert_row(q.get(), i));
  return out;
}

long long PgLedger::next_crl_number(const std::string& issuer_key_id, const std::string& issuer) {
  Lease lease(*this);
  PGconn* c = lease.get();
  return in_transaction(c, m_path, "could not draw a CRL number", [&] {
    run(c, m_path, "locking the audit chain", "SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kAuditLockKey)});
    Result r = run(c, m_path, "could not draw a CRL number",
                   "INSERT INTO crl_numbers(issuer_key_id, issuer, last_number) VALUES ($1, $2, 1)"
                   " ON CONFLICT(issuer_key_id) DO UPDATE SET last_number = crl_numbers.last_number + 1,"
                   " issuer = EXCLUDED.issuer RETURNING last_number",
                   {issuer_key_id, issuer});
    if (pq().PQntuples(r.get()) != 1) throw Error(ErrorKind::Io, "ledger " + m_path + ": could not read the CRL number");
    long long number = integer(r.get(), 0, 0);
    append_audit_locked(c, m_path, "crl-number",
                        audit_detail_crl_number(issuer, issuer_key_id, number));
    return number;
  });
}

AuditEntry PgLedger::append_audit(const std::string& kind, const std::string& detail_json) {
  Lease lease(*this);
  return in_transaction(lease.get(), m_path, "could not append the audit event '" + kind + "'",
                        [&] { return append_audit_locked(lease.get(), m_path, kind, detail_json); });
}

std::optional<AuditEntry> PgLedger::audit_head() const {
  Lease lease(*this);
  return read_audit_head(lease.get(), m_path);
}

std::vector<AuditEntry> PgLedger::audit_entries() const {
  Lease lease(*this);
  Result r = run(lease.get(), m_path, "reading the audit chain",
                 "SELECT id, at, kind, detail, prev_hash, hash FROM audit_events ORDER BY id");
  std::vector<AuditEntry> out;
  for (int i = 0; i < pq().PQntuples(r.get()); ++i) out.push_back(audit_row(r.get(), i));
  return out;
}

std::vector<AuditCheckpoint> PgLedger::audit_checkpoints() const {
  Lease lease(*this);
  Result r = run(lease.get(), m_path, "reading the audit checkpoints",
                 "SELECT id, entry_id, head_hash, count, at, signature, key_uri, public_key FROM audit_checkpoints ORDER BY id");
  std::vector<AuditCheckpoint> out;
  for (int i = 0; i < pq().PQntuples(r.get()); ++i) {
    AuditCheckpoint cp;
    cp.id = integer(r.get(), i, 0);
    cp.entry_id = integer(r.get(), i, 1);
    cp.head_hash = text(r.get(), i, 2);
    cp.count = integer(r.get(), i, 3);
    cp.at = text(r.get(), i, 4);
    cp.signature = text(r.get(), i, 5);
    cp.key_uri = text(r.get(), i, 6);
    cp.public_key = text(r.get(), i, 7);
    out.push_back(std::move(cp));
  }
  return out;
}

std::optional<AuditCheckpoint> PgLedger::add_audit_checkpoint_if_due(
    long long every, const std::function<AuditCheckpoint(const AuditEntry& head)>& sign) {
  Lease lease(*this);
  PGconn* c = lease.get();
  return in_transaction(c, m_path, "could not store the audit checkpoint", [&]() -> std::optional<AuditCheckpoint> {
    // The chain lock every appender takes: one checkpoint per due point, whichever server gets here first.
    run(c, m_path, "locking the audit chain", "SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kAuditLockKey)});
    auto head = read_audit_head(c, m_path);
    if (!head) return std::nullopt;
    Result r = run(c, m_path, "reading the newest audit checkpoint", "SELECT COALESCE(MAX(entry_id), 0) FROM audit_checkpoints");
    if (head->id - integer(r.get(), 0, 0) < every) return std::nullopt;
    AuditCheckpoint cp = sign(*head);
    Result ins = run(c, m_path, "could not store the audit checkpoint",
                     "INSERT INTO audit_checkpoints(entry_id, head_hash, count, at, signature, key_uri, public_key)"
                     " VALUES ($1::bigint, $2, $3::bigint, $4, $5, $6, $7) RETURNING id",
                     {std::to_string(cp.entry_id), cp.head_hash, std::to_string(cp.count), cp.at, cp.signature,
                      cp.key_uri, cp.public_key});
    cp.id = integer(ins.get(), 0, 0);
    return cp;
  });
}

long long PgLedger::add_audit_checkpoint(const AuditCheckpoint& cp) {
  Lease lease(*this);
  PGconn* c = lease.get();
  return in_transaction(c, m_path, "could not store the audit checkpoint", [&] {
    Result r = run(c, m_path, "could not store the audit checkpoint",
                   "INSERT INTO audit_checkpoints(entry_id, head_hash, count, at, signature, key_uri, public_key)"
                   " VALUES ($1::bigint, $2, $3::bigint, $4, $5, $6, $7) RETURNING id",
                   {std::to_string(cp.entry_id), cp.head_hash, std::to_string(cp.count), cp.at, cp.signature, cp.key_uri,
                    cp.public_key});
    return integer(r.get(), 0, 0);
  });
}

std::vector<LedgerEntry> PgLedger::list() const {
  Lease lease(*this);
  Result r = run(lease.get(), m_path, "listing certificates",
                 (std::string("SELECT ") + kCertColumns + " FROM certificates ORDER BY issued_at, seq").c_str());
  std::vector<LedgerEntry> out;
  for (int i = 0; i < pq().PQntuples(r.get()); ++i) out.push_back(cert_row(r.get(), i));
  return out;
}

std::vector<LedgerEvent> PgLedger::events() const {
  Lease lease(*this);
  Result r = run(lease.get(), m_path, "listing events", "SELECT id, at, kind, detail FROM events ORDER BY id");
  std::vector<LedgerEvent> out;
  for (int i = 0; i < pq().PQntuples(r.get()); ++i) {
    LedgerEvent e;
    e.id = integer(r.get(), i, 0);
    e.at = text(r.get(), i, 1);
    e.kind = text(r.get(), i, 2);
    e.detail = text(r.get(), i, 3);
    out.push_back(std::move(e));
  }
  return out;
}

bool PgLedger::has_serial(const std::string& serial) const {
  Lease lease(*this);
  Result r = run(lease.get(), m_path, "looking up a serial", "SELECT 1 FROM certificates WHERE serial = $1", {serial});
  return pq().PQntuples(r.get()) > 0;
}

int PgLedger::schema_version() const {
  Lease lease(*this);
  Result r = run(lease.get(), m_path, "reading the schema version", "SELECT version FROM schema_version LIMIT 1");
  return pq().PQntuples(r.get()) == 0 ? 0 : static_cast<int>(integer(r.get(), 0, 0));
}

}  // namespace hwca::core
