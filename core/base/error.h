// The project's one error type. Every layer throws hwca::Error; cli/ turns it into one line
// `hwca: error: ...` and an exit code.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace hwca {

enum class ErrorKind {
  Usage,     // the command line itself is wrong (exit 2)
  BadInput,  // a file, URI, CSR, JSON or YAML the user gave is malformed
  Policy,    // a well-formed request that a profile or signer rule refuses
  Token,     // the PKCS#11 module, TPM or other key backend failed
  NotFound,  // a key, token, file or record that should exist does not
  Conflict,  // something that must not be overwritten already exists
  Io,        // reading or writing a file, the ledger
  Internal,  // a bug or an OpenSSL failure that input cannot explain
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);
  // A backend failure: `call` is the function that failed (C_Login, Esys_Sign), `code` its raw
  // return value and `code_name` its symbolic name (CKR_PIN_INCORRECT).
  Error(ErrorKind kind, const std::string& message, std::string call, std::uint64_t code,
        std::string code_name);

  ErrorKind kind() const noexcept { return m_kind; }
  const std::string& call() const noexcept { return m_call; }
  std::uint64_t backend_code() const noexcept { return m_code; }
  const std::string& code_name() const noexcept { return m_code_name; }

 private:
  ErrorKind m_kind;
  std::string m_call;
  std::uint64_t m_code = 0;
  std::string m_code_name;
};

// Throws Error(kind, what + ": " + the drained OpenSSL error queue).
[[noreturn]] void throw_openssl(ErrorKind kind, const std::string& what);

// The OpenSSL error queue as one line (and clears it); empty when the queue is empty.
std::string drain_openssl_errors();

// Around an OpenSSL call that may succeed with errors queued on the way (PEM_read_* skipping a block it
// could not read): whatever was queued after construction is dropped at destruction, so a later,
// unrelated failure does not report stale text and the queue does not grow call by call.
class OpensslErrorScope {
 public:
  OpensslErrorScope();
  ~OpensslErrorScope();
  OpensslErrorScope(const OpensslErrorScope&) = delete;
  OpensslErrorScope& operator=(const OpensslErrorScope&) = delete;
};

}  // namespace hwca
