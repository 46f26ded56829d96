// Go durations, usage names and built-in profiles.
#include "core_helpers.h"

#include "core/profile.h"

#include <openssl/obj_mac.h>

using hwca::Error;
using hwca::ErrorKind;
using hwca::test::error_of;
using namespace hwca::core;
using std::chrono::seconds;

TEST_CASE("parse_go_duration accepts Go's duration syntax", "[core][profile]") {
  struct Case {
    const char* text;
    long long secs;
  };
  const Case cases[] = {
      {"43800h", 43800LL * 3600},
      {"8760h", 8760LL * 3600},
      {"30m0s", 1800},
      {"30m", 1800},
      {"1h30m", 5400},
      {"1.5h", 5400},
      {".5h", 1800},
      {"5.h", 5 * 3600},
      {"2h45m30.5s", 2 * 3600 + 45 * 60 + 30},  // truncated to whole seconds
      {"300ms", 0},
      {"1500ms", 1},
      {"90s", 90},
      {"1µs", 0},
      {"1μs", 0},
      {"1us", 0},
      {"1000000000ns", 1},
      {"-1h", -3600},
      {"+5m", 300},
      {"0", 0},
      {"-0", 0},
      {"0s", 0},
      {"1h1h", 7200},
      {"2562047h", 2562047LL * 3600},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK(parse_go_duration(c.text) == seconds{c.secs});
  }
}

TEST_CASE("parse_go_duration refuses what Go refuses", "[core][profile]") {
  const char* bad[] = {"",   "forever", "5d",  "1h-", "h",      ".",     "-",      "+",   "1",  "1.5", "1H",
                       " 1h", "1h ",   "1 h", "1.2.3h", "--1h", "9999999999999h", "2562048h", "1hh1", "ms",
                       "0x10s"};
  for (const char* text : bad) {
    INFO("'" << text << "'");
    Error e = error_of([&] { parse_go_duration(text); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK(std::string(e.what()).find("invalid duration") != std::string::npos);
  }
}

TEST_CASE("format_go_duration prints Go's Duration.String for whole seconds", "[core][profile]") {
  CHECK(format_go_duration(seconds{43800LL * 3600}) == "43800h0m0s");
  CHECK(format_go_duration(seconds{0}) == "0s");
  CHECK(format_go_duration(seconds{45}) == "45s");
  CHECK(format_go_duration(seconds{90}) == "1m30s");
  CHECK(format_go_duration(seconds{-3600}) == "-1h0m0s");
  CHECK(format_go_duration(seconds{3661}) == "1h1m1s");
  // Round trip.
  for (const char* text : {"8760h", "1h30m", "45s", "-2h"}) CHECK(parse_go_duration(format_go_duration(parse_go_duration(text))) == parse_go_duration(text));
}

TEST_CASE("parse_usages knows every cfssl usage name", "[core][profile]") {
  struct KuCase {
    const char* name;
    unsigned bits;
  };
  const KuCase ku[] = {
      {"signing", X509v3_KU_DIGITAL_SIGNATURE},          {"digital signature", X509v3_KU_DIGITAL_SIGNATURE},
      {"content commitment", X509v3_KU_NON_REPUDIATION}, {"content committment", X509v3_KU_NON_REPUDIATION},
      {"key encipherment", X509v3_KU_KEY_ENCIPHERMENT},  {"key agreement", X509v3_KU_KEY_AGREEMENT},
      {"data encipherment", X509v3_KU_DATA_ENCIPHERMENT}, {"cert sign", X509v3_KU_KEY_CERT_SIGN},
      {"crl sign", X509v3_KU_CRL_SIGN},                  {"encipher only", X509v3_KU_ENCIPHER_ONLY},
      {"decipher only", X509v3_KU_DECIPHER_ONLY},
  };
  for (const auto& c : ku) {
    INFO(c.name);
    Usages u = parse_usages({c.name}, "p");
    CHECK(u.key_usage == c.bits);
    CHECK(u.ext_key_usage.empty());
  }
  struct EkuCase {
    const char* name;
    int nid;
  };
  const EkuCase eku[] = {
      {"any", NID_anyExtendedKeyUsage},      {"server auth", NID_server_auth},    {"client auth", NID_client_auth},
      {"code signing", NID_code_sign},       {"email protection", NID_email_protect}, {"s/mime", NID_email_protect},
      {"ipsec end system", NID_ipsecEndSystem}, {"ipsec tunnel", NID_ipsecTunnel}, {"ipsec user", NID_ipsecUser},
      {"timestamping", NID_time_stamp},      {"ocsp signing", NID_OCSP_sign},     {"microsoft sgc", NID_ms_sgc},
      {"netscape sgc", NID_ns_sgc},
  };
  for (const auto& c : eku) {
    INFO(c.name);
    Usages u = parse_usages({c.name}, "p");
    CHECK(u.key_usage == 0);
    REQUIRE(u.ext_key_usage.size() == 1);
    CHECK(u.ext_key_usage[0] == c.nid);
  }
}

TEST_CASE("parse_usages combines, keeps EKU order and drops duplicates", "[core][profile]") {
  Usages u = parse_usages({"signing", "key encipherment", "client auth", "server auth", "s/mime", "email protection",
                           "client auth", "digital signature"},
                          "kubernetes");
  CHECK(u.key_usage == (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT));
  CHECK(u.ext_key_usage == std::vector<int>{NID_client_auth, NID_server_auth, NID_email_protect});
}

TEST_CASE("parse_usages refuses unknown names, naming the profile", "[core][profile]") {
  for (const char* name : {"Server Auth", "server-auth", "", "signing ", "keyEncipherment"}) {
    Error e = error_of([&] { parse_usages({"signing", name}, "kubernetes"); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK(std::string(e.what()) == "profile 'kubernetes': unknown usage '" + std::string(name) + "'");
  }
}

TEST_CASE("Profile::resolve_usages and check_expiry", "[core][profile]") {
  Profile p;
  p.name = "empty";
  Error e = error_of([&] { (void)p.resolve_usages(); });
  CHECK(e.kind() == ErrorKind::Policy);
  CHECK(std::string(e.what()) == "profile 'empty' has no usages");

  p.usages = {"bogus"};
  CHECK(error_of([&] { (void)p.resolve_usages(); }).kind() == ErrorKind::BadInput);

  p.usages = {"server auth"};
  CHECK(p.resolve_usages().ext_key_usage == std::vector<int>{NID_server_auth});

  p.expiry = seconds{0};
  CHECK(error_of([&] { p.check_expiry(); }).kind() == ErrorKind::BadInput);
  p.expiry = seconds{-3600};
  CHECK(std::string(error_of([&] { p.check_expiry(); }).what()).find("profile 'empty'") != std::string::npos);
  p.expiry = seconds{1};
  CHECK_NOTHROW(p.check_expiry());
}

TEST_CASE("Built-in profiles server, client and peer", "[core][profile]") {
  Profile server = builtin_profile("server");
  CHECK(server.name == "server");
  CHECK(server.expiry == std::chrono::hours(8760));
  CHECK(server.key_encipherment_only_for_rsa);
  Usages su = server.resolve_usages();
  CHECK(su.key_usage == (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT));
  CHECK(su.ext_key_usage == std::vector<int>{NID_server_auth});
  CHECK(builtin_profile("client").resolve_usages().ext_key_usage == std::vector<int>{NID_client_auth});
  CHECK(builtin_profile("peer").resolve_usages().ext_key_usage == std::vector<int>{NID_server_auth, NID_client_auth});
  CHECK_FALSE(server.ca_constraint.has_value());
  CHECK_FALSE(server.requires_auth());
  CHECK(error_of([] { builtin_profile("kubernetes"); }).kind() == ErrorKind::BadInput);
}

TEST_CASE("initca_profile is cfssl's -initca policy", "[core][profile]") {
  Profile p = initca_profile();
  CHECK(p.expiry == std::chrono::hours(43800));
  Usages u = p.resolve_usages();
  CHECK(u.key_usage == (X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN));
  CHECK(u.ext_key_usage.empty());
  REQUIRE(p.ca_constraint.has_value());
  CHECK(p.ca_constraint->is_ca);
  CHECK_FALSE(p.ca_constraint->max_path_len_zero);
}
