// Profiles: what a certificate may be (usages, validity, CA constraint, name rules). Built-in
// profiles (server, client, peer) and cfssl's ca-config.json profiles share this one type.
#pragma once

#include <chrono>
#include <ctime>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace hwca::core {

// Go's time.ParseDuration: "43800h", "8760h", "30m0s", "1h30m", "1.5h", "300ms", "-1h". Error(BadInput)
// for anything else ("forever", "", "5d").
std::chrono::seconds parse_go_duration(const std::string& text);
std::string format_go_duration(std::chrono::seconds d);  // 43800h0m0s

struct Usages {
  unsigned key_usage = 0;          // X509v3_KU_* bits
  std::vector<int> ext_key_usage;  // NIDs, in the order named, without duplicates
};
// Every usage name cfssl accepts (§5.2), both spellings of "content commitment". An unknown name is an
// Error(BadInput) naming it and the profile (cfssl ignores it silently; hwca refuses).
Usages parse_usages(const std::vector<std::string>& names, const std::string& profile_name);

struct CaConstraint {
  bool is_ca = false;
  int max_path_len = 0;
  bool max_path_len_zero = false;
};

struct AuthRemote {
  std::string remote;
  std::string auth_key;
};

struct Profile {
  std::string name;
  std::vector<std::string> usages;
  std::chrono::seconds expiry{0};
  std::optional<std::chrono::seconds> backdate;  // default 5 minutes
  std::optional<std::time_t> not_before;         // overrides the computed date
  std::optional<std::time_t> not_after;
  std::optional<CaConstraint> ca_constraint;
  std::optional<std::string> name_whitelist;     // ECMAScript regex; CN and every DNS SAN must match
  std::string auth_key;                          // name in auth_keys
  std::string remote;
  std::optional<AuthRemote> auth_remote;
  // Built-in profiles add keyEncipherment only for RSA subject keys.
  bool key_encipherment_only_for_rsa = false;

  bool requires_auth() const { return !auth_key.empty() || (auth_remote && !auth_remote->auth_key.empty()); }
  // The usages as bits and NIDs; Error(Policy) naming the profile when it has none, Error(BadInput)
  // for an unknown name.
  Usages resolve_usages() const;
  // Error(BadInput) when expiry is zero or negative (named after the profile).
  void check_expiry() const;
};

// A name_whitelist as cfssl writes it (a Go regexp): compiled as ECMAScript, with Go's leading
// inline flag "(?i)" turned into case-insensitive matching. Error(BadInput) when it does not compile.
std::regex compile_name_whitelist(const std::string& pattern);

// Built-in profiles: "server" (serverAuth), "client" (clientAuth), "peer" (both), each with
// digitalSignature (+ keyEncipherment for RSA keys), 8760h. Error(BadInput) for other names.
Profile builtin_profile(const std::string& name);

// The policy cfssl applies to -initca: usages cert sign + crl sign, 43800h, CA:TRUE.
Profile initca_profile();

}  // namespace hwca::core
