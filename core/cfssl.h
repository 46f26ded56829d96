// cfssl's JSON formats: ca-config.json and CSR JSON (spec §5.1-5.2), parsed with nlohmann-json.
#pragma once

#include "core/base/algorithm.h"
#include "core/profile.h"
#include "core/x509.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hwca::core {

struct AuthKey {
  std::string type;  // "standard"
  std::string key;   // hex
};

struct CfsslConfig {
  Profile default_profile;
  bool has_default = false;
  std::map<std::string, Profile> profiles;
  std::map<std::string, AuthKey> auth_keys;
  std::map<std::string, std::string> remotes;

  // Error(BadInput) naming `what` for broken JSON, wrong types, bad durations or timestamps, unknown
  // usages, an auth key of another type than "standard" or not hex, an auth_key naming no key.
  static CfsslConfig parse(const std::string& json, const std::string& what);
  // cfssl's built-in default when no -config is given: [signing, key encipherment, server auth,
  // client auth], 8760h.
  static CfsslConfig builtin();

  // The profile `name` names. An empty name, or a name the config does not define, falls back to
  // `default` as cfssl does; then `*warning` is set to one line naming the missing profile, unless
  // `strict`, which makes it an Error(BadInput). Error(Policy) when neither exists.
  const Profile& select(const std::string& name, bool strict, std::string* warning) const;
};

struct CfsslName {
  std::string C, ST, L, O, OU;
};

struct CfsslCaSection {
  std::string expiry;
  int pathlen = 0;
  bool pathlenzero = false;
};

struct CfsslCsr {
  std::string cn;
  std::vector<std::string> hosts;
  KeySpec key{KeySpec::Type::Ec, 256};  // default ecdsa 256
  std::vector<CfsslName> names;
  std::optional<CfsslCaSection> ca;
  std::string serialnumber;

  // Accepts "CN"/"cn" (Go matches keys case-insensitively), "hosts", "key", "names", "ca",
  // "serialnumber". Error(BadInput) naming `what` for broken JSON, wrong types, bad keys.
  static CfsslCsr parse(const std::string& json, const std::string& what);
  // Subject in cfssl's order C, ST, L, O, OU, CN (+ serialNumber); several `names` entries give one
  // multi-valued RDN per attribute type.
  X509_NAME_ptr subject() const;
};

}  // namespace hwca::core
