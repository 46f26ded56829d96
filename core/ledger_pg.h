// The PostgreSQL ledger: the same tables as the SQLite ledger (schema version 2), shared by several
// `hwca serve` processes. Serial uniqueness is the database's PRIMARY KEY (SQLSTATE 23505 ->
// Error(Conflict)); every writer of the audit chain takes one transaction-level advisory lock before it
// reads the head, so processes never fork the chain. Connections come from a small pool (one per
// concurrent caller, up to kMaxConnections); a lost connection is Error(Io) and is dropped from the pool.
#pragma once

#include "core/ledger.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct pg_conn;

namespace hwca::core {

class PgLedger final : public Ledger {
 public:
  static constexpr size_t kMaxConnections = 8;
  // The advisory lock key (pg_advisory_xact_lock) that serialises writers of the audit chain, and the one
  // that serialises schema migrations.
  static constexpr long long kAuditLockKey = 0x68776361'00000001;  // "hwca", 1
  static constexpr long long kMigrateLockKey = 0x68776361'00000002;

  // `url`: a libpq connection URI (postgresql://USER[:PASSWORD]@HOST:PORT/DB[?...]). Connects, and runs the
  // schema migrations. Error(Io) when the server cannot be reached or the schema cannot be migrated.
  static std::unique_ptr<Ledger> open(const std::string& url);
  // The URI without its password (userinfo or ?password=), for messages.
  static std::string display_name(const std::string& url);
  ~PgLedger() override;

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

  class Lease;  // one pooled connection, returned to the pool (or closed when broken) on destruction

 private:
  PgLedger(std::string url, std::string display);
  pg_conn* acquire() const;
  void release(pg_conn* conn) const;

  std::string m_url;
  mutable std::mutex m_pool_mutex;
  mutable std::condition_variable m_pool_cv;
  mutable std::vector<pg_conn*> m_idle;
  mutable size_t m_open = 0;  // connections handed out or idle
};

}  // namespace hwca::core
