// The key-backend boundary. A backend generates keys inside its device, opens them by URI as an
// OpenSSL EVP_PKEY that can sign, and describes them. It never learns what a certificate is.
#pragma once

#include "core/base/algorithm.h"
#include "core/base/ossl.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hwca::tokens {

// An open key that can sign. Owned by the caller; must be destroyed before the Registry.
class Signer {
 public:
  virtual ~Signer() = default;
  // An EVP_PKEY that OpenSSL signs with (X509_sign, EVP_DigestSign). Owned by the Signer.
  virtual EVP_PKEY* pkey() const = 0;
  // The public half as a plain software EVP_PKEY (for SKI, comparison, PEM).
  virtual EVP_PKEY* public_key() const = 0;
  virtual std::string uri() const = 0;
};

struct KeyDescription {
  std::string uri;
  std::string backend;    // "pkcs11", "file", "tpm2"
  std::string algorithm;  // KeySpec::name(): "ecdsa-p384"
  bool hardware = false;  // the private key lives in a device
  // The device's own readings, in display order: {"sensitive","true"}, {"never-extractable","false"}, ...
  std::vector<std::pair<std::string, std::string>> attributes;
  EVP_PKEY_ptr public_key;

  // Looks up an attribute reading; nullopt when the backend does not report it.
  std::optional<std::string> attribute(const std::string& name) const;
};

// Options for generating a key inside the device.
struct GenerateOptions {
  KeySpec spec;
};

class KeyBackend {
 public:
  virtual ~KeyBackend() = default;
  virtual std::string scheme() const = 0;
  // Generates a key inside the device at the place the URI names. Error(Conflict) when a key with
  // that label or id already exists (it is never overwritten).
  virtual std::unique_ptr<Signer> generate(const std::string& uri, const GenerateOptions& options) = 0;
  // Opens an existing key. Error(NotFound) when no key matches, Error(BadInput) when several do.
  virtual std::unique_ptr<Signer> open(const std::string& uri) = 0;
  // True when exactly one key matches; false when none does; Error when several do.
  virtual bool exists(const std::string& uri) = 0;
  virtual KeyDescription describe(const std::string& uri) = 0;
};

// Optional capability: bring an existing software key into the device (CKA_SENSITIVE, not extractable).
class KeyImporter {
 public:
  virtual ~KeyImporter() = default;
  virtual std::unique_ptr<Signer> import_key(const std::string& uri, EVP_PKEY* key) = 0;
};

// Optional capability: initialise a token (PKCS#11 C_InitToken + C_InitPIN). PINs come from sources,
// never from argv.
class TokenInitializer {
 public:
  virtual ~TokenInitializer() = default;
  // `uri` names the token (token=LABEL, module-path, pin-source for the user PIN).
  virtual void init_token(const std::string& uri, const std::string& so_pin) = 0;
};

// Optional capability: replace the secret that unlocks one key (custody of a TPM key:
// Esys_ObjectChangeAuth). The current secret comes from the key URI's pin-source, else the process-wide
// override (tokens/pin.h, `--pin-shares`). A wrong current secret is never retried.
class KeyAuthChanger {
 public:
  // Set by change_key_auth at the point after which the new secret may be the only way into the key: a
  // caller that wrote the new secret somewhere (share files) must keep it from then on, even on failure.
  struct Progress {
    bool committed = false;
  };
  virtual ~KeyAuthChanger() = default;
  // The longest auth value the key can take (a TPM key: its name algorithm's digest size, 32 bytes).
  virtual size_t max_auth_size() const = 0;
  // Gives the key `new_auth` and proves it with one signature. When this returns, the key the URI names
  // opens with `new_auth` and not with the old value (older copies of a key blob: see docs/ceremony.md).
  // Before `progress.committed` is set nothing has changed (an error leaves the key as it was). Returns
  // what was done, one line each, for people.
  virtual std::vector<std::string> change_key_auth(const std::string& uri, std::string_view new_auth, Progress& progress) = 0;
  // Completes a change_key_auth that did not finish (the process died), with the NEW secret from the
  // URI's sources or the override. Returns what was done; empty when there was nothing to finish.
  virtual std::vector<std::string> resume_key_auth_change(const std::string& uri) = 0;
  // Opens the key with `auth` (not from any source) and makes one signature: Error(Token) when refused.
  virtual void check_key_auth(const std::string& uri, std::string_view auth) = 0;
};

// Throws Error(Usage) when a pkcs11: URI carries `pin-value` (the PIN would be visible in the process
// list). cli/ calls this for every key URI taken from argv; URIs from config files may carry pin-value.
void refuse_pin_value_on_command_line(const std::string& uri);

// Maps a URI scheme ("pkcs11", "file", "tpm2") to its backend. Created in main(); owns every backend
// and so every library handle; destroyed last, in reverse order of registration.
class Registry {
 public:
  using Factory = std::function<std::unique_ptr<KeyBackend>()>;
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  void add(const std::string& scheme, Factory factory);
  // The backend for a URI's scheme, created on first use. Error(BadInput) for an unknown scheme.
  KeyBackend& backend_for(const std::string& uri);
  static std::string scheme_of(const std::string& uri);

  // A registry with every built-in backend (pkcs11, tpm2, file).
  static std::unique_ptr<Registry> with_builtin_backends();

 private:
  std::vector<std::pair<std::string, Factory>> m_factories;
  std::vector<std::pair<std::string, std::unique_ptr<KeyBackend>>> m_backends;  // creation order
};

}  // namespace hwca::tokens
