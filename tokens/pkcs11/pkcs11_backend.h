// The pkcs11: key backend (RFC 7512 URIs). The object it returns implements KeyBackend, KeyImporter and
// TokenInitializer: reach the optional capabilities with dynamic_cast on Registry::backend_for(uri).
#pragma once

#include "tokens/backend.h"

#include <memory>
#include <string_view>

namespace hwca::tokens {

// Optional capability of the pkcs11: backend (dynamic_cast): replace a token's PINs (custody split).
class PinChanger {
 public:
  virtual ~PinChanger() = default;
  // C_SetPIN for the user, in a session logged in with the current user PIN (resolved from the URI's
  // sources or the process-wide override); then, when `new_so_pin` is not empty, C_Login as SO with
  // `so_pin` and C_SetPIN for the SO. Ends logged out. Never retries a failed login.
  virtual void change_pins(const std::string& uri, std::string_view new_user_pin, std::string_view so_pin,
                           std::string_view new_so_pin) = 0;
  // Logs in as user with `pin` in a fresh session, then logs out: Error(Token) when refused.
  virtual void check_user_pin(const std::string& uri, std::string_view pin) = 0;
  // Logs in as SO with `pin` in a fresh session, then logs out: Error(Token) when refused.
  virtual void check_so_pin(const std::string& uri, std::string_view pin) = 0;
};

std::unique_ptr<KeyBackend> make_pkcs11_backend();

}  // namespace hwca::tokens
