#include "tokens/tpm2/uri.h"

#include "core/base/error.h"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <sys/stat.h>

namespace hwca::tokens::tpm2 {

namespace {

[[noreturn]] void bad(const std::string& why) { throw Error(ErrorKind::BadInput, "invalid tpm2: key URI: " + why); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const std::string& in, const std::string& name) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) bad("truncated %-escape in " + name);
    int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) bad("invalid %-escape in " + name);
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  for (char c : out)
    if (c == '\0' || c == '\n' || c == '\r') bad("control character in " + name);
  return out;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::uint32_t parse_handle(const std::string& text) {
  std::string t = lower(text);
  int base = 10;
  std::string digits = t;
  if (t.rfind("0x", 0) == 0) {
    base = 16;
    digits = t.substr(2);
  }
  std::uint32_t value = 0;
  const char* first = digits.data();
  const char* last = digits.data() + digits.size();
  auto [ptr, ec] = std::from_chars(first, last, value, base);
  if (digits.empty() || ec != std::errc() || ptr != last) bad("handle '" + text.substr(0, 20) + "' is not a number");
  if (value < 0x81000000u || value > 0x817FFFFFu)
    bad("handle " + handle_hex(value) + " is not an owner-hierarchy persistent handle (0x81000000-0x817FFFFF)");
  return value;
}

}  // namespace

std::string handle_hex(std::uint32_t handle) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", handle);
  return buf;
}

std::string Tpm2Uri::where() const {
  if (handle) return "TPM handle " + handle_hex(*handle);
  return "key file " + file.value_or("?");
}

Tpm2Uri parse_tpm2_uri(const std::string& text) {
  if (lower(text.substr(0, 5)) != "tpm2:") bad("it must start with 'tpm2:'");
  std::string rest = text.substr(5);
  std::string path = rest, query;
  if (auto q = rest.find('?'); q != std::string::npos) {
    path = rest.substr(0, q);
    query = rest.substr(q + 1);
  }
  Tpm2Uri uri;
  auto each = [](const std::string& s, char sep, auto&& fn) {
    size_t pos = 0;
    while (pos <= s.size()) {
      auto end = s.find(sep, pos);
      if (end == std::string::npos) end = s.size();
      std::string part = s.substr(pos, end - pos);
      if (!part.empty()) fn(part);
      pos = end + 1;
    }
  };
  each(path, ';', [&](const std::string& part) {
    auto eq = part.find('=');
    if (eq == std::string::npos) bad("'" + part.substr(0, 32) + "' is not name=value (use handle=0x81... or file=/path)");
    std::string name = lower(part.substr(0, eq));
    std::string value = percent_decode(part.substr(eq + 1), name);
    if (name == "handle") {
      if (uri.handle) bad("handle given twice");
      uri.handle = parse_handle(value);
    } else if (name == "file") {
      if (uri.file) bad("file given twice");
      if (value.empty()) bad("file= names no path");
      if (value.back() == '/') bad(value + " is a folder");
      uri.file = value;
    } else {
      bad("unknown attribute '" + name.substr(0, 32) + "' (use handle= or file=)");
    }
  });
  each(query, '&', [&](const std::string& part) {
    auto eq = part.find('=');
    std::string name = lower(part.substr(0, eq));
    if (eq == std::string::npos) bad("'" + name.substr(0, 32) + "' has no value");
    if (name == "pin-value")
      bad("pin-value is not accepted for TPM keys (the auth value would be in the URI): use pin-source=file:/path");
    std::string value = percent_decode(part.substr(eq + 1), name);
    if (name == "tcti") {
      if (uri.tcti) bad("tcti given twice");
      if (value.empty()) bad("tcti= is empty");
      uri.tcti = value;
    } else if (name == "pin-source") {
      if (uri.pin_source) bad("pin-source given twice");
      uri.pin_source = value;
    } else {
      bad("unknown query attribute '" + name.substr(0, 32) + "' (use tcti= or pin-source=)");
    }
  });
  if (uri.handle && uri.file) bad("give either handle= or file=, not both");
  if (!uri.handle && !uri.file) bad("no key named: use tpm2:handle=0x81000100 or tpm2:file=/path/key.tss2.pem");
  return uri;
}

std::string resolve_tcti(const Tpm2Uri& uri) {
  if (uri.tcti) return *uri.tcti;
  for (const char* name : {"HWCA_TCTI", "TPM2TSS_TCTI", "TPM2OPENSSL_TCTI"})
    if (const char* v = std::getenv(name); v && *v) return v;
  struct stat st {};
  if (::stat("/dev/tpmrm0", &st) == 0) return "device:/dev/tpmrm0";
  return "swtpm";
}

}  // namespace hwca::tokens::tpm2
