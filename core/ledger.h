// The ledger: every issued certificate, recorded before it is handed out. SQLite (default) or PostgreSQL,
// each with versioned schema migrations (run inside a transaction, as tpm2-pkcs11's db.c does).
#pragma once

#include "core/audit.h"
#include "core/base/ossl.h"

#include <condition_variable>
#include <functional>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace hwca::core {

struct LedgerEntry {
  std::string serial;      // lowercase hex, no colons
  std::string issuer;      // RFC 2253
  std::string subject;     // RFC 2253
  std::string sans;        // "DNS:a, IP:1.2.3.4"
  std::string not_before;  // ISO 8601 UTC
  std::string not_after;
  std::string profile;
  std::string requester;
  std::string issued_at;
  std::string status;      // "issued", "orphaned", "revoked"
  std::string pem;
  std::string revoked_at;          // ISO 8601 UTC; empty unless revoked
  std::string revocation_reason;   // RFC 5280 name ("keyCompromise"); empty unless revoked
  std::string request_id;          // what the certificate answered, when the caller names it (a Kubernetes
                                   // CSR's uid: "k8s-csr:<uid>"); unique in the ledger; empty otherwise
};

struct LedgerEvent {
  long long id = 0;
  std::string at;
  std::string kind;    // "key-import", "key-generate", ...
  std::string detail;
};

// The ledger interface. Two implementations: SqliteLedger (the default, one machine; core/ledger.cpp) and
// PgLedger (core/ledger_pg.h: a PostgreSQL database shared by several `hwca serve` processes). All methods
// are safe to call from several threads at once.
class Ledger {
 public:
  // 1: certificates, events. 2: revocation columns, crl_numbers, audit_events, audit_checkpoints.
  // 3: certificates.request_id (unique when set). PostgreSQL ledgers have the same tables at the same
  // version numbers.
  static constexpr int kSchemaVersion = 3;

  // Opens (creating and migrating) the ledger at `path_or_url`: a PostgreSQL connection URI
  // (postgresql://USER[:PASSWORD]@HOST:PORT/DB, or postgres://...), otherwise a SQLite file whose folder
  // is created when missing. Error(Io) when it cannot be opened or migrated.
  static std::unique_ptr<Ledger> open(const std::string& path_or_url);
  // True for postgresql:// and postgres:// URIs.
  static bool is_postgres_url(const std::string& path_or_url);
  virtual ~Ledger() = default;
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Records one issued certificate in one transaction, together with its `certificate-issued` audit
  // event. Error(Conflict) when the serial already exists, Error(Io) on any other failure (a lost
  // database connection included); in both cases nothing is recorded.
  // SQLite: concurrent callers are group-committed: while one transaction commits, the records that arrive
  // queue up and go into the next transaction together (each in its own savepoint, so one failing
  // record fails alone). PostgreSQL: one transaction per record on a pooled connection. Every caller
  // returns only once its own record is durable.
  // A non-empty `request_id` is stored with the row and must be unique: a second certificate for the same
  // request is refused with Error(Conflict) (find_by_request_id() then returns the first).
  virtual void record(const X509* cert, const std::string& profile, const std::string& requester,
                      const std::string& request_id) = 0;
  void record(const X509* cert, const std::string& profile, const std::string& requester) {
    record(cert, profile, requester, std::string());
  }

  struct BatchItem {
    const X509* cert = nullptr;
    std::string profile;
    std::string requester;
    std::string request_id;  // as record()'s
    std::string* pem = nullptr;  // when set, receives the certificate's PEM as the ledger stored it
  };
  // Records several certificates in ONE transaction (one fsync): all or nothing. Error(Conflict) for a
  // duplicate serial, Error(Io) otherwise; then nothing of the batch is recorded.
  virtual void record_batch(const std::vector<BatchItem>& items) = 0;
  // Records an event in `events` and appends it to the audit chain (detail {"detail": ...}), in one
  // transaction.
  virtual void record_event(const std::string& kind, const std::string& detail) = 0;

  // Marks a certificate revoked (reason: an RFC 5280 name, already checked by the caller) and appends a
  // `certificate-revoked` audit event, in one transaction. Error(NotFound) for an unknown serial,
  // Error(Conflict) when it is already revoked. Returns the updated row.
  virtual LedgerEntry revoke(const std::string& serial_hex, const std::string& reason, std::time_t revoked_at) = 0;
  virtual std::optional<LedgerEntry> find(const std::string& serial_hex) const = 0;
  // The certificate recorded for `request_id` (see record()), if any.
  virtual std::optional<LedgerEntry> find_by_request_id(const std::string& request_id) const = 0;
  // The rows whose request id starts with `prefix` (not empty), oldest first, with only serial, status and
  // request_id set: what `k8s init` needs of a ledger that may hold hundreds of thousands of certificates,
  // without their PEM and names.
  virtual std::vector<LedgerEntry> request_ids_with_prefix(const std::string& prefix) const = 0;
  // Marks an issued certificate whose output never reached its destination (a crash between the ledger
  // commit and the file rename) as "orphaned", with a `certificate-orphaned` audit event giving `why`, in
  // one transaction. Error(NotFound) for an unknown serial; Error(Conflict) unless its status is "issued".
  virtual void mark_orphaned(const std::string& serial_hex, const std::string& why) = 0;
  // Revoked certificates whose issuer (RFC 2253) is `issuer`, oldest revocation first.
  virtual std::vector<LedgerEntry> revoked_by(const std::string& issuer) const = 0;
  // The next CRL number for the CA whose key is identified by `issuer_key_id` (hex SHA-256 of its public
  // key): 1, 2, 3, ... never reused, even when the CRL is then not written. One transaction, with a
  // `crl-number` audit event.
  virtual long long next_crl_number(const std::string& issuer_key_id, const std::string& issuer) = 0;

  // The audit chain (see core/audit.h). append_audit runs in its own transaction; the chain head is read
  // and extended under the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-level
  // advisory lock taken by every writer of the chain), so two writers never make two heads.
  virtual AuditEntry append_audit(const std::string& kind, const std::string& detail_json) = 0;
  virtual std::optional<AuditEntry> audit_head() const = 0;
  virtual std::vector<AuditEntry> audit_entries() const = 0;
  virtual std::vector<AuditCheckpoint> audit_checkpoints() const = 0;
  // Stores a signed checkpoint; returns its id.
  virtual long long add_audit_checkpoint(const AuditCheckpoint& checkpoint) = 0;
  // Automatic checkpoints: under the chain's write lock (so that several processes sharing the ledger
  // make one checkpoint, not one each), reads the head and the newest checkpointed entry; when at least
  // `every` entries are unsigned, calls `sign(head)` and stores what it returns (its id set). nullopt when
  // none was due. `sign` runs inside the transaction: it must not use this ledger.
  virtual std::optional<AuditCheckpoint> add_audit_checkpoint_if_due(
      long long every, const std::function<AuditCheckpoint(const AuditEntry& head)>& sign) = 0;

  virtual std::vector<LedgerEntry> list() const = 0;
  virtual std::vector<LedgerEvent> events() const = 0;
  virtual bool has_serial(const std::string& serial_hex) const = 0;
  virtual int schema_version() const = 0;
  // The file path, or the URI without its password: for messages and logs.
  const std::string& path() const { return m_path; }

 protected:
  explicit Ledger(std::string display_name) : m_path(std::move(display_name)) {}
  std::string m_path;
};

// What one certificate row holds (serial, names, SANs, validity, PEM; issued_at = now). profile,
// requester and status are left for the caller. The certificate is encoded once: when `der_sha256` is
// given, it receives the SHA-256 (hex) of the same DER the PEM holds, for the audit entry.
LedgerEntry ledger_entry_for(const X509* cert, std::string* der_sha256 = nullptr);

// The details (JSON text) of the audit events every ledger backend appends, built in one place so that
// the SQLite and PostgreSQL chains encode them identically.
std::string audit_detail_issued(const LedgerEntry& e, const std::string& profile, const std::string& requester,
                                const std::string& der_sha256);
std::string audit_detail_event(const std::string& detail);
std::string audit_detail_revoked(const std::string& serial, const LedgerEntry& e, const std::string& reason);
std::string audit_detail_orphaned(const LedgerEntry& e, const std::string& why);
std::string audit_detail_crl_number(const std::string& issuer, const std::string& issuer_key_id, long long number);

// $HWCA_HOME, or ./.hwca when unset.
std::string hwca_home();
// $HWCA_HOME/ledger.db unless `explicit_path` is given.
std::string default_ledger_path();

}  // namespace hwca::core
