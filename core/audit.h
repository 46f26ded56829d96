// The audit chain: a hash chain of events kept in the ledger database (tables audit_events and
// audit_checkpoints), and checkpoints over its head signed by a dedicated audit key.
//
//   entry n:  id = n (1, 2, 3, ... without gaps), at, kind, detail (JSON text), prev_hash = hash of entry n-1
//             (64 zeros for entry 1), hash = SHA-256(canonical encoding of id, at, kind, detail, prev_hash)
//   checkpoint: entry id, head hash (the hash of that entry), count (entries 1..id), at, the audit key's
//             signature over the canonical encoding of those four, the key's URI and public key (PEM)
//
// The canonical encodings are length-prefixed byte strings (see audit.cpp), so no field can bleed into
// another. The audit key is never the CA key: it lives in the same token (object `<ca-object>-audit`) and
// signs checkpoints and ceremony transcripts, which an offline root cannot do every N events.
#pragma once

#include "core/base/ossl.h"

#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hwca::core {

struct AuditEntry {
  long long id = 0;
  std::string at;         // ISO 8601 UTC
  std::string kind;       // "certificate-issued", "certificate-revoked", "crl-issued", "key-generate", ...
  std::string detail;     // JSON text
  std::string prev_hash;  // lowercase hex
  std::string hash;       // lowercase hex
};

struct AuditCheckpoint {
  long long id = 0;        // the checkpoint's own row id
  long long entry_id = 0;  // the chain head it covers
  std::string head_hash;
  long long count = 0;
  std::string at;
  std::string signature;   // raw signature bytes, hex
  std::string key_uri;     // informational
  std::string public_key;  // PEM SubjectPublicKeyInfo of the audit key
};

// The prev_hash of entry 1.
inline const std::string kAuditGenesis(64, '0');

// SHA-256 (hex) over the canonical encoding of the entry's id, at, kind, detail and prev_hash.
std::string audit_entry_hash(const AuditEntry& entry);
// The entry that follows `prev` (nullopt: the first entry), with prev_hash and hash filled in.
AuditEntry next_audit_entry(const std::optional<AuditEntry>& prev, const std::string& at, const std::string& kind,
                            const std::string& detail);

// The bytes a checkpoint's signature covers.
std::string audit_checkpoint_message(long long entry_id, const std::string& head_hash, long long count,
                                     const std::string& at);
// Signs a checkpoint over `head` with the audit key (EVP_DigestSign with digest_for(key)).
AuditCheckpoint make_audit_checkpoint(const AuditEntry& head, EVP_PKEY* audit_key, EVP_PKEY* audit_public_key,
                                      const std::string& key_uri);

// Detached signatures with any EVP_PKEY (a token's key through libp11, or a software key).
std::string sign_bytes(EVP_PKEY* key, std::string_view data);
bool verify_bytes(EVP_PKEY* public_key, std::string_view data, std::string_view signature);

struct AuditReport {
  bool intact = true;             // no entry modified, deleted or reordered; no truncation past a checkpoint
  long long entries = 0;          // entries present
  long long checkpoints = 0;      // checkpoints whose signature verified
  long long first_bad_id = 0;     // the first entry where the chain breaks (0: none)
  std::string problem;            // what is wrong there (empty when intact)
  long long last_signed_id = 0;   // the newest entry covered by a valid checkpoint
  long long unsigned_entries = 0; // entries after last_signed_id
  std::vector<std::string> audit_keys;  // sha256 of each distinct audit public key seen (SPKI DER)

  // One paragraph for people: "audit chain intact: ..." or "audit chain BROKEN at entry N: ...".
  std::string summary() const;
};

// Walks the chain (entries ordered by id) and its checkpoints. When `trusted_key` is given, every
// checkpoint must be signed by it; otherwise every checkpoint must be signed by the same key as the
// first one (an attacker who can write the database could otherwise add checkpoints of their own).
AuditReport verify_audit_chain(const std::vector<AuditEntry>& entries, const std::vector<AuditCheckpoint>& checkpoints,
                               EVP_PKEY* trusted_key = nullptr);

}  // namespace hwca::core
