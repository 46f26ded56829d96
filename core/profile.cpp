#include "core/profile.h"

#include "core/base/error.h"

#include <openssl/obj_mac.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdint>
#include <utility>

namespace hwca::core {

namespace {

constexpr std::uint64_t kMax = std::uint64_t{1} << 63;

[[noreturn]] void bad_duration(const std::string& text, const std::string& why) {
  throw Error(ErrorKind::BadInput, "invalid duration \"" + text + "\"" + (why.empty() ? "" : ": " + why) +
                                       " (use Go's form, such as 8760h, 30m or 1h30m)");
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::uint64_t unit_ns(const std::string& u) {
  if (u == "ns") return 1;
  if (u == "us" || u == "\xc2\xb5s" || u == "\xce\xbcs") return 1000;
  if (u == "ms") return 1000 * 1000;
  if (u == "s") return 1000ull * 1000 * 1000;
  if (u == "m") return 60ull * 1000 * 1000 * 1000;
  if (u == "h") return 3600ull * 1000 * 1000 * 1000;
  return 0;
}

}  // namespace

std::chrono::seconds parse_go_duration(const std::string& text) {
  // [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+, exactly as Go's time.ParseDuration.
  std::string_view s = text;
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return std::chrono::seconds{0};
  if (s.empty()) bad_duration(text, "");
  std::uint64_t total = 0;
  while (!s.empty()) {
    if (!(s[0] == '.' || is_digit(s[0]))) bad_duration(text, "");
    // integer part
    std::uint64_t v = 0;
    size_t i = 0;
    for (; i < s.size() && is_digit(s[i]); ++i) {
      if (v > kMax / 10) bad_duration(text, "overflow");
      v = v * 10 + static_cast<std::uint64_t>(s[i] - '0');
      if (v > kMax) bad_duration(text, "overflow");
    }
    bool pre = i > 0;
    s.remove_prefix(i);
    // fraction
    std::uint64_t f = 0;
    double scale = 1;
    bool post = false;
    if (!s.empty() && s[0] == '.') {
      s.remove_prefix(1);
      size_t j = 0;
      bool overflow = false;
      for (; j < s.size() && is_digit(s[j]); ++j) {
        if (overflow) continue;
        if (f > (kMax - 1) / 10) {
          overflow = true;
          continue;
        }
        std::uint64_t y = f * 10 + static_cast<std::uint64_t>(s[j] - '0');
        if (y > kMax) {
          overflow = true;
          continue;
        }
        f = y;
        scale *= 10;
      }
      post = j > 0;
      s.remove_prefix(j);
    }
    if (!pre && !post) bad_duration(text, "");
    // unit
    size_t k = 0;
    for (; k < s.size() && !(s[k] == '.' || is_digit(s[k])); ++k) {
    }
    if (k == 0) bad_duration(text, "missing unit");
    std::string unit(s.substr(0, k));
    s.remove_prefix(k);
    std::uint64_t u = unit_ns(unit);
    if (u == 0) bad_duration(text, "unknown unit \"" + unit + "\"");
    if (v > kMax / u) bad_duration(text, "overflow");
    v *= u;
    if (f > 0) {
      v += static_cast<std::uint64_t>(static_cast<double>(f) * (static_cast<double>(u) / scale));
      if (v > kMax) bad_duration(text, "overflow");
    }
    total += v;
    if (total > kMax) bad_duration(text, "overflow");
  }
  if (!neg && total > kMax - 1) bad_duration(text, "overflow");
  constexpr std::uint64_t ns_per_s = 1000ull * 1000 * 1000;
  auto secs = static_cast<long long>(total / ns_per_s);  // truncated to whole seconds
  return std::chrono::seconds{neg ? -secs : secs};
}

std::string format_go_duration(std::chrono::seconds d) {
  long long v = d.count();
  if (v == 0) return "0s";
  std::string sign;
  unsigned long long u = 0;
  if (v < 0) {
    sign = "-";
    u = static_cast<unsigned long long>(-(v + 1)) + 1;
  } else {
    u = static_cast<unsigned long long>(v);
  }
  unsigned long long h = u / 3600, m = (u % 3600) / 60, s = u % 60;
  if (h > 0) return sign + std::to_string(h) + "h" + std::to_string(m) + "m" + std::to_string(s) + "s";
  if (m > 0) return sign + std::to_string(m) + "m" + std::to_string(s) + "s";
  return sign + std::to_string(s) + "s";
}

namespace {

struct UsageName {
  const char* name;
  unsigned key_usage;
  int eku_nid;
};

// cfssl's config.KeyUsage and config.ExtKeyUsage tables, with both spellings of content commitment.
const UsageName kUsages[] = {
    {"signing", X509v3_KU_DIGITAL_SIGNATURE, NID_undef},
    {"digital signature", X509v3_KU_DIGITAL_SIGNATURE, NID_undef},
    {"content commitment", X509v3_KU_NON_REPUDIATION, NID_undef},
    {"content committment", X509v3_KU_NON_REPUDIATION, NID_undef},
    {"key encipherment", X509v3_KU_KEY_ENCIPHERMENT, NID_undef},
    {"key agreement", X509v3_KU_KEY_AGREEMENT, NID_undef},
    {"data encipherment", X509v3_KU_DATA_ENCIPHERMENT, NID_undef},
    {"cert sign", X509v3_KU_KEY_CERT_SIGN, NID_undef},
    {"crl sign", X509v3_KU_CRL_SIGN, NID_undef},
    {"encipher only", X509v3_KU_ENCIPHER_ONLY, NID_undef},
    {"decipher only", X509v3_KU_DECIPHER_ONLY, NID_undef},
    {"any", 0, NID_anyExtendedKeyUsage},
    {"server auth", 0, NID_server_auth},
    {"client auth", 0, NID_client_auth},
    {"code signing", 0, NID_code_sign},
    {"email protection", 0, NID_email_protect},
    {"s/mime", 0, NID_email_protect},
    {"ipsec end system", 0, NID_ipsecEndSystem},
    {"ipsec tunnel", 0, NID_ipsecTunnel},
    {"ipsec user", 0, NID_ipsecUser},
    {"timestamping", 0, NID_time_stamp},
    {"ocsp signing", 0, NID_OCSP_sign},
    {"microsoft sgc", 0, NID_ms_sgc},
    {"netscape sgc", 0, NID_ns_sgc},
};

}  // namespace

Usages parse_usages(const std::vector<std::string>& names, const std::string& profile_name) {
  Usages out;
  for (const auto& name : names) {
    const UsageName* found = nullptr;
    for (const auto& u : kUsages) {
      if (name == u.name) {
        found = &u;
        break;
      }
    }
    if (!found) throw Error(ErrorKind::BadInput, "profile '" + profile_name + "': unknown usage '" + name + "'");
    out.key_usage |= found->key_usage;
    if (found->eku_nid != NID_undef &&
        std::find(out.ext_key_usage.begin(), out.ext_key_usage.end(), found->eku_nid) == out.ext_key_usage.end())
      out.ext_key_usage.push_back(found->eku_nid);
  }
  return out;
}

Usages Profile::resolve_usages() const {
  Usages u = parse_usages(usages, name);
  if (u.key_usage == 0 && u.ext_key_usage.empty()) throw Error(ErrorKind::Policy, "profile '" + name + "' has no usages");
  return u;
}

void Profile::check_expiry() const {
  if (expiry.count() <= 0)
    throw Error(ErrorKind::BadInput, "profile '" + name + "': expiry must be a positive duration (got " +
                                         format_go_duration(expiry) + ")");
}

Profile builtin_profile(const std::string& name) {
  Profile p;
  p.name = name;
  p.expiry = std::chrono::hours(8760);
  p.key_encipherment_only_for_rsa = true;
  if (name == "server") {
    p.usages = {"digital signature", "key encipherment", "server auth"};
  } else if (name == "client") {
    p.usages = {"digital signature", "key encipherment", "client auth"};
  } else if (name == "peer") {
    p.usages = {"digital signature", "key encipherment", "server auth", "client auth"};
  } else {
    throw Error(ErrorKind::BadInput, "unknown profile '" + name + "' (the built-in profiles are server, client and peer)");
  }
  return p;
}

Profile initca_profile() {
  Profile p;
  p.name = "initca";
  p.usages = {"cert sign", "crl sign"};
  p.expiry = std::chrono::hours(43800);
  p.ca_constraint = CaConstraint{true, 0, false};
  return p;
}

namespace {

// Go's regexp (RE2 syntax) refuses a repeat count over 1000 ("invalid repeat count"); libstdc++'s
// std::regex compiler overflows a long on a large one (undefined behaviour, found by fuzzing). Counts in
// {n}, {n,} and {n,m} are checked here, as Go would, before std::regex sees the pattern.
// The same compiler reads a back-reference's number ("\5555...") into a long the same way (found by
// fuzzing too). Go's regexp has no back-references ("\1" is an error, "\123" an octal escape): a
// backslash before a digit means something else in each dialect, so it is refused.
void check_pattern_limits(const std::string& pattern) {
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\') {
      if (i + 1 < pattern.size() && pattern[i + 1] >= '0' && pattern[i + 1] <= '9')
        throw Error(ErrorKind::BadInput, "\"" + pattern + "\" is not a valid regular expression here (\\" + pattern[i + 1] +
                                             ": back-references and octal escapes are not supported; Go's regexp and "
                                             "ECMAScript read them differently)");
      ++i;  // an escaped character, "\{" included
      continue;
    }
    if (pattern[i] != '{') continue;
    size_t j = i + 1;
    for (int part = 0; part < 2 && j < pattern.size(); ++part) {
      size_t digits = 0;
      unsigned long long value = 0;
      while (j < pattern.size() && pattern[j] >= '0' && pattern[j] <= '9') {
        if (value <= 1000) value = value * 10 + static_cast<unsigned>(pattern[j] - '0');
        ++digits;
        ++j;
      }
      if (digits > 0 && value > 1000)
        throw Error(ErrorKind::BadInput, "\"" + pattern + "\" is not a valid regular expression (invalid repeat count: at most 1000, as Go's regexp)");
      if (j < pattern.size() && pattern[j] == ',' && part == 0) {
        ++j;
        continue;
      }
      break;
    }
  }
}

}  // namespace

std::regex compile_name_whitelist(const std::string& pattern) {
  check_pattern_limits(pattern);
  std::string body = pattern;
  auto flags = std::regex::ECMAScript;
  if (body.rfind("(?i)", 0) == 0) {
    body.erase(0, 4);
    flags |= std::regex::icase;
  }
  try {
    return std::regex(body, flags);
  } catch (const std::regex_error& e) {
    throw Error(ErrorKind::BadInput, "\"" + pattern + "\" is not a valid regular expression (" + e.what() + ")");
  }
}

}  // namespace hwca::core
