#include "core/cfssl.h"

#include "core/base/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <limits>
#include <regex>

namespace hwca::core {

namespace {

using json = nlohmann::json;

std::string one_line(const std::string& s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  return out;
}

json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large (fuzz/)
    std::string msg = e.what();
    auto pos = msg.find("] ");
    if (pos != std::string::npos) msg = msg.substr(pos + 2);
    throw Error(ErrorKind::BadInput, what + " is not valid JSON: " + one_line(msg));
  }
}

const char* type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// A JSON object read the way Go's encoding/json reads a struct: the exact key first, else any key
// that matches case-insensitively; null is the same as absent.
class Obj {
 public:
  Obj(const json& j, std::string what, std::string path) : m_j(j), m_what(std::move(what)), m_path(std::move(path)) {
    if (!m_j.is_object()) fail("", std::string("expected an object, got ") + type_name(m_j));
  }

  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    std::string where = field(key);
    throw Error(ErrorKind::BadInput, m_what + ": " + (where.empty() ? "" : where + ": ") + msg);
  }

  std::string field(const std::string& key) const {
    if (key.empty()) return m_path;
    return m_path.empty() ? key : m_path + "." + key;
  }

  const json* find(const std::string& key) const {
    auto it = m_j.find(key);
    if (it != m_j.end()) return it->is_null() ? nullptr : &*it;
    for (auto i = m_j.begin(); i != m_j.end(); ++i) {
      if (iequals(i.key(), key)) return i->is_null() ? nullptr : &*i;
    }
    return nullptr;
  }

  std::optional<std::string> str(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(key, std::string("expected a string, got ") + type_name(*v));
    return v->get<std::string>();
  }

  std::optional<bool> boolean(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) fail(key, std::string("expected true or false, got ") + type_name(*v));
    return v->get<bool>();
  }

  std::optional<int> integer(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) {
      auto u = v->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) fail(key, "number out of range");
      return static_cast<int>(u);
    }
    if (v->is_number_integer()) {
      auto i = v->get<std::int64_t>();
      if (i > std::numeric_limits<int>::max() || i < std::numeric_limits<int>::min()) fail(key, "number out of range");
      return static_cast<int>(i);
    }
    fail(key, std::string("expected an integer, got ") + (v->is_number_float() ? "a fractional number" : type_name(*v)));
  }

  std::optional<std::vector<std::string>> strings(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array()) fail(key, std::string("expected an array of strings, got ") + type_name(*v));
    std::vector<std::string> out;
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (e.is_null()) {  // Go leaves a null element as the zero value
        out.emplace_back();
        continue;
      }
      if (!e.is_string()) fail(key + "[" + std::to_string(i) + "]", std::string("expected a string, got ") + type_name(e));
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  std::optional<Obj> object(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_object()) fail(key, std::string("expected an object, got ") + type_name(*v));
    return Obj(*v, m_what, field(key));
  }

  const json& raw() const { return m_j; }
  const std::string& what() const { return m_what; }
  const std::string& path() const { return m_path; }

 private:
  const json& m_j;
  std::string m_what;
  std::string m_path;
};

int days_in_month(int year, int month) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : days[month - 1];
}

// RFC 3339 ("2026-01-02T15:04:05Z", "...05.123+01:00"), as Go's time.Time unmarshals JSON.
std::optional<std::time_t> parse_rfc3339(const std::string& text) {
  static const std::regex re(R"(^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))$)");
  std::smatch m;
  if (!std::regex_match(text, m, re)) return std::nullopt;
  auto num = [&](size_t i) { return std::stoi(m[i].str()); };
  int year = num(1), month = num(2), day = num(3), hour = num(4), minute = num(5), second = num(6);
  if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59)
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  std::time_t t = timegm(&tm);
  if (m[9].matched) {
    int oh = num(10), om = num(11);
    if (oh > 23 || om > 59) return std::nullopt;
    long offset = oh * 3600L + om * 60L;
    t = m[9].str() == "+" ? t - offset : t + offset;
  }
  return t;
}

std::chrono::seconds duration_field(const Obj& o, const std::string& key, const std::string& value) {
  try {
    return parse_go_duration(value);
  } catch (const Error& e) {
    o.fail(key, e.what());
  }
}

Profile parse_profile(const Obj& o, const std::string& name) {
  Profile p;
  p.name = name;
  if (auto v = o.strings("usages")) p.usages = *v;
  if (auto v = o.str("remote")) p.remote = *v;
  if (auto ar = o.object("auth_remote")) {
    AuthRemote a;
    if (auto v = ar->str("remote")) a.remote = *v;
    if (auto v = ar->str("auth_key")) a.auth_key = *v;
    if (!a.remote.empty() || !a.auth_key.empty()) p.auth_remote = a;
  }
  bool local = p.remote.empty() && !(p.auth_remote && !p.auth_remote->remote.empty());
  auto expiry = o.str("expiry");
  if (expiry && !expiry->empty()) {
    p.expiry = duration_field(o, "expiry", *expiry);
    if (p.expiry.count() <= 0) o.fail("expiry", "must be a positive duration (got \"" + *expiry + "\")");
  } else if (local) {
    o.fail("expiry", "missing (every profile that is not a remote needs an expiry, such as \"8760h\")");
  }
  if (auto v = o.str("backdate"); v && !v->empty()) p.backdate = duration_field(o, "backdate", *v);
  if (auto v = o.str("not_before")) {
    auto t = parse_rfc3339(*v);
    if (!t) o.fail("not_before", "\"" + *v + "\" is not an RFC 3339 time (such as 2026-01-02T15:04:05Z)");
    p.not_before = *t;
  }
  if (auto v = o.str("not_after")) {
    auto t = parse_rfc3339(*v);
    if (!t) o.fail("not_after", "\"" + *v + "\" is not an RFC 3339 time (such as 2026-01-02T15:04:05Z)");
    p.not_after = *t;
  }
  if (p.not_before && p.not_after && *p.not_after <= *p.not_before) o.fail("not_after", "is not after not_before");
  if (auto cc = o.object("ca_constraint")) {
    CaConstraint c;
    c.is_ca = cc->boolean("is_ca").value_or(false);
    c.max_path_len = cc->integer("max_path_len").value_or(0);
    c.max_path_len_zero = cc->boolean("max_path_len_zero").value_or(false);
    if (c.max_path_len < 0) cc->fail("max_path_len", "must not be negative");
    p.ca_constraint = c;
  }
  if (auto v = o.str("name_whitelist"); v && !v->empty()) {
    try {
      compile_name_whitelist(*v);
    } catch (const Error& e) {
      o.fail("name_whitelist", e.what());
    }
    p.name_whitelist = *v;
  }
  if (auto v = o.str("auth_key")) p.auth_key = *v;
  // Accepted and ignored: issuer_urls, ocsp_url, crl_url, ocsp_no_check, ct_log_servers,
  // allowed_extensions, cert_store (and any field Go would ignore).

  try {
    if (local) {
      (void)p.resolve_usages();
    } else {
      (void)parse_usages(p.usages, name);
    }
  } catch (const Error& e) {
    throw Error(e.kind(), o.what() + ": " + e.what());
  }
  return p;
}

bool is_hex(const std::string& s) {
  return !s.empty() && s.size() % 2 == 0 &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

}  // namespace

CfsslConfig CfsslConfig::parse(const std::string& text, const std::string& what) {
  json j = parse_json(text, what);
  Obj top(j, what, "");
  CfsslConfig cfg;

  if (auto keys = top.object("auth_keys")) {
    for (auto it = keys->raw().begin(); it != keys->raw().end(); ++it) {
      if (it->is_null()) continue;
      Obj k(*it, what, keys->field(it.key()));
      AuthKey ak;
      ak.type = k.str("type").value_or("");
      ak.key = k.str("key").value_or("");
      if (ak.type != "standard")
        k.fail("type", "\"" + ak.type + "\" is not supported (only \"standard\", an HMAC-SHA-256 key, is)");
      if (!is_hex(ak.key)) k.fail("key", "expected a non-empty hex string");
      cfg.auth_keys[it.key()] = ak;
    }
  }
  if (auto remotes = top.object("remotes")) {
    for (auto it = remotes->raw().begin(); it != remotes->raw().end(); ++it) {
      if (it->is_null()) continue;
      if (!it->is_string()) remotes->fail(it.key(), std::string("expected a string, got ") + type_name(*it));
      std::string r = it->get<std::string>();
      if (r.empty()) remotes->fail(it.key(), "empty remote address");
      cfg.remotes[it.key()] = r;
    }
  }

  auto check_refs = [&](const Obj& o, const Profile& p) {
    if (!p.auth_key.empty() && !cfg.auth_keys.count(p.auth_key))
      o.fail("auth_key", "\"" + p.auth_key + "\" is not defined in auth_keys");
    if (!p.remote.empty() && !cfg.remotes.count(p.remote)) o.fail("remote", "\"" + p.remote + "\" is not defined in remotes");
    if (p.auth_remote) {
      if (!p.auth_remote->auth_key.empty() && !cfg.auth_keys.count(p.auth_remote->auth_key))
        o.fail("auth_remote.auth_key", "\"" + p.auth_remote->auth_key + "\" is not defined in auth_keys");
      if (!p.auth_remote->remote.empty() && !cfg.remotes.count(p.auth_remote->remote))
        o.fail("auth_remote.remote", "\"" + p.auth_remote->remote + "\" is not defined in remotes");
    }
  };

  if (auto signing = top.object("signing")) {
    if (auto def = signing->object("default")) {
      cfg.default_profile = parse_profile(*def, "default");
      check_refs(*def, cfg.default_profile);
      cfg.has_default = true;
    }
    if (auto profiles = signing->object("profiles")) {
      for (auto it = profiles->raw().begin(); it != profiles->raw().end(); ++it) {
        if (it->is_null()) continue;
        if (it.key().empty()) profiles->fail("", "a profile has an empty name");
        Obj po(*it, what, profiles->field(it.key()));
        Profile p = parse_profile(po, it.key());
        check_refs(po, p);
        cfg.profiles[it.key()] = std::move(p);
      }
    }
  }
  return cfg;
}

CfsslConfig CfsslConfig::builtin() {
  CfsslConfig cfg;
  cfg.default_profile.name = "default";
  cfg.default_profile.usages = {"signing", "key encipherment", "server auth", "client auth"};
  cfg.default_profile.expiry = std::chrono::hours(8760);
  cfg.has_default = true;
  return cfg;
}

const Profile& CfsslConfig::select(const std::string& name, bool strict, std::string* warning) const {
  if (!name.empty()) {
    auto it = profiles.find(name);
    if (it != profiles.end()) return it->second;
  }
  bool named_default = name.empty() || name == "default";
  if (!named_default && strict)
    throw Error(ErrorKind::BadInput, "profile '" + name + "' is not defined in the config");
  if (!has_default) {
    if (named_default) throw Error(ErrorKind::Policy, "the config defines no default profile; name one with -profile");
    throw Error(ErrorKind::Policy, "profile '" + name + "' is not defined in the config, and it has no default profile");
  }
  if (!named_default && warning)
    *warning = "profile '" + name + "' is not defined in the config; using the default profile (as cfssl does)";
  return default_profile;
}

// ---------------------------------------------------------------------------------------------
// CSR JSON

CfsslCsr CfsslCsr::parse(const std::string& text, const std::string& what) {
  json j = parse_json(text, what);
  Obj top(j, what, "");
  CfsslCsr csr;
  if (auto v = top.str("CN")) csr.cn = *v;
  if (auto v = top.strings("hosts")) csr.hosts = *v;
  if (auto key = top.object("key")) {
    auto algo = key->str("algo");
    auto size = key->integer("size");
    if (!algo || algo->empty()) {
      if (size) key->fail("algo", "missing (use \"rsa\" or \"ecdsa\")");
      csr.key = KeySpec{KeySpec::Type::Ec, 256};
    } else {
      int bits = size.value_or(0);
      if (!size || bits == 0) bits = *algo == "rsa" ? 2048 : 256;
      try {
        csr.key = KeySpec::from_cfssl(*algo, bits);
      } catch (const Error& e) {
        key->fail("", e.what());
      }
    }
  }
  if (const json* names = top.find("names")) {
    if (!names->is_array()) top.fail("names", std::string("expected an array of objects, got ") + type_name(*names));
    for (size_t i = 0; i < names->size(); ++i) {
      const json& e = (*names)[i];
      if (e.is_null()) continue;
      Obj n(e, what, "names[" + std::to_string(i) + "]");
      CfsslName name;
      name.C = n.str("C").value_or("");
      name.ST = n.str("ST").value_or("");
      name.L = n.str("L").value_or("");
      name.O = n.str("O").value_or("");
      name.OU = n.str("OU").value_or("");
      csr.names.push_back(name);
    }
  }
  if (auto ca = top.object("ca")) {
    CfsslCaSection sec;
    sec.expiry = ca->str("expiry").value_or("");
    if (!sec.expiry.empty()) {
      auto d = duration_field(*ca, "expiry", sec.expiry);
      if (d.count() <= 0) ca->fail("expiry", "must be a positive duration (got \"" + sec.expiry + "\")");
    }
    sec.pathlen = ca->integer("pathlen").value_or(0);
    if (sec.pathlen < 0) ca->fail("pathlen", "must not be negative");
    sec.pathlenzero = ca->boolean("pathlenzero").value_or(false);
    csr.ca = sec;
  }
  if (auto v = top.str("serialnumber")) csr.serialnumber = *v;
  return csr;
}

X509_NAME_ptr CfsslCsr::subject() const {
  std::vector<NameAttribute> attrs;
  auto add_all = [&](int nid, std::string CfsslName::*field) {
    bool first = true;
    for (const auto& n : names) {
      const std::string& v = n.*field;
      if (v.empty()) continue;
      attrs.push_back(NameAttribute{nid, v, !first});
      first = false;
    }
  };
  add_all(NID_countryName, &CfsslName::C);
  add_all(NID_stateOrProvinceName, &CfsslName::ST);
  add_all(NID_localityName, &CfsslName::L);
  add_all(NID_organizationName, &CfsslName::O);
  add_all(NID_organizationalUnitName, &CfsslName::OU);
  if (!cn.empty()) attrs.push_back(NameAttribute{NID_commonName, cn, false});
  if (!serialnumber.empty()) attrs.push_back(NameAttribute{NID_serialNumber, serialnumber, false});
  return make_name(attrs);
}

}  // namespace hwca::core
