// The ledger: every issued certificate, recorded before it is handed out. SQLite with versioned
// schema migrations (run inside a transaction, as tpm2-pkcs11's db.c does).
#pragma once

#include "core/audit.h"
#include "core/base/ossl.h"

#include <ctime>
#include <memory>
#include <optional>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

struct sqlite3;

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
};

struct LedgerEvent {
  long long id = 0;
  std::string at;
  std::string kind;    // "key-import", "key-generate", ...
  std::string detail;
};

class Ledger {
 public:
  // 1: certificates, events. 2: revocation columns, crl_numbers, audit_events, audit_checkpoints.
  static constexpr int kSchemaVersion = 2;

  // Opens (creating and migrating) the ledger at `path`; its folder is created when missing.
  // Error(Io) when it cannot be opened or migrated.
  static std::unique_ptr<Ledger> open(const std::string& path);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Records one issued certificate in one transaction, together with its `certificate-issued` audit
  // event. Error(Conflict) when the serial already exists, Error(Io) on any other failure; in both cases
  // nothing is recorded.
  // Concurrent callers are group-committed: while one transaction commits, the records that arrive
  // queue up and go into the next transaction together (each in its own savepoint, so one failing
  // record fails alone). Every caller returns only once its own record is durable.
  void record(const X509* cert, const std::string& profile, const std::string& requester);

  struct BatchItem {
    const X509* cert = nullptr;
    std::string profile;
    std::string requester;
  };
  // Records several certificates in ONE transaction (one fsync): all or nothing. Error(Conflict) for a
  // duplicate serial, Error(Io) otherwise; then nothing of the batch is recorded.
  void record_batch(const std::vector<BatchItem>& items);
  // Records an event in `events` and appends it to the audit chain (detail {"detail": ...}), in one
  // transaction.
  void record_event(const std::string& kind, const std::string& detail);

  // Marks a certificate revoked (reason: an RFC 5280 name, already checked by the caller) and appends a
  // `certificate-revoked` audit event, in one transaction. Error(NotFound) for an unknown serial,
  // Error(Conflict) when it is already revoked. Returns the updated row.
  LedgerEntry revoke(const std::string& serial_hex, const std::string& reason, std::time_t revoked_at);
  std::optional<LedgerEntry> find(const std::string& serial_hex) const;
  // Revoked certificates whose issuer (RFC 2253) is `issuer`, oldest revocation first.
  std::vector<LedgerEntry> revoked_by(const std::string& issuer) const;
  // The next CRL number for the CA whose key is identified by `issuer_key_id` (hex SHA-256 of its public
  // key): 1, 2, 3, ... never reused, even when the CRL is then not written. One transaction, with a
  // `crl-number` audit event.
  long long next_crl_number(const std::string& issuer_key_id, const std::string& issuer);

  // The audit chain (see core/audit.h). append_audit runs in its own transaction; the chain head is read
  // and extended under SQLite's write lock (BEGIN IMMEDIATE), so two writers never make two heads.
  AuditEntry append_audit(const std::string& kind, const std::string& detail_json);
  std::optional<AuditEntry> audit_head() const;
  std::vector<AuditEntry> audit_entries() const;
  std::vector<AuditCheckpoint> audit_checkpoints() const;
  // Stores a signed checkpoint; returns its id.
  long long add_audit_checkpoint(const AuditCheckpoint& checkpoint);

  std::vector<LedgerEntry> list() const;
  std::vector<LedgerEvent> events() const;
  bool has_serial(const std::string& serial_hex) const;
  int schema_version() const;
  const std::string& path() const { return m_path; }

 private:
  Ledger(sqlite3* db, std::string path);
  sqlite3* m_db;
  std::string m_path;
  mutable std::mutex m_mutex;  // one connection, used from several threads

  // Group commit (record()): records waiting for the next transaction.
  struct Pending;
  std::mutex m_queue_mutex;
  std::condition_variable m_queue_cv;
  std::vector<Pending*> m_queue;
  bool m_committing = false;
  void commit_group(std::vector<Pending*>& group);
};

// $HWCA_HOME, or ./.hwca when unset.
std::string hwca_home();
// $HWCA_HOME/ledger.db unless `explicit_path` is given.
std::string default_ledger_path();

}  // namespace hwca::core
