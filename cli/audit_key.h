// The audit key: a dedicated signing key next to a CA key (same token, object `<ca-object>-audit`; for a
// TPM blob, `<name>-audit.tss2.pem` on the same TPM), never the CA key itself. It signs audit checkpoints
// and ceremony transcripts.
#pragma once

#include "cli/context.h"
#include "core/ledger.h"

#include <memory>
#include <string>

namespace hwca::cli {

// pkcs11:...;object=root;...  ->  pkcs11:...;object=root-audit;...
// tpm2:file=/d/root.tss2.pem?tcti=X&pin-source=F  ->  tpm2:file=/d/root-audit.tss2.pem?tcti=X (next to the CA
// key's blob, on the same TPM, without the CA key's auth value).
// Error(Usage) when the URI names no object, is a tpm2:handle= key or has another scheme: give --audit-key then.
std::string audit_key_uri_for(const std::string& ca_key_uri);

// Opens the audit key; when it does not exist and `generate` is set, generates it (ecdsa-p256) and records
// a `key-generate` event. Error(Policy) when the audit key is the CA key itself.
std::unique_ptr<tokens::Signer> open_audit_key(Context& ctx, const std::string& uri, bool generate,
                                               core::Ledger* ledger, const EVP_PKEY* ca_public_key);

// Signs a checkpoint over the chain head with the audit key and stores it. Returns the checkpoint
// (entry_id 0 when the chain is empty: nothing to sign).
core::AuditCheckpoint sign_audit_checkpoint(core::Ledger& ledger, tokens::Signer& audit_key);

}  // namespace hwca::cli
