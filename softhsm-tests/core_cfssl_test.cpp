// cfssl's ca-config.json and CSR JSON.
#include "core_helpers.h"

#include "core/cfssl.h"

#include <openssl/obj_mac.h>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using namespace hwca::core;

namespace {

const char* kSeedConfig =
    R"({"signing":{"default":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]}}})";

const char* kProfilesConfig = R"({
  "signing": {
    "default": {"expiry": "8760h", "usages": ["signing"]},
    "profiles": {
      "kubernetes": {"expiry": "87600h", "usages": ["signing", "key encipherment", "server auth", "client auth"]},
      "intermediate": {"expiry": "43800h", "usages": ["cert sign", "crl sign"],
                        "ca_constraint": {"is_ca": true, "max_path_len": 1}},
      "leafonly": {"expiry": "1h", "backdate": "10m", "usages": ["client auth"],
                    "name_whitelist": "^[a-z]+\\.example\\.com$",
                    "not_before": "2026-01-02T15:04:05Z", "not_after": "2027-01-02T16:04:05+01:00",
                    "issuer_urls": ["http://x"], "ocsp_url": "http://o", "crl_url": "http://c",
                    "ocsp_no_check": true, "ct_log_servers": [], "allowed_extensions": ["1.2.3"], "cert_store": "x"},
      "authed": {"expiry": "1h", "usages": ["server auth"], "auth_key": "k1"},
      "far": {"remote": "ca2", "auth_remote": {"remote": "ca2", "auth_key": "k1"}}
    }
  },
  "auth_keys": {"k1": {"type": "standard", "key": "0123456789ABCDEF0123456789abcdef"}},
  "remotes": {"ca2": "127.0.0.1:8888"}
})";

const char* kFlanneld = R"({
"CN": "flanneld",
"hosts": [],
"key": {
"algo": "rsa",
"size": 2048
},
"names": [
{
"C": "CN",
"ST": "FuZhou",
"L": "FuZhou",
"O": "k8s",
"OU": "System"
}
]
})";

const char* kK8s = R"({
"CN": "kubernetes",
"hosts": [
"127.0.0.1",
"192.168.115.4",
"192.168.115.5",
"192.168.115.6",
"192.168.115.7",
"10.254.0.1",
"kubernetes",
"kubernetes.default",
"kubernetes.default.svc",
"kubernetes.default.svc.cluster",
"kubernetes.default.svc.cluster.local"
],
"key": {
"algo": "rsa",
"size": 2048
},
"names": [
{
"C": "CN",
"ST": "FuZhou",
"L": "FuZhou",
"O": "k8s",
"OU": "System"
}
]
})";

}  // namespace

TEST_CASE("ca-config.json: the seed's default-only config", "[core][cfssl]") {
  CfsslConfig cfg = CfsslConfig::parse(kSeedConfig, "ca-config.json");
  REQUIRE(cfg.has_default);
  CHECK(cfg.profiles.empty());
  const Profile& d = cfg.default_profile;
  CHECK(d.name == "default");
  CHECK(d.expiry == std::chrono::hours(43800));
  CHECK(d.usages == std::vector<std::string>{"signing", "key encipherment", "server auth", "client auth"});
  CHECK_FALSE(d.backdate.has_value());
  CHECK_FALSE(d.ca_constraint.has_value());
  CHECK_FALSE(d.requires_auth());

  // -profile=kubernetes is not defined: cfssl falls back to default, with a warning.
  std::string warning;
  const Profile& chosen = cfg.select("kubernetes", false, &warning);
  CHECK(&chosen == &cfg.default_profile);
  CHECK(warning == "profile 'kubernetes' is not defined in the config; using the default profile (as cfssl does)");

  // No name: default, silently.
  warning.clear();
  CHECK(&cfg.select("", false, &warning) == &cfg.default_profile);
  CHECK(&cfg.select("default", true, &warning) == &cfg.default_profile);
  CHECK(warning.empty());

  // --strict refuses.
  Error e = error_of([&] { cfg.select("kubernetes", true, &warning); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()).find("kubernetes") != std::string::npos);
}

TEST_CASE("ca-config.json: profiles and every profile field", "[core][cfssl]") {
  CfsslConfig cfg = CfsslConfig::parse(kProfilesConfig, "ca-config.json");
  REQUIRE(cfg.profiles.size() == 5);
  std::string warning;
  const Profile& k = cfg.select("kubernetes", true, &warning);
  CHECK(warning.empty());
  CHECK(k.name == "kubernetes");
  CHECK(k.expiry == std::chrono::hours(87600));
  CHECK(k.usages.size() == 4);

  const Profile& inter = cfg.profiles.at("intermediate");
  REQUIRE(inter.ca_constraint.has_value());
  CHECK(inter.ca_constraint->is_ca);
  CHECK(inter.ca_constraint->max_path_len == 1);
  CHECK_FALSE(inter.ca_constraint->max_path_len_zero);

  const Profile& leaf = cfg.profiles.at("leafonly");
  CHECK(leaf.backdate == std::chrono::seconds{600});
  REQUIRE(leaf.name_whitelist.has_value());
  CHECK(*leaf.name_whitelist == "^[a-z]+\\.example\\.com$");
  REQUIRE(leaf.not_before.has_value());
  CHECK(iso8601(*leaf.not_before) == "2026-01-02T15:04:05Z");
  REQUIRE(leaf.not_after.has_value());
  CHECK(iso8601(*leaf.not_after) == "2027-01-02T15:04:05Z");  // +01:00 converted to UTC

  const Profile& authed = cfg.profiles.at("authed");
  CHECK(authed.auth_key == "k1");
  CHECK(authed.requires_auth());

  const Profile& far = cfg.profiles.at("far");
  CHECK(far.remote == "ca2");
  REQUIRE(far.auth_remote.has_value());
  CHECK(far.auth_remote->auth_key == "k1");
  CHECK(far.requires_auth());
  CHECK(far.expiry.count() == 0);  // remote profiles need no expiry

  REQUIRE(cfg.auth_keys.count("k1") == 1);
  CHECK(cfg.auth_keys.at("k1").type == "standard");
  CHECK(cfg.auth_keys.at("k1").key == "0123456789ABCDEF0123456789abcdef");
  CHECK(cfg.remotes.at("ca2") == "127.0.0.1:8888");
}

TEST_CASE("ca-config.json: both content commitment spellings, and Go's case-insensitive keys", "[core][cfssl]") {
  CfsslConfig cfg = CfsslConfig::parse(
      R"({"Signing":{"Default":{"Expiry":"1h","USAGES":["content committment","content commitment"]}}})", "c.json");
  REQUIRE(cfg.has_default);
  CHECK(cfg.default_profile.expiry == std::chrono::hours(1));
  CHECK(cfg.default_profile.resolve_usages().key_usage == X509v3_KU_NON_REPUDIATION);
}

TEST_CASE("ca-config.json: a config without a default profile", "[core][cfssl]") {
  CfsslConfig cfg = CfsslConfig::parse(R"({"signing":{"profiles":{"a":{"expiry":"1h","usages":["signing"]}}}})", "c.json");
  CHECK_FALSE(cfg.has_default);
  std::string warning;
  CHECK(cfg.select("a", false, &warning).name == "a");
  CHECK(error_of([&] { cfg.select("b", false, &warning); }).kind() == ErrorKind::Policy);
  CHECK(error_of([&] { cfg.select("", false, &warning); }).kind() == ErrorKind::Policy);
}

TEST_CASE("ca-config.json: cfssl's built-in default", "[core][cfssl]") {
  CfsslConfig cfg = CfsslConfig::builtin();
  REQUIRE(cfg.has_default);
  CHECK(cfg.default_profile.expiry == std::chrono::hours(8760));
  Usages u = cfg.default_profile.resolve_usages();
  CHECK(u.key_usage == (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT));
  CHECK(u.ext_key_usage == std::vector<int>{NID_server_auth, NID_client_auth});
}

TEST_CASE("ca-config.json: malformed configs are refused with a one-line reason", "[core][cfssl]") {
  struct Case {
    const char* json;
    ErrorKind kind;
    const char* expect;  // a substring of the message
  };
  const Case cases[] = {
      {"", ErrorKind::BadInput, "is not valid JSON"},
      {"{", ErrorKind::BadInput, "is not valid JSON"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"]}}} trailing)", ErrorKind::BadInput, "is not valid JSON"},
      {"[]", ErrorKind::BadInput, "expected an object"},
      {R"({"signing":[]})", ErrorKind::BadInput, "signing: expected an object"},
      {R"({"signing":{"profiles":{"kubernetes":{"expiry":43800,"usages":["signing"]}}}})", ErrorKind::BadInput,
       "ca-config.json: signing.profiles.kubernetes.expiry: expected a string"},
      {R"({"signing":{"default":{"expiry":"forever","usages":["signing"]}}})", ErrorKind::BadInput,
       "signing.default.expiry: invalid duration"},
      {R"({"signing":{"default":{"expiry":"5d","usages":["signing"]}}})", ErrorKind::BadInput, "signing.default.expiry"},
      {R"({"signing":{"default":{"expiry":"0s","usages":["signing"]}}})", ErrorKind::BadInput, "positive"},
      {R"({"signing":{"default":{"expiry":"-1h","usages":["signing"]}}})", ErrorKind::BadInput, "positive"},
      {R"({"signing":{"default":{"usages":["signing"]}}})", ErrorKind::BadInput, "signing.default.expiry: missing"},
      {R"({"signing":{"default":{"expiry":"1h","usages":"signing"}}})", ErrorKind::BadInput,
       "signing.default.usages: expected an array"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing",7]}}})", ErrorKind::BadInput,
       "signing.default.usages[1]: expected a string"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing","teleport"]}}})", ErrorKind::BadInput,
       "unknown usage 'teleport'"},
      {R"({"signing":{"default":{"expiry":"1h","usages":[]}}})", ErrorKind::Policy, "has no usages"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"],"backdate":"soon"}}})", ErrorKind::BadInput,
       "signing.default.backdate"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"],"not_before":"2026-13-01T00:00:00Z"}}})",
       ErrorKind::BadInput, "signing.default.not_before"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"],"not_after":"tomorrow"}}})", ErrorKind::BadInput,
       "signing.default.not_after"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"],"ca_constraint":{"is_ca":"yes"}}}})",
       ErrorKind::BadInput, "signing.default.ca_constraint.is_ca: expected true or false"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"],"ca_constraint":{"is_ca":true,"max_path_len":1.5}}}})",
       ErrorKind::BadInput, "max_path_len: expected an integer"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"],"name_whitelist":"(["}}})", ErrorKind::BadInput,
       "signing.default.name_whitelist"},
      {R"({"signing":{"default":{"expiry":"1h","usages":["signing"],"auth_key":"nope"}}})", ErrorKind::BadInput,
       "not defined in auth_keys"},
      {R"({"signing":{"default":{"remote":"nowhere"}}})", ErrorKind::BadInput, "not defined in remotes"},
      {R"({"auth_keys":{"k":{"type":"fancy","key":"00"}}})", ErrorKind::BadInput, "auth_keys.k.type"},
      {R"({"auth_keys":{"k":{"type":"standard","key":"xyz"}}})", ErrorKind::BadInput, "auth_keys.k.key"},
      {R"({"remotes":{"r":5}})", ErrorKind::BadInput, "remotes.r: expected a string"},
      {R"({"signing":{"profiles":{"p":"8760h"}}})", ErrorKind::BadInput, "signing.profiles.p: expected an object"},
  };
  for (const auto& c : cases) {
    INFO(c.json);
    Error e = error_of([&] { CfsslConfig::parse(c.json, "ca-config.json"); });
    CHECK(e.kind() == c.kind);
    std::string msg = e.what();
    CHECK(msg.find(c.expect) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
    CHECK(msg.rfind("ca-config.json", 0) == 0);
  }
}

TEST_CASE("CSR JSON: the seed's flanneld-csr.json", "[core][cfssl]") {
  CfsslCsr csr = CfsslCsr::parse(kFlanneld, "flanneld-csr.json");
  CHECK(csr.cn == "flanneld");
  CHECK(csr.hosts.empty());
  CHECK(csr.key == KeySpec{KeySpec::Type::Rsa, 2048});
  REQUIRE(csr.names.size() == 1);
  CHECK(csr.names[0].C == "CN");
  CHECK(csr.names[0].ST == "FuZhou");
  CHECK(csr.names[0].L == "FuZhou");
  CHECK(csr.names[0].O == "k8s");
  CHECK(csr.names[0].OU == "System");
  CHECK_FALSE(csr.ca.has_value());
  auto name = csr.subject();
  CHECK(hwca::test::oneline(name.get()) == "C = CN, ST = FuZhou, L = FuZhou, O = k8s, OU = System, CN = flanneld");
  // Byte for byte what Debian's cfssl 1.2.0 wrote for this CSR.
  CHECK(hwca::test::hex_of(hwca::test::name_der(name.get())) ==
        "3061310b300906035504061302434e310f300d0603550408130646755a686f75310f300d0603550407130646755a686f75310c300a0603"
        "55040a13036b3873310f300d060355040b130653797374656d3111300f06035504031308666c616e6e656c64");
}

TEST_CASE("CSR JSON: the seed's k8s-csr.json hosts", "[core][cfssl]") {
  CfsslCsr csr = CfsslCsr::parse(kK8s, "k8s-csr.json");
  CHECK(csr.cn == "kubernetes");
  REQUIRE(csr.hosts.size() == 11);
  SubjectAltNames sans = SubjectAltNames::classify(csr.hosts);
  CHECK(sans.ips == std::vector<std::string>{"127.0.0.1", "192.168.115.4", "192.168.115.5", "192.168.115.6",
                                             "192.168.115.7", "10.254.0.1"});
  CHECK(sans.dns == std::vector<std::string>{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                             "kubernetes.default.svc.cluster", "kubernetes.default.svc.cluster.local"});
  CHECK(sans.emails.empty());
  CHECK(sans.uris.empty());
}

TEST_CASE("CSR JSON: several names entries give multi-valued RDNs as cfssl does", "[core][cfssl]") {
  CfsslCsr csr = CfsslCsr::parse(
      R"({"CN":"leaf","names":[{"C":"CN","O":"k8s"},{"O":"system:masters","C":""}]})", "csr.json");
  auto name = csr.subject();
  CHECK(hwca::test::oneline(name.get()) == "C = CN, O = k8s + O = system:masters, CN = leaf");
  CHECK(X509_NAME_entry_count(name.get()) == 4);
  // Byte for byte what Debian's cfssl 1.2.0 wrote for this subject.
  CHECK(hwca::test::hex_of(hwca::test::name_der(name.get())) ==
        "3041310b300906035504061302434e3123300a060355040a13036b38733015060355040a130e73797374656d3a6d617374657273310d30"
        "0b060355040313046c656166");
}

TEST_CASE("CSR JSON: keys match case-insensitively, as Go's encoding/json does", "[core][cfssl]") {
  CfsslCsr csr = CfsslCsr::parse(
      R"({"cn":"lower","HOSTS":["h.example"],"Key":{"ALGO":"ecdsa","Size":384},"NAMES":[{"c":"US","st":"CA","l":"SF","o":"Org","ou":"Unit"}],"CA":{"PathLen":2,"PATHLENZERO":false,"Expiry":"87600h"},"SerialNumber":"42"})",
      "csr.json");
  CHECK(csr.cn == "lower");
  CHECK(csr.hosts == std::vector<std::string>{"h.example"});
  CHECK(csr.key == KeySpec{KeySpec::Type::Ec, 384});
  REQUIRE(csr.names.size() == 1);
  CHECK(csr.names[0].C == "US");
  CHECK(csr.names[0].OU == "Unit");
  REQUIRE(csr.ca.has_value());
  CHECK(csr.ca->pathlen == 2);
  CHECK(csr.ca->expiry == "87600h");
  CHECK(csr.serialnumber == "42");
  auto name = csr.subject();
  CHECK(hwca::test::oneline(name.get()) == "C = US, ST = CA, L = SF, O = Org, OU = Unit, CN = lower, serialNumber = 42");
}

TEST_CASE("CSR JSON: defaults", "[core][cfssl]") {
  CHECK(CfsslCsr::parse(R"({"CN":"x"})", "c").key == KeySpec{KeySpec::Type::Ec, 256});
  CHECK(CfsslCsr::parse(R"({"CN":"x","key":null,"hosts":null,"names":null})", "c").key == KeySpec{KeySpec::Type::Ec, 256});
  CHECK(CfsslCsr::parse(R"({"CN":"x","key":{"algo":"rsa"}})", "c").key == KeySpec{KeySpec::Type::Rsa, 2048});
  CHECK(CfsslCsr::parse(R"({"CN":"x","key":{"algo":"ecdsa"}})", "c").key == KeySpec{KeySpec::Type::Ec, 256});
  CHECK(CfsslCsr::parse(R"({"CN":"x","key":{"algo":"rsa","size":4096}})", "c").key == KeySpec{KeySpec::Type::Rsa, 4096});
  CfsslCsr empty = CfsslCsr::parse("{}", "c");
  CHECK(empty.cn.empty());
  CHECK(empty.hosts.empty());
  CHECK(X509_NAME_entry_count(empty.subject().get()) == 0);
  // `"hosts": [""]` means no SANs.
  CHECK(SubjectAltNames::classify(CfsslCsr::parse(R"({"CN":"s","hosts":[""]})", "c").hosts).empty());
  // A null host is Go's zero value, an empty string: no SAN.
  CHECK(SubjectAltNames::classify(CfsslCsr::parse(R"({"CN":"s","hosts":["a.example",null]})", "c").hosts).dns ==
        std::vector<std::string>{"a.example"});
  // Unknown fields are ignored as Go ignores them.
  CHECK(CfsslCsr::parse(R"({"CN":"x","whatever":[1,2]})", "c").cn == "x");
  // A UTF-8 value becomes a UTF8String; a printable one a PrintableString.
  auto name = CfsslCsr::parse(R"({"CN":"Zürich*","names":[{"O":"ok"}]})", "c").subject();
  CHECK(hwca::test::entry_types(name.get()) == std::vector<int>{V_ASN1_PRINTABLESTRING, V_ASN1_UTF8STRING});
}

TEST_CASE("CSR JSON: malformed requests are refused with a one-line reason", "[core][cfssl]") {
  struct Case {
    const char* json;
    const char* expect;
  };
  const Case cases[] = {
      {"", "is not valid JSON"},
      {"{\"CN\":", "is not valid JSON"},
      {"{\"CN\":\"a\"}{", "is not valid JSON"},
      {"\"CN\"", "expected an object"},
      {"[{\"CN\":\"a\"}]", "expected an object"},
      {R"({"CN":5})", "CN: expected a string"},
      {R"({"CN":"a","hosts":"a.example"})", "hosts: expected an array"},
      {R"({"CN":"a","hosts":["a",1]})", "hosts[1]: expected a string"},
      {R"({"CN":"a","key":"rsa"})", "key: expected an object"},
      {R"({"CN":"a","key":{"algo":"rsa","size":"2048"}})", "key.size: expected an integer"},
      {R"({"CN":"a","key":{"algo":"rsa","size":2048.5}})", "key.size: expected an integer"},
      {R"({"CN":"a","key":{"algo":"rsa","size":1024}})", "too weak"},
      {R"({"CN":"a","key":{"algo":"ecdsa","size":2048}})", "invalid ecdsa key size"},
      {R"({"CN":"a","key":{"algo":"dsa","size":2048}})", "unknown key algorithm"},
      {R"({"CN":"a","key":{"size":2048}})", "key.algo"},
      {R"({"CN":"a","key":{"algo":"rsa","size":99999999999}})", "out of range"},
      {R"({"CN":"a","names":{"C":"US"}})", "names: expected an array"},
      {R"({"CN":"a","names":["US"]})", "names[0]: expected an object"},
      {R"({"CN":"a","names":[{"O":["a","b"]}]})", "names[0].O: expected a string"},
      {R"({"CN":"a","ca":true})", "ca: expected an object"},
      {R"({"CN":"a","ca":{"expiry":"5y"}})", "ca.expiry"},
      {R"({"CN":"a","ca":{"pathlen":"1"}})", "ca.pathlen: expected an integer"},
      {R"({"CN":"a","ca":{"pathlen":-1}})", "ca.pathlen"},
      {R"({"CN":"a","ca":{"pathlenzero":1}})", "ca.pathlenzero: expected true or false"},
      {R"({"CN":"a","serialnumber":12})", "serialnumber: expected a string"},
  };
  for (const auto& c : cases) {
    INFO(c.json);
    Error e = error_of([&] { CfsslCsr::parse(c.json, "csr.json"); });
    CHECK(e.kind() == ErrorKind::BadInput);
    std::string msg = e.what();
    CHECK(msg.find(c.expect) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
    CHECK(msg.rfind("csr.json", 0) == 0);
  }
}

TEST_CASE("CSR JSON: subject values are checked when the subject is built", "[core][cfssl]") {
  CfsslCsr csr = CfsslCsr::parse(std::string("{\"CN\":\"a\\u0000b\"}"), "c");
  CHECK(error_of([&] { csr.subject(); }).kind() == ErrorKind::BadInput);
}
