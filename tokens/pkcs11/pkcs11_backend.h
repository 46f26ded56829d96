// The pkcs11: key backend (RFC 7512 URIs). The object it returns implements KeyBackend, KeyImporter and
// TokenInitializer: reach the optional capabilities with dynamic_cast on Registry::backend_for(uri).
#pragma once

#include "tokens/backend.h"

#include <memory>

namespace hwca::tokens {

std::unique_ptr<KeyBackend> make_pkcs11_backend();

}  // namespace hwca::tokens
