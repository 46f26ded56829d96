// PINs: where they come from, and how they are kept. A PIN never reaches argv, a log or an error message.
#pragma once

#include <optional>
#include <string>

namespace hwca::tokens {

// A secret kept in a std::string that is wiped (OPENSSL_cleanse) when destroyed or moved from.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value);
  ~SecretString();
  SecretString(SecretString&& other) noexcept;
  SecretString& operator=(SecretString&& other) noexcept;
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;

  const std::string& str() const noexcept { return m_value; }
  const char* c_str() const noexcept { return m_value.c_str(); }
  size_t size() const noexcept { return m_value.size(); }
  bool empty() const noexcept { return m_value.empty(); }
  void clear() noexcept;

 private:
  std::string m_value;
};

// Wipes a string's whole buffer (including spare capacity) and empties it.
void cleanse(std::string& s) noexcept;

struct PinSources {
  std::optional<std::string> pin_source;  // the URI's pin-source: "file:/path" or a bare path
  std::optional<std::string> pin_value;   // the URI's pin-value
  bool allow_pin_value = false;           // the URI came from a config file, not argv
  std::string token;                      // token label, for the prompt
};

// A process-wide PIN that takes the place of every other source (hwca --pin-shares: the secret the
// custodians' shares rebuild). Kept in an mlock'ed page excluded from core dumps and wiped by
// clear_pin_override() (and at exit). resolve_pin() hands out copies that the caller wipes after C_Login.
void set_pin_override(const void* data, size_t size);
void clear_pin_override() noexcept;
bool has_pin_override() noexcept;

// A copy of the process-wide override, or nullopt when none is set (for backends whose keys each have a
// secret of their own, such as TPM keys, where a key's own pin-source comes first).
std::optional<SecretString> pin_override_copy();

// Resolves a PIN, first match wins:
//   0. the process-wide override (set_pin_override), when set;
//   1. pin-source=file:/path (or a bare path): the file's contents, one trailing newline stripped;
//   2. pin-value, when `allow_pin_value`;
//   3. the environment variable HWCA_PIN;
//   4. when stdin is a terminal: a prompt "PIN for token X: " on /dev/tty with echo off.
// Otherwise Error(BadInput, "no PIN: ..."). A missing PIN file is Error(NotFound); an empty one BadInput.
SecretString resolve_pin(const PinSources& sources);

// Reads a pin-source value ("file:/path", "file:///path" or a bare path).
SecretString read_pin_source(const std::string& pin_source);

}  // namespace hwca::tokens
