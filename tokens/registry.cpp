#include "tokens/backend.h"

#include "core/base/error.h"
#include "tokens/file/file_backend.h"
#include "tokens/pkcs11/pkcs11_backend.h"
#include "tokens/tpm2/tpm2_backend.h"

#include <algorithm>
#include <cctype>

namespace hwca::tokens {

std::optional<std::string> KeyDescription::attribute(const std::string& name) const {
  for (const auto& [key, value] : attributes)
    if (key == name) return value;
  return std::nullopt;
}

void refuse_pin_value_on_command_line(const std::string& uri) {
  if (Registry::scheme_of(uri) != "pkcs11") return;
  // Attribute names sit after the scheme, between ';', '?' and '&' separators.
  std::string::size_type pos = uri.find(':') + 1;
  while (pos <= uri.size()) {
    auto end = uri.find_first_of(";?&", pos);
    if (end == std::string::npos) end = uri.size();
    std::string component = uri.substr(pos, end - pos);
    std::string name = component.substr(0, component.find('='));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (name == "pin-value")
      throw Error(ErrorKind::Usage,
                  "pin-value would put the PIN in the process list; use pin-source=file:... or HWCA_PIN");
    pos = end + 1;
  }
}

Registry::Registry() = default;

Registry::~Registry() {
  // Reverse order of creation: the last backend opened goes first.
  while (!m_backends.empty()) m_backends.pop_back();
}

void Registry::add(const std::string& scheme, Factory factory) {
  for (auto& entry : m_factories) {
    if (entry.first == scheme) {
      entry.second = std::move(factory);
      return;
    }
  }
  m_factories.emplace_back(scheme, std::move(factory));
}

std::string Registry::scheme_of(const std::string& uri) {
  auto colon = uri.find(':');
  if (colon == std::string::npos) return {};
  std::string scheme = uri.substr(0, colon);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return scheme;
}

KeyBackend& Registry::backend_for(const std::string& uri) {
  const std::string scheme = scheme_of(uri);
  for (auto& entry : m_backends)
    if (entry.first == scheme) return *entry.second;
  for (auto& entry : m_factories) {
    if (entry.first == scheme && !scheme.empty()) {
      auto backend = entry.second();
      if (!backend) throw Error(ErrorKind::Internal, "the " + scheme + ": key backend could not be created");
      m_backends.emplace_back(scheme, std::move(backend));
      return *m_backends.back().second;
    }
  }
  // Only the scheme is echoed: the rest of the URI may hold secrets.
  std::string shown = scheme.size() > 32 ? scheme.substr(0, 32) + "..." : scheme;
  for (auto& c : shown)
    if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
  throw Error(ErrorKind::BadInput, "unknown key URI scheme '" + shown + "' (use pkcs11:, tpm2: or file:)");
}

std::unique_ptr<Registry> Registry::with_builtin_backends() {
  auto registry = std::make_unique<Registry>();
  registry->add("pkcs11", [] { return make_pkcs11_backend(); });
  registry->add("file", [] { return make_file_backend(); });
  registry->add("tpm2", [] { return make_tpm2_backend(); });
  return registry;
}

}  // namespace hwca::tokens
