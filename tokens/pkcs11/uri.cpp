#include "tokens/pkcs11/uri.h"

#include "core/base/error.h"
#include "core/base/ossl.h"

#include <cctype>
#include <charconv>
#include <set>
#include <sys/stat.h>
#include <vector>

namespace hwca::tokens::pkcs11 {

namespace {

[[noreturn]] void bad(const std::string& reason) {
  throw Error(ErrorKind::BadInput, "invalid PKCS#11 URI: " + reason);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `raw`; `name` is the attribute, for messages. Binary results (NUL, control
// characters) are allowed only when `binary` is set.
std::string decode(const std::string& raw, const std::string& name, bool binary) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '%') {
      if (i + 2 >= raw.size()) bad("incomplete percent-escape in '" + name + "'");
      int hi = hex_value(raw[i + 1]);
      int lo = hex_value(raw[i + 2]);
      if (hi < 0 || lo < 0) bad("bad percent-escape in '" + name + "'");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      auto u = static_cast<unsigned char>(c);
      if (u < 0x21 || u == 0x7f) bad("unescaped space or control character in '" + name + "'");
      out += c;
    }
  }
  if (!binary) {
    for (char c : out) {
      auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f) bad("control character in '" + name + "'");
    }
  }
  return out;
}

void set_once(std::optional<std::string>& slot, std::string value, const std::string& name) {
  if (slot) bad("duplicate attribute '" + name + "'");
  slot = std::move(value);
}

bool is_vendor(const std::string& name) { return name.size() > 2 && name.rfind("x-", 0) == 0; }

bool valid_name(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

Pkcs11Uri parse_pkcs11_uri(const std::string& uri) {
  static const std::string prefix = "pkcs11:";
  if (uri.size() < prefix.size()) bad("it must start with 'pkcs11:'");
  for (size_t i = 0; i < prefix.size(); ++i)
    if (static_cast<char>(std::tolower(static_cast<unsigned char>(uri[i]))) != prefix[i])
      bad("it must start with 'pkcs11:'");
  if (uri.find('#') != std::string::npos) bad("fragments ('#') are not allowed");

  std::string rest = uri.substr(prefix.size());
  auto qpos = rest.find('?');
  std::string path = rest.substr(0, qpos);
  std::string query = qpos == std::string::npos ? std::string() : rest.substr(qpos + 1);
  if (qpos != std::string::npos && query.empty()) bad("empty query after '?'");

  Pkcs11Uri out;
  std::set<std::string> seen;
  std::optional<std::string> slot_id_text, type_text;
  std::optional<std::string> library_manufacturer, library_description, library_version;
  auto split = [](const std::string& s, char sep) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
      auto end = s.find(sep, start);
      parts.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    return parts;
  };

  if (!path.empty()) {
    for (const auto& component : split(path, ';')) {
      if (component.empty()) bad("empty path attribute (stray ';')");
      auto eq = component.find('=');
      if (eq == std::string::npos) bad("path attribute without '=' (use name=value)");
      std::string name = component.substr(0, eq);
      std::string raw = component.substr(eq + 1);
      if (!valid_name(name)) bad("malformed path attribute name");
      if (!seen.insert(name).second) bad("duplicate attribute '" + name + "'");
      bool binary = name == "id";
      std::string value = decode(raw, name, binary);
      if (value.empty()) bad("empty value for '" + name + "'");
      if (name == "token") set_once(out.token, value, name);
      else if (name == "manufacturer") set_once(out.manufacturer, value, name);
      else if (name == "model") set_once(out.model, value, name);
      else if (name == "serial") set_once(out.serial, value, name);
      else if (name == "object") set_once(out.object, value, name);
      else if (name == "id") set_once(out.id, value, name);
      else if (name == "slot-id") set_once(slot_id_text, value, name);
      else if (name == "type") set_once(type_text, value, name);
      else if (name == "library-manufacturer") set_once(library_manufacturer, value, name);
      else if (name == "library-description") set_once(library_description, value, name);
      else if (name == "library-version") set_once(library_version, value, name);
      else if (name == "slot-description" || name == "slot-manufacturer") {
        // Accepted and ignored: hwca selects tokens, not readers.
      } else if (is_vendor(name)) {
        // RFC 7512: vendor-specific attributes may be ignored.
      } else if (name == "module-path" || name == "module-name" || name == "pin-source" || name == "pin-value") {
        bad("'" + name + "' belongs in the query (after '?')");
      } else {
        bad("unknown path attribute '" + name + "'");
      }
    }
  }

  if (!query.empty()) {
    for (const auto& component : split(query, '&')) {
      if (component.empty()) bad("empty query attribute (stray '&')");
      auto eq = component.find('=');
      if (eq == std::string::npos) bad("query attribute without '=' (use name=value)");
      std::string name = component.substr(0, eq);
      if (!valid_name(name)) bad("malformed query attribute name");
      if (!seen.insert(name).second) bad("duplicate attribute '" + name + "'");
      std::string value = decode(component.substr(eq + 1), name, false);
      if (value.empty()) bad("empty value for '" + name + "'");
      if (name == "module-path") set_once(out.module_path, value, name);
      else if (name == "module-name") set_once(out.module_name, value, name);
      else if (name == "pin-source") set_once(out.pin_source, value, name);
      else if (name == "pin-value") set_once(out.pin_value, value, name);
      else if (is_vendor(name)) {
      } else if (name == "token" || name == "object" || name == "id" || name == "serial" || name == "type" ||
                 name == "slot-id" || name == "manufacturer" || name == "model") {
        bad("'" + name + "' belongs in the path (before '?')");
      } else {
        bad("unknown query attribute '" + name + "'");
      }
    }
  }

  if (slot_id_text) {
    unsigned long v = 0;
    const char* first = slot_id_text->data();
    const char* last = first + slot_id_text->size();
    auto [ptr, ec] = std::from_chars(first, last, v);
    if (ec != std::errc() || ptr != last) bad("slot-id must be a decimal number");
    out.slot_id = v;
  }
  if (type_text) {
    const std::string& t = *type_text;
    if (t == "private") out.type = Pkcs11Uri::ObjectType::Private;
    else if (t == "public") out.type = Pkcs11Uri::ObjectType::Public;
    else if (t == "cert") out.type = Pkcs11Uri::ObjectType::Cert;
    else if (t == "secret-key") out.type = Pkcs11Uri::ObjectType::SecretKey;
    else if (t == "data") out.type = Pkcs11Uri::ObjectType::Data;
    else bad("type must be private, public, cert, secret-key or data");
  }
  if (out.module_path && out.module_name) bad("give module-path or module-name, not both");
  if (out.module_path && out.module_path->front() != '/') bad("module-path must be an absolute path");
  if (out.module_name && out.module_name->find('/') != std::string::npos)
    bad("module-name must be a name, not a path (use module-path)");
  if (out.pin_source && out.pin_value) bad("give pin-source or pin-value, not both");
  if (!out.has_token_selector() && !out.object && !out.id)
    bad("it names no token and no object (add token=... or object=...)");
  return out;
}

bool Pkcs11Uri::has_token_selector() const {
  return token || manufacturer || model || serial || slot_id;
}

std::string Pkcs11Uri::module() const {
  if (module_path) return *module_path;
  if (!module_name) return kDefaultModule;
  const std::string& n = *module_name;
  const std::vector<std::string> folders = {"/usr/lib/x86_64-linux-gnu/pkcs11", "/usr/lib/softhsm"};
  std::vector<std::string> names = {n, n + ".so", "lib" + n + ".so"};
  if (n.size() > 3 && n.compare(n.size() - 3, 3, ".so") == 0) names = {n, "lib" + n};
  for (const auto& folder : folders)
    for (const auto& name : names)
      if (is_file(folder + "/" + name)) return folder + "/" + name;
  throw Error(ErrorKind::NotFound, "PKCS#11 module-name '" + n +
                                       "' not found in /usr/lib/x86_64-linux-gnu/pkcs11 or /usr/lib/softhsm "
                                       "(use module-path=...)");
}

std::string Pkcs11Uri::token_selector_text() const {
  std::string out;
  auto add = [&out](const char* name, const std::string& value) {
    if (!out.empty()) out += ';';
    out += name;
    out += '=';
    out += value;
  };
  if (token) add("token", *token);
  if (serial) add("serial", *serial);
  if (slot_id) add("slot-id", std::to_string(*slot_id));
  if (manufacturer) add("manufacturer", *manufacturer);
  if (model) add("model", *model);
  if (out.empty()) out = "(any token)";
  return out;
}

std::string Pkcs11Uri::object_selector_text() const {
  std::string out;
  if (object) out = "object=" + *object;
  if (id) out += (out.empty() ? "" : ";") + std::string("id=") + to_hex(*id);
  return out;
}

std::string pkcs11_uri_escape(const std::string& value) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    bool keep = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || c == '-' ||
                c == '.' || c == '_' || c == '~' || c == '/' || c == ':' || c == '@' || c == '!' || c == '$' ||
                c == '\'' || c == '(' || c == ')' || c == '*' || c == '+' || c == ',';
    if (keep) {
      out += c;
    } else {
      out += '%';
      out += digits[u >> 4];
      out += digits[u & 0xf];
    }
  }
  return out;
}

}  // namespace hwca::tokens::pkcs11
