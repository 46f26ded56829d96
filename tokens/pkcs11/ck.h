// PKCS#11 helpers without state: return-code names and the PIN-flag rule.
#pragma once

#include <p11-kit-1/p11-kit/pkcs11.h>

#include <optional>
#include <string>

namespace hwca::tokens::pkcs11 {

// The symbolic name of a CK_RV ("CKR_PIN_INCORRECT"); "CKR_0x..." for codes not in the table.
std::string ckr_name(CK_RV rv);

// The login rule, decided from the token's flags before any C_Login: a locked user PIN, or a PIN with
// only one attempt left, is refused (so that hwca never locks a token). nullopt: go ahead and log in.
std::optional<std::string> pin_flags_refusal(CK_FLAGS token_flags, const std::string& token_label);

// Throws Error(Token, "<call> failed: <CKR name> (<context>)", call, rv, name) when rv != CKR_OK.
void check_rv(CK_RV rv, const char* call, const std::string& context);

}  // namespace hwca::tokens::pkcs11
