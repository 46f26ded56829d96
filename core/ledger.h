// The ledger: every issued certificate, recorded before it is handed out. SQLite with versioned
// schema migrations (run inside a transaction, as tpm2-pkcs11's db.c does).
#pragma once

#include "core/base/ossl.h"

#include <memory>
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
};

struct LedgerEvent {
  long long id = 0;
  std::string at;
  std::string kind;    // "key-import", "key-generate", ...
  std::string detail;
};

class Ledger {
 public:
  static constexpr int kSchemaVersion = 1;

  // Opens (creating and migrating) the ledger at `path`; its folder is created when missing.
  // Error(Io) when it cannot be opened or migrated.
  static std::unique_ptr<Ledger> open(const std::string& path);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Records one issued certificate in one transaction. Error(Conflict) when the serial already
  // exists, Error(Io) on any other failure; in both cases nothing is recorded.
  void record(const X509* cert, const std::string& profile, const std::string& requester);
  void record_event(const std::string& kind, const std::string& detail);

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
};

// $HWCA_HOME, or ./.hwca when unset.
std::string hwca_home();
// $HWCA_HOME/ledger.db unless `explicit_path` is given.
std::string default_ledger_path();

}  // namespace hwca::core
