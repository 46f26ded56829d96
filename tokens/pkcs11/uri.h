// RFC 7512 PKCS#11 URIs, parsed into a typed struct.
//   pkcs11:token=hwca-root;object=root-ca;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin
#pragma once

#include <optional>
#include <string>

namespace hwca::tokens::pkcs11 {

// The SoftHSM2 module used when a URI names neither module-path nor module-name.
inline constexpr const char* kDefaultModule = "/usr/lib/softhsm/libsofthsm2.so";

struct Pkcs11Uri {
  enum class ObjectType { Private, Public, Cert, SecretKey, Data };

  // Path attributes (percent-decoded).
  std::optional<std::string> token;         // token label
  std::optional<std::string> manufacturer;  // token manufacturer
  std::optional<std::string> model;         // token model
  std::optional<std::string> serial;        // token serial number
  std::optional<unsigned long> slot_id;     // slot-id (decimal)
  std::optional<std::string> object;        // CKA_LABEL
  std::optional<std::string> id;            // CKA_ID, raw bytes
  std::optional<ObjectType> type;
  // Query attributes.
  std::optional<std::string> module_path;
  std::optional<std::string> module_name;
  std::optional<std::string> pin_source;
  std::optional<std::string> pin_value;

  // True when any of token, manufacturer, model, serial, slot-id is given.
  bool has_token_selector() const;
  // The module to load: module-path, else module-name resolved in the system PKCS#11 folders, else
  // kDefaultModule. Error(NotFound) when module-name resolves to nothing.
  std::string module() const;
  // "token=hwca-root" (or serial=..., slot-id=...) for messages.
  std::string token_selector_text() const;
  // "object=root-ca" / "id=0a1b" / "object=root-ca;id=0a1b" for messages.
  std::string object_selector_text() const;
};

// Parses a pkcs11: URI. Every failure is Error(BadInput, "invalid PKCS#11 URI: <reason>"): one line, never
// echoing a PIN.
Pkcs11Uri parse_pkcs11_uri(const std::string& uri);

// Percent-encodes a value for a PKCS#11 URI (unreserved characters and a few safe ones stay as they are).
std::string pkcs11_uri_escape(const std::string& value);

}  // namespace hwca::tokens::pkcs11
