#include "cli/audit_key.h"

#include "core/base/error.h"

namespace hwca::cli {

std::string audit_key_uri_for(const std::string& ca_key_uri) {
  if (tokens::Registry::scheme_of(ca_key_uri) != "pkcs11")
    throw Error(ErrorKind::Usage, "cannot derive the audit key from a non-pkcs11 key URI; give --audit-key URI");
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
