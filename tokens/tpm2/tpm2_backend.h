// The tpm2: key backend (tpm2-tss ESAPI). Keys live in a TPM 2.0: persistent at an owner-hierarchy
// handle (tpm2:handle=0x81000100) or as a "TSS2 PRIVATE KEY" blob that only that TPM can load
// (tpm2:file=/path/key.tss2.pem), in the format tpm2-openssl and tpm2-tss-engine use. See docs/tpm.md.
#pragma once

#include "tokens/backend.h"

#include <memory>

namespace hwca::tokens {

std::unique_ptr<KeyBackend> make_tpm2_backend();

}  // namespace hwca::tokens
