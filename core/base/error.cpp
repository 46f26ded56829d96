#include "core/base/error.h"

#include <openssl/err.h>

#include <algorithm>
#include <utility>
#include <vector>

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
  std::vector<unsigned long> codes;
  for (unsigned long e = 0; (e = ERR_get_error()) != 0;) codes.push_back(e);
  // ERR_get_error leaves each entry's file and function strings allocated until the slot is reused;
  // clearing frees them now, so no error text outlives the call that reported it.
  ERR_clear_error();
  // "EVP lib" entries only say that the failure came from below (a provider, the token): when something
  // more specific was queued, they are noise ("...: cannot reach the TPM; asn1 encoding routines::EVP lib").
  const bool specific = std::any_of(codes.begin(), codes.end(), [](unsigned long e) { return ERR_GET_REASON(e) != ERR_R_EVP_LIB; });
  std::string out;
  char buf[256];
  for (unsigned long e : codes) {
    if (specific && ERR_GET_REASON(e) == ERR_R_EVP_LIB) continue;
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    // Keep the human part only: "error:0480006C:PEM routines::no start line" -> "PEM routines::no start line"
    std::string s(buf);
    auto pos = s.find(':', s.find(':') + 1);
    out += pos == std::string::npos ? s : s.substr(pos + 1);
  }
  return out;
}

OpensslErrorScope::OpensslErrorScope() { ERR_set_mark(); }
OpensslErrorScope::~OpensslErrorScope() { ERR_pop_to_mark(); }

void throw_openssl(ErrorKind kind, const std::string& what) {
  std::string detail = drain_openssl_errors();
  throw Error(kind, detail.empty() ? what : what + ": " + detail);
}

}  // namespace hwca
