#include "cli/audit_auto.h"

#include "cli/audit_key.h"
#include "core/base/error.h"
#include "core/x509.h"

#include <openssl/x509v3.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>

namespace hwca::cli {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string without_query(const std::string& uri) { return uri.substr(0, uri.find('?')); }

class CheckpointingLedger final : public core::Ledger {
 public:
  CheckpointingLedger(const Context& ctx, std::unique_ptr<core::Ledger> inner, AutoCheckpointSettings settings,
                      CheckpointMode mode)
      : core::Ledger(inner->path()), m_ctx(ctx), m_inner(std::move(inner)), m_settings(std::move(settings)), m_mode(mode) {
    if (m_mode == CheckpointMode::Background) {
      // A server opens the audit key now: a missing key or a wrong PIN stops it before it listens.
      audit_key();
      m_thread = std::thread([this] { background(); });
    }
  }

  ~CheckpointingLedger() override {
    if (m_thread.joinable()) {
      {
        std::lock_guard lock(m_wake_mutex);
        m_stop = true;
      }
      m_wake.notify_one();
      m_thread.join();
      checkpoint_quietly();  // what the last requests appended
    }
  }

  using core::Ledger::record;
  void record(const X509* cert, const std::string& profile, const std::string& requester,
              const std::string& request_id) override {
    refuse_if_audit_signed(cert);
    m_inner->record(cert, profile, requester, request_id);
    appended();
  }
  void record_batch(const std::vector<BatchItem>& items) override {
    for (const auto& item : items) refuse_if_audit_signed(item.cert);
    m_inner->record_batch(items);
    appended();
  }
  void record_event(const std::string& kind, const std::string& detail) override {
    m_inner->record_event(kind, detail);
    appended();
  }
  core::LedgerEntry revoke(const std::string& serial_hex, const std::string& reason, std::time_t revoked_at) override {
    auto e = m_inner->revoke(serial_hex, reason, revoked_at);
    appended();
    return e;
  }
  long long next_crl_number(const std::string& issuer_key_id, const std::string& issuer) override {
    long long n = m_inner->next_crl_number(issuer_key_id, issuer);
    appended();
    return n;
  }
  core::AuditEntry append_audit(const std::string& kind, const std::string& detail_json) override {
    auto e = m_inner->append_audit(kind, detail_json);
    appended();
    return e;
  }

  void mark_orphaned(const std::string& serial_hex, const std::string& why) override {
    m_inner->mark_orphaned(serial_hex, why);
    appended();
  }

  std::optional<core::LedgerEntry> find(const std::string& serial_hex) const override { return m_inner->find(serial_hex); }
  std::optional<core::LedgerEntry> find_by_request_id(const std::string& request_id) const override {
    return m_inner->find_by_request_id(request_id);
  }
  std::vector<core::LedgerEntry> request_ids_with_prefix(const std::string& prefix) const override {
    return m_inner->request_ids_with_prefix(prefix);
  }
  std::vector<core::LedgerEntry> revoked_by(const std::string& issuer) const override { return m_inner->revoked_by(issuer); }
  std::optional<core::AuditEntry> audit_head() const override { return m_inner->audit_head(); }
  std::vector<core::AuditEntry> audit_entries() const override { return m_inner->audit_entries(); }
  std::vector<core::AuditCheckpoint> audit_checkpoints() const override { return m_inner->audit_checkpoints(); }
  long long add_audit_checkpoint(const core::AuditCheckpoint& checkpoint) override {
    long long id = m_inner->add_audit_checkpoint(checkpoint);
    std::lock_guard lock(m_checkpoint_mutex);
    m_last_signed = std::max(m_last_signed, checkpoint.entry_id);
    return id;
  }
  std::optional<core::AuditCheckpoint> add_audit_checkpoint_if_due(
      long long every, const std::function<core::AuditCheckpoint(const core::AuditEntry& head)>& sign) override {
    auto cp = m_inner->add_audit_checkpoint_if_due(every, sign);
    if (cp) {
      std::lock_guard lock(m_checkpoint_mutex);
      m_last_signed = std::max(m_last_signed, cp->entry_id);
    }
    return cp;
  }
  std::vector<core::LedgerEntry> list() const override { return m_inner->list(); }
  std::vector<core::LedgerEvent> events() const override { return m_inner->events(); }
  bool has_serial(const std::string& serial_hex) const override { return m_inner->has_serial(serial_hex); }
  int schema_version() const override { return m_inner->schema_version(); }

 private:
  // The audit key, opened on first use. Once open it is never replaced, so the reference stays valid.
  tokens::Signer& audit_key() {
    std::lock_guard lock(m_key_mutex);
    if (!m_audit) {
      m_ctx.check_key_uri(m_settings.key_uri, false, false);
      try {
        m_audit = m_ctx.registry.backend_for(m_settings.key_uri).open(m_settings.key_uri);
      } catch (const Error& e) {
        throw Error(e.kind(), std::string("the audit key named by HWCA_AUDIT_KEY: ") + e.what(), e.call(), e.backend_code(),
                    e.code_name());
      }
    }
    return *m_audit;
  }

  // A certificate the audit key signed means the audit key is that certificate's CA key: refused before it
  // is recorded (so it is never released). Each issuer (name and key identifier) is checked once; this
  // never waits for a checkpoint being signed.
  void refuse_if_audit_signed(const X509* cert) {
    if (!cert) return;
    std::string issuer = core::name_to_string(X509_get_issuer_name(cert));
    if (const ASN1_OCTET_STRING* akid = X509_get0_authority_key_id(const_cast<X509*>(cert)))
      issuer += "|" + to_hex(akid->data, static_cast<size_t>(akid->length));
    {
      std::lock_guard lock(m_issuer_mutex);
      if (m_checked_issuers.count(issuer)) return;
    }
    EVP_PKEY* audit_public = audit_key().public_key();
    int signed_by_audit = X509_verify(const_cast<X509*>(cert), audit_public);
    drain_openssl_errors();
    if (signed_by_audit == 1)
      throw Error(ErrorKind::Policy, "the audit key " + without_query(m_settings.key_uri) +
                                         " (HWCA_AUDIT_KEY) is the CA key that signs these certificates; use a dedicated key");
    std::lock_guard lock(m_issuer_mutex);
    m_checked_issuers.insert(issuer);
  }

  void appended() {
    if (m_mode == CheckpointMode::Inline) {
      checkpoint_quietly();
      return;
    }
    {
      std::lock_guard lock(m_wake_mutex);
      m_pending = true;
    }
    m_wake.notify_one();
  }

  void background() {
    std::unique_lock lock(m_wake_mutex);
    while (true) {
      m_wake.wait(lock, [this] { return m_stop || m_pending; });
      if (m_stop) return;
      m_pending = false;
      lock.unlock();
      checkpoint_quietly();
      lock.lock();
    }
  }

  // The certificate or event is already recorded when this runs: a checkpoint that cannot be signed now
  // is a warning, and the next append tries again.
  void checkpoint_quietly() noexcept {
    try {
      checkpoint_if_due();
    } catch (const std::exception& e) {
      try {
        warn(std::string("automatic audit checkpoint not signed: ") + e.what());
      } catch (...) {
      }
    }
  }

  long long newest_checkpoint() const {
    long long newest = 0;
    for (const auto& cp : m_inner->audit_checkpoints()) newest = std::max(newest, cp.entry_id);
    return newest;
  }

  void checkpoint_if_due() {
    std::lock_guard lock(m_checkpoint_mutex);
    auto head = m_inner->audit_head();
    if (!head) return;
    if (m_last_signed < 0) m_last_signed = newest_checkpoint();
    if (head->id - m_last_signed < m_settings.every) return;
    // Another process sharing the ledger may have signed one since we last looked: the ledger decides
    // under the chain's lock, so that one checkpoint is made per due point, not one per process.
    tokens::Signer& key = audit_key();
    const std::string uri = key.uri().substr(0, key.uri().find('?'));
    auto made = m_inner->add_audit_checkpoint_if_due(m_settings.every, [&](const core::AuditEntry& h) {
      return core::make_audit_checkpoint(h, key.pkey(), key.public_key(), uri);
    });
    if (!made) {
      m_last_signed = newest_checkpoint();
      return;
    }
    const core::AuditCheckpoint& cp = *made;
    m_last_signed = std::max(m_last_signed, cp.entry_id);
    std::cerr << "hwca: audit checkpoint #" << cp.id << " signed over entry " << cp.entry_id << " (HWCA_AUDIT_EVERY="
              << m_settings.every << ")" << std::endl;
  }

  const Context& m_ctx;
  std::unique_ptr<core::Ledger> m_inner;
  AutoCheckpointSettings m_settings;
  CheckpointMode m_mode;

  std::mutex m_key_mutex;  // m_audit (opened once)
  std::unique_ptr<tokens::Signer> m_audit;
  std::mutex m_checkpoint_mutex;  // m_last_signed; one checkpoint at a time
  long long m_last_signed = -1;   // the newest checkpointed entry we know of; -1: not read yet
  std::mutex m_issuer_mutex;      // m_checked_issuers
  std::set<std::string> m_checked_issuers;

  std::mutex m_wake_mutex;
  std::condition_variable m_wake;
  bool m_pending = false;
  bool m_stop = false;
  std::thread m_thread;  // last: started once everything above exists
};

}  // namespace

std::optional<AutoCheckpointSettings> auto_checkpoint_settings() {
  std::string every = env("HWCA_AUDIT_EVERY");
  std::string key = env("HWCA_AUDIT_KEY");
  if (every.empty() && key.empty()) return std::nullopt;
  if (every.empty())
    throw Error(ErrorKind::Usage, "HWCA_AUDIT_KEY is set but HWCA_AUDIT_EVERY is not: set both for automatic audit checkpoints");
  if (key.empty())
    throw Error(ErrorKind::Usage, "HWCA_AUDIT_EVERY is set but HWCA_AUDIT_KEY is not: name the audit key that signs the checkpoints");
  AutoCheckpointSettings s;
  s.key_uri = key;
  bool digits = every.size() <= 9 && std::all_of(every.begin(), every.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) s.every = std::stoll(every);
  if (!digits || s.every < 1)
    throw Error(ErrorKind::Usage, "HWCA_AUDIT_EVERY must be a whole number of entries from 1 to 999999999, not '" + every + "'");
  return s;
}

std::unique_ptr<core::Ledger> with_auto_checkpoints(const Context& ctx, std::unique_ptr<core::Ledger> ledger,
                                                    const AutoCheckpointSettings& settings, CheckpointMode mode) {
  return std::make_unique<CheckpointingLedger>(ctx, std::move(ledger), settings, mode);
}

void refuse_audit_key_as_ca_key(const Context& ctx, const EVP_PKEY* ca_public) {
  auto settings = auto_checkpoint_settings();
  if (!settings || !ca_public) return;
  ctx.check_key_uri(settings->key_uri, false, false);
  auto& backend = ctx.registry.backend_for(settings->key_uri);
  if (!backend.exists(settings->key_uri)) return;  // reported when a checkpoint needs it
  tokens::KeyDescription d = backend.describe(settings->key_uri);
  if (d.public_key && same_public_key(d.public_key.get(), ca_public))
    throw Error(ErrorKind::Policy, "the audit key " + without_query(settings->key_uri) +
                                       " (HWCA_AUDIT_KEY) is the CA key; use a dedicated key");
}

}  // namespace hwca::cli
