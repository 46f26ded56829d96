#include "cli/audit_key.h"

#include "core/base/error.h"

namespace hwca::cli {

namespace {

// tpm2:file=/d/root.tss2.pem?tcti=X&pin-source=Y  ->  tpm2:file=/d/root-audit.tss2.pem?tcti=X (the CA key's
// auth value is not the audit key's: pin-source is dropped).
std::string tpm2_audit_key_uri_for(const std::string& ca_key_uri) {
  std::string::size_type query = ca_key_uri.find('?');
  std::string path = ca_key_uri.substr(0, query);
  if (path.rfind("tpm2:file=", 0) != 0)
    throw Error(ErrorKind::Usage, "cannot derive the audit key of a persistent TPM key (handle=); give its URI (--audit-key, "
                                  "or audit-key: in a ceremony file)");
  static const std::string suffixes[] = {".tss2.pem", ".pem"};
  bool renamed = false;
  for (const auto& suffix : suffixes) {
    if (path.size() > suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0) {
      path.insert(path.size() - suffix.size(), "-audit");
      renamed = true;
      break;
    }
  }
  if (!renamed) path += "-audit";
  std::string kept;
  if (query != std::string::npos) {
    std::string q = ca_key_uri.substr(query + 1);
    for (size_t start = 0; start <= q.size();) {
      size_t amp = q.find('&', start);
      std::string item = q.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
      if (!item.empty() && item.rfind("pin-source=", 0) != 0) kept += (kept.empty() ? "" : "&") + item;
      if (amp == std::string::npos) break;
      start = amp + 1;
    }
  }
  return kept.empty() ? path : path + "?" + kept;
}

}  // namespace

std::string audit_key_uri_for(const std::string& ca_key_uri) {
  if (tokens::Registry::scheme_of(ca_key_uri) == "tpm2") return tpm2_audit_key_uri_for(ca_key_uri);
  if (tokens::Registry::scheme_of(ca_key_uri) != "pkcs11")
    throw Error(ErrorKind::Usage, "cannot derive the audit key from a " + tokens::Registry::scheme_of(ca_key_uri) +
                                      ": key URI; give --audit-key URI");
  // The object attribute sits in the path (before '?'), between ';' separators (RFC 7512).
  std::string::size_type query = ca_key_uri.find('?');
  std::string path = ca_key_uri.substr(0, query);
  std::string rest = query == std::string::npos ? "" : ca_key_uri.substr(query);
  std::string::size_type pos = 0;
  while (true) {
    pos = path.find("object=", pos);
    if (pos == std::string::npos)
      throw Error(ErrorKind::Usage, "the CA key URI names no object=...; give --audit-key URI");
    if (pos == 7 || path[pos - 1] == ';') break;  // "pkcs11:" is 7 characters
    pos += 7;
  }
  std::string::size_type end = path.find(';', pos);
  if (end == std::string::npos) end = path.size();
  path.insert(end, "-audit");
  return path + rest;
}

std::unique_ptr<tokens::Signer> open_audit_key(Context& ctx, const std::string& uri, bool generate, core::Ledger* ledger,
                                               const EVP_PKEY* ca_public_key) {
  ctx.check_key_uri(uri, false, true);
  auto& backend = ctx.registry.backend_for(uri);
  std::unique_ptr<tokens::Signer> key;
  if (generate && !backend.exists(uri)) {
    key = backend.generate(uri, tokens::GenerateOptions{KeySpec::parse("ecdsa-p256")});
    if (ledger)
      ledger->record_event("key-generate", uri + " ecdsa-p256 (audit key, public key sha256:" +
                                               sha256_hex(public_key_der(key->public_key())) + ")");
  } else {
    key = backend.open(uri);
  }
  if (ca_public_key && same_public_key(key->public_key(), ca_public_key))
    throw Error(ErrorKind::Policy, "the audit key " + uri.substr(0, uri.find('?')) + " is the CA key; use a dedicated key");
  return key;
}

core::AuditCheckpoint sign_audit_checkpoint(core::Ledger& ledger, tokens::Signer& audit_key) {
  auto head = ledger.audit_head();
  if (!head) return {};
  std::string uri = audit_key.uri();
  core::AuditCheckpoint cp = core::make_audit_checkpoint(*head, audit_key.pkey(), audit_key.public_key(),
                                                         uri.substr(0, uri.find('?')));
  cp.id = ledger.add_audit_checkpoint(cp);
  return cp;
}

}  // namespace hwca::cli
