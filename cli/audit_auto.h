// Automatic audit checkpoints: "every N events" of issue #8.
//
// Configured by two environment variables, read by every command that opens the ledger (the one place:
// Context::open_ledger), so that `sign`, `gencert`, `k8s init`, `k8s sign-csr`, `serve` and every other
// command that appends to the audit chain behave the same:
//   HWCA_AUDIT_EVERY=N   sign a checkpoint as soon as N or more chain entries follow the newest checkpoint
//   HWCA_AUDIT_KEY=URI   the audit key that signs them (a dedicated key; never a CA key)
// One without the other is a usage error. The audit key's PIN or auth value comes from its URI's
// pin-source, HWCA_PIN or --pin-shares, as for any key.
//
// The ledger a command opens is wrapped in a decorator that forwards every call and, after each append
// (a certificate, a batch, an event, a revocation, a CRL number), checks the chain: in a command, right
// away (a checkpoint that cannot be signed is a warning: the certificate is already recorded and the next
// append tries again); in `hwca serve`, on a background thread, so that requests never wait for the audit
// key (and once more when the server stops). Before a certificate is recorded, the decorator checks that
// the audit key did not sign it: an audit key that is the CA key is refused before anything is recorded.
#pragma once

#include "cli/context.h"
#include "core/ledger.h"

#include <memory>
#include <optional>
#include <string>

namespace hwca::cli {

struct AutoCheckpointSettings {
  std::string key_uri;
  long long every = 0;
};

// The settings from the environment; nullopt when neither variable is set. Error(Usage) for a value that is
// not a positive integer, or for one variable without the other.
std::optional<AutoCheckpointSettings> auto_checkpoint_settings();

enum class CheckpointMode {
  Inline,      // after each append, in the caller's thread (commands)
  Background,  // on a thread of the decorator's own (hwca serve)
};

// `ledger` wrapped so that checkpoints are signed every `settings.every` entries.
std::unique_ptr<core::Ledger> with_auto_checkpoints(const Context& ctx, std::unique_ptr<core::Ledger> ledger,
                                                    const AutoCheckpointSettings& settings, CheckpointMode mode);

// Error(Policy) when automatic checkpoints are configured and their audit key is `ca_public` (called
// whenever a CA key is opened: Context::open_ca_key).
void refuse_audit_key_as_ca_key(const Context& ctx, const EVP_PKEY* ca_public);

}  // namespace hwca::cli
