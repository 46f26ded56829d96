#include "core/audit.h"

#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/x509.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <map>
#include <set>

namespace hwca::core {

namespace {

// Canonical encoding: a domain tag, then each field as an 8-byte big-endian length and its bytes.
void put_field(std::string& out, std::string_view field) {
  unsigned long long n = field.size();
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xffu));
  out.append(field);
}

std::string entry_encoding(const AuditEntry& e) {
  std::string out;
  put_field(out, "hwca-audit-entry-v1");
  put_field(out, std::to_string(e.id));
  put_field(out, e.at);
  put_field(out, e.kind);
  put_field(out, e.detail);
  put_field(out, e.prev_hash);
  return out;
}

EVP_PKEY_ptr public_key_from_pem(const std::string& pem) {
  BIO_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  EVP_PKEY_ptr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  drain_openssl_errors();
  return key;
}

std::string from_hex(const std::string& hex) {
  if (hex.size() % 2 != 0) return {};
  std::string out;
  out.reserve(hex.size() / 2);
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return {};
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

}  // namespace

std::string audit_entry_hash(const AuditEntry& entry) { return sha256_hex(entry_encoding(entry)); }

AuditEntry next_audit_entry(const std::optional<AuditEntry>& prev, const std::string& at, const std::string& kind,
                            const std::string& detail) {
  AuditEntry e;
  e.id = prev ? prev->id + 1 : 1;
  e.at = at;
  e.kind = kind;
  e.detail = detail;
  e.prev_hash = prev ? prev->hash : kAuditGenesis;
  e.hash = audit_entry_hash(e);
  return e;
}

std::string audit_checkpoint_message(long long entry_id, const std::string& head_hash, long long count,
                                     const std::string& at) {
  std::string out;
  put_field(out, "hwca-audit-checkpoint-v1");
  put_field(out, std::to_string(entry_id));
  put_field(out, head_hash);
  put_field(out, std::to_string(count));
  put_field(out, at);
  return out;
}

std::string sign_bytes(EVP_PKEY* key, std::string_view data) {
  if (!key) throw Error(ErrorKind::Internal, "sign_bytes: no key");
  EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, digest_for(key), nullptr, key) != 1)
    throw_openssl(ErrorKind::Token, "starting a signature with the audit key");
  size_t len = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  if (EVP_DigestSign(ctx.get(), nullptr, &len, p, data.size()) != 1)
    throw_openssl(ErrorKind::Token, "signing with the audit key");
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, p, data.size()) != 1)
    throw_openssl(ErrorKind::Token, "signing with the audit key");
  sig.resize(len);
  return sig;
}

bool verify_bytes(EVP_PKEY* public_key, std::string_view data, std::string_view signature) {
  if (!public_key) return false;
  EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
  bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, digest_for(public_key), nullptr, public_key) == 1 &&
            EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  drain_openssl_errors();
  return ok;
}

AuditCheckpoint make_audit_checkpoint(const AuditEntry& head, EVP_PKEY* audit_key, EVP_PKEY* audit_public_key,
                                      const std::string& key_uri) {
  AuditCheckpoint cp;
  cp.entry_id = head.id;
  cp.head_hash = head.hash;
  cp.count = head.id;
  cp.at = iso8601(now());
  std::string message = audit_checkpoint_message(cp.entry_id, cp.head_hash, cp.count, cp.at);
  std::string sig = sign_bytes(audit_key, message);
  if (!verify_bytes(audit_public_key, message, sig))
    throw Error(ErrorKind::Token, "the audit key's checkpoint signature does not verify with its public key");
  cp.signature = to_hex(sig);
  cp.key_uri = key_uri;
  cp.public_key = public_key_to_pem(audit_public_key);
  return cp;
}

std::string AuditReport::summary() const {
  std::string s;
  if (intact) {
    s = "audit chain intact: " + std::to_string(entries) + " entries, " + std::to_string(checkpoints) +
        " signed checkpoint" + (checkpoints == 1 ? "" : "s");
    if (last_signed_id > 0) s += ", signed through entry " + std::to_string(last_signed_id);
  } else {
    s = "audit chain BROKEN at entry " + std::to_string(first_bad_id) + ": " + problem;
  }
  if (intact && unsigned_entries > 0)
    s += "; " + std::to_string(unsigned_entries) + " entr" + (unsigned_entries == 1 ? "y" : "ies") + " after " +
         (last_signed_id > 0 ? "the last checkpoint (entry " + std::to_string(last_signed_id) + ")" : "the start") +
         " not yet signed (a truncation there shows only as entries missing from the count the next checkpoint "
         "records)";
  return s;
}

AuditReport verify_audit_chain(const std::vector<AuditEntry>& entries, const std::vector<AuditCheckpoint>& checkpoints,
                               EVP_PKEY* trusted_key) {
  AuditReport r;
  r.entries = static_cast<long long>(entries.size());
  // Problems found, keyed by the entry where they show; the first one is reported.
  std::map<long long, std::string> problems;

  // 1. The chain itself. Everything before the first break is intact; nothing after it is trusted.
  long long intact_through = 0;
  std::string prev_hash = kAuditGenesis;
  long long expected_id = 1;
  for (const auto& e : entries) {
    if (e.id != expected_id) {
      problems.emplace(expected_id, e.id > expected_id
                                        ? (e.id == expected_id + 1 ? "entry " + std::to_string(expected_id) + " is missing (deleted)"
                                                                   : "entries " + std::to_string(expected_id) + ".." +
                                                                         std::to_string(e.id - 1) + " are missing (deleted)")
                                        : "entry ids out of order (entry " + std::to_string(e.id) + " after " +
                                              std::to_string(expected_id - 1) + ")");
      break;
    }
    if (e.prev_hash != prev_hash) {
      problems.emplace(e.id, "its prev_hash does not match the hash of entry " + std::to_string(e.id - 1) +
                                 " (an entry before it was deleted, or entries were reordered)");
      break;
    }
    if (audit_entry_hash(e) != e.hash) {
      problems.emplace(e.id, "its content does not match its hash (modified)");
      break;
    }
    prev_hash = e.hash;
    intact_through = e.id;
    ++expected_id;
  }
  long long last_id = entries.empty() ? 0 : entries.back().id;

  // 2. Checkpoints.
  EVP_PKEY_ptr pinned;
  std::set<std::string> keys_seen;
  long long last_signed = 0;
  for (const auto& cp : checkpoints) {
    EVP_PKEY_ptr key = public_key_from_pem(cp.public_key);
    std::string label = "checkpoint #" + std::to_string(cp.id) + " (" + cp.at + ", entry " + std::to_string(cp.entry_id) + ")";
    if (!key) {
      problems.emplace(cp.entry_id, label + " carries no readable public key");
      continue;
    }
    std::string fingerprint = sha256_hex(public_key_der(key.get()));
    keys_seen.insert(fingerprint);
    if (trusted_key) {
      if (!same_public_key(key.get(), trusted_key)) {
        problems.emplace(cp.entry_id, label + " is signed by audit key sha256:" + fingerprint + ", not the trusted one");
        continue;
      }
    } else if (!pinned) {
      pinned = share(key.get());
    } else if (!same_public_key(key.get(), pinned.get())) {
      problems.emplace(cp.entry_id, label + " is signed by a different audit key (sha256:" + fingerprint + ")");
      continue;
    }
    if (!verify_bytes(key.get(), audit_checkpoint_message(cp.entry_id, cp.head_hash, cp.count, cp.at),
                      from_hex(cp.signature))) {
      problems.emplace(cp.entry_id, label + ": the signature does not verify");
      continue;
    }
    if (cp.count != cp.entry_id) {
      problems.emplace(cp.entry_id, label + " records " + std::to_string(cp.count) + " entries for a head at entry " +
                                        std::to_string(cp.entry_id));
      continue;
    }
    ++r.checkpoints;
    if (cp.entry_id > last_id) {
      long long from = last_id + 1;
      problems.emplace(from, "truncated: " + label + " signed the chain through entry " + std::to_string(cp.entry_id) +
                                 " (" + std::to_string(cp.count) + " entries) but it ends at entry " +
                                 std::to_string(last_id) + "; entries " + std::to_string(from) + ".." +
                                 std::to_string(cp.entry_id) + " were removed");
      continue;
    }
    if (cp.entry_id <= intact_through) {
      const AuditEntry& head = entries[static_cast<size_t>(cp.entry_id - 1)];
      if (head.hash != cp.head_hash) {
        // The chain is consistent but not the one that was signed: it was rewritten at or before here.
        problems.emplace(last_signed + 1, "the chain was rewritten: entry " + std::to_string(cp.entry_id) +
                                              " does not match " + label + " (the change is between entries " +
                                              std::to_string(last_signed + 1) + " and " + std::to_string(cp.entry_id) + ")");
        continue;
      }
      if (cp.entry_id > last_signed) last_signed = cp.entry_id;
    }
  }
  r.audit_keys.assign(keys_seen.begin(), keys_seen.end());

  if (!problems.empty()) {
    r.intact = false;
    r.first_bad_id = problems.begin()->first;
    r.problem = problems.begin()->second;
  }
  r.last_signed_id = last_signed;
  r.unsigned_entries = r.intact ? last_id - last_signed : 0;
  return r;
}

}  // namespace hwca::core
