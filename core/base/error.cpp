#include "core/base/error.h"

#include <openssl/err.h>

#include <utility>

namespace hwca {

Error::Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), m_kind(kind) {}

Error::Error(ErrorKind kind, const std::string& message, std::string call, std::uint64_t code,
             std::string code_name)
    : std::runtime_error(message),
      m_kind(kind),
      m_call(std::move(call)),
      m_code(code),
      m_code_name(std::move(code_name)) {}

std::string drain_openssl_errors() {
  std::string out;
  unsigned long e = 0;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    // Keep the human part only: "error:0480006C:PEM routines::no start line" -> "PEM routines::no start line"
    std::string s(buf);
    auto pos = s.find(':', s.find(':') + 1);
    out += pos == std::string::npos ? s : s.substr(pos + 1);
  }
  return out;
}

void throw_openssl(ErrorKind kind, const std::string& what) {
  std::string detail = drain_openssl_errors();
  throw Error(kind, detail.empty() ? what : what + ": " + detail);
}

}  // namespace hwca
