// Process-wide protection for secrets held in memory (PINs, TPM auth values, rebuilt Shamir secrets).
#pragma once

namespace hwca {

// From the first secret on, for the rest of the process: no core dump (RLIMIT_CORE 0, soft and hard, so
// it cannot be raised again) and not dumpable (PR_SET_DUMPABLE 0: no core file whatever the limit, no
// ptrace attach by other processes of the same user, /proc/PID/mem unreadable to them). Idempotent and
// thread-safe; failures are ignored (the protections are best effort and the secret is still wiped).
void protect_secrets_in_memory() noexcept;

}  // namespace hwca
