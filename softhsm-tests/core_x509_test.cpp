// X.509 building blocks: SANs, names, certificates, CSRs, serials, time, chain verification.
#include "core_helpers.h"

#include "core/base/csr_der.h"
#include "core/base/ec_key_der.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <set>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using hwca::test::ext_der;
using hwca::test::find_ext;
using hwca::test::hex_of;
using hwca::test::oneline;
using namespace hwca::core;

namespace {

CertTemplate root_template(const std::string& cn) {
  CertTemplate t;
  t.subject = make_name({{NID_countryName, "CN", false}, {NID_organizationName, "hwca test", false}, {NID_commonName, cn, false}});
  t.key_usage = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN;
  t.is_ca = true;
  t.not_before = now_rounded_to_minute() - 300;
  t.not_after = t.not_before + 43800LL * 3600;
  return t;
}

CertTemplate leaf_template(const std::string& cn) {
  CertTemplate t;
  t.subject = make_name({{NID_organizationName, "k8s", false},
                         {NID_organizationName, "system:masters", true},
                         {NID_commonName, cn, false}});
  // Deliberately out of order: the certificate must still say DNS, email, IP, URI.
  t.sans = SubjectAltNames::classify({"10.0.0.1", "node1.example", "spiffe://cluster/ns/x", "ops@example.com", "::1",
                                      "*.svc.example"});
  t.key_usage = X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT;
  t.ext_key_usage = {NID_server_auth, NID_client_auth};
  t.not_before = now_rounded_to_minute() - 300;
  t.not_after = t.not_before + 8760LL * 3600;
  return t;
}

std::string sha1_of_key(const X509* cert) {
  const ASN1_BIT_STRING* bits = X509_get0_pubkey_bitstr(cert);
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(ASN1_STRING_get0_data(bits), static_cast<size_t>(ASN1_STRING_length(bits)), md);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

bool is_critical(const X509* cert, int nid) {
  const X509_EXTENSION* ext = find_ext(cert, nid);
  REQUIRE(ext != nullptr);
  return X509_EXTENSION_get_critical(ext) == 1;
}

std::string ski_of(X509* cert) { return hwca::test::octets(X509_get0_subject_key_id(cert)); }

std::string aki_of(X509* cert) { return hwca::test::octets(X509_get0_authority_key_id(cert)); }

std::vector<int> san_types(const X509* cert) {
  hwca::GENERAL_NAMES_ptr names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  std::vector<int> out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) out.push_back(sk_GENERAL_NAME_value(names.get(), i)->type);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SANs

TEST_CASE("SubjectAltNames::classify sorts hosts as cfssl does", "[core][x509]") {
  SubjectAltNames s = SubjectAltNames::classify({"a.example", "1.2.3.4", "x@y.com", "::1", "https://u.example/p", "",
                                                 "*.wild.example", "_svc._tcp.example", "2001:db8::1", "localhost",
                                                 "Node-1.Example"});
  CHECK(s.dns == std::vector<std::string>{"a.example", "*.wild.example", "_svc._tcp.example", "localhost", "Node-1.Example"});
  CHECK(s.ips == std::vector<std::string>{"1.2.3.4", "::1", "2001:db8::1"});
  CHECK(s.emails == std::vector<std::string>{"x@y.com"});
  CHECK(s.uris == std::vector<std::string>{"https://u.example/p"});
  CHECK(s.describe() == std::vector<std::string>{"DNS:a.example", "DNS:*.wild.example", "DNS:_svc._tcp.example",
                                                  "DNS:localhost", "DNS:Node-1.Example", "email:x@y.com", "IP:1.2.3.4",
                                                  "IP:::1", "IP:2001:db8::1", "URI:https://u.example/p"});
  CHECK(SubjectAltNames::classify({"", ""}).empty());
  CHECK(SubjectAltNames::classify({std::string(63, 'a') + ".example"}).dns.size() == 1);
}

TEST_CASE("SubjectAltNames::classify refuses hostile hosts", "[core][x509]") {
  std::string long_name;
  for (int i = 0; i < 4; ++i) long_name += std::string(63, 'a') + ".";
  long_name += "com";  // 4*64 + 3 = 259 > 253
  const std::string hostile[] = {
      std::string("evil.example\0.good.example", 26),
      "a\nb.example",
      "a\rb",
      "tab\there",
      "\x7f" "del",
      "has space.example",
      " leading.example",
      std::string(300, 'a'),
      std::string(64, 'b') + ".example",
      long_name,
      "a..b.example",
      ".leading.dot",
      "trailing.dot.",
      "foo*.example",
      "a.*.example",
      "*",
      "a,DNS:evil.example",
      "DNS:x.example",
      "caf\xc3\xa9.example",
      "x/y",
  };
  for (const auto& h : hostile) {
    INFO(h);
    Error e = error_of([&] { SubjectAltNames::classify({"ok.example", h}); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK(std::string(e.what()).find('\0') == std::string::npos);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
// Names

TEST_CASE("make_name picks PrintableString or UTF8String as Go does", "[core][x509]") {
  auto name = make_name({{NID_commonName, "plain (ok) +,-./:=?'", false},
                         {NID_organizationName, "star*", false},
                         {NID_organizationName, "amp&", false},
                         {NID_organizationalUnitName, "at@sign", false},
                         {NID_localityName, "Zürich", false},
                         {NID_pkcs9_emailAddress, "a@b.example", false}});
  CHECK(hwca::test::entry_types(name.get()) == std::vector<int>{V_ASN1_PRINTABLESTRING, V_ASN1_UTF8STRING, V_ASN1_UTF8STRING,
                                                                 V_ASN1_UTF8STRING, V_ASN1_UTF8STRING, V_ASN1_IA5STRING});
  CHECK(common_name(name.get()) == "plain (ok) +,-./:=?'");

  CHECK(error_of([] { make_name({{NID_commonName, "", false}}); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([] { make_name({{NID_commonName, std::string("a\0b", 3), false}}); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([] { make_name({{NID_commonName, "bad\xff", false}}); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([] { make_name({{NID_pkcs9_emailAddress, "ü@x", false}}); }).kind() == ErrorKind::BadInput);
  CHECK(X509_NAME_entry_count(make_name({}).get()) == 0);
}

TEST_CASE("parse_subject reads the slash form and the RFC 4514 comma form", "[core][x509]") {
  CHECK(oneline(parse_subject("/CN=Example Root CA/O=Example").get()) == "CN = Example Root CA, O = Example");
  CHECK(oneline(parse_subject("/C=US/O=Example/CN=Example Root CA").get()) == "C = US, O = Example, CN = Example Root CA");
  // The comma form lists the most specific attribute first (as RFC 2253 output does).
  CHECK(oneline(parse_subject("CN=a,O=b").get()) == "O = b, CN = a");
  CHECK(oneline(parse_subject("CN = a , O = b, C=US").get()) == "C = US, O = b, CN = a");
  // Escapes.
  auto slash = parse_subject("/CN=a\\/b/O=x");
  CHECK(common_name(slash.get()) == "a/b");
  auto comma = parse_subject("CN=a\\,b,O=c");
  CHECK(common_name(comma.get()) == "a,b");
  CHECK(oneline(comma.get()) == "O = c, CN = \"a,b\"");
  // Multi-valued RDNs, and a '+' that is part of a value.
  CHECK(oneline(parse_subject("/O=k8s+O=system:masters/CN=x").get()) == "O = k8s + O = system:masters, CN = x");
  CHECK(oneline(parse_subject("/O=C++ Team/CN=x").get()) == "O = \"C++ Team\", CN = x");
  // Commas are plain characters in the slash form.
  CHECK(common_name(parse_subject("/O=Acme, Inc./CN=x, y").get()) == "x, y");
  // All known short names, case-insensitively.
  auto all = parse_subject("/c=US/st=CA/l=SF/o=Org/ou=Unit/cn=x/serialNumber=5/emailAddress=a@b.example/DC=example");
  CHECK(X509_NAME_entry_count(all.get()) == 9);
  CHECK(name_to_string(all.get()) == "DC=example,emailAddress=a@b.example,serialNumber=5,CN=x,OU=Unit,O=Org,L=SF,ST=CA,C=US");
  // Round trip through the RFC 2253 string.
  auto rt = parse_subject(name_to_string(all.get()));
  CHECK(X509_NAME_cmp(rt.get(), all.get()) == 0);
}

TEST_CASE("parse_subject refuses malformed subjects", "[core][x509]") {
  for (const std::string& bad : std::vector<std::string>{"", "/", "/XX=1", "/CN=", "/CN", "CN=a,Foo=b", "/CN=a\\", "CN=a,", std::string("/CN=a\0b", 7),
                                "/E=a@b.example", "justtext"}) {
    INFO(bad);
    CHECK(error_of([&] { parse_subject(bad); }).kind() == ErrorKind::BadInput);
  }
  CHECK(std::string(error_of([] { parse_subject("/XX=1"); }).what()).find("unknown attribute 'XX'") != std::string::npos);
}

TEST_CASE("name_to_string and common_name", "[core][x509]") {
  auto name = make_name({{NID_countryName, "CN", false},
                         {NID_organizationName, "k8s", false},
                         {NID_organizationName, "system:masters", true},
                         {NID_commonName, "first", false},
                         {NID_commonName, "last", false}});
  CHECK(name_to_string(name.get()) == "CN=last,CN=first,O=system:masters+O=k8s,C=CN");
  CHECK(common_name(name.get()) == "last");
  CHECK(common_name(make_name({{NID_organizationName, "x", false}}).get()).empty());
}

// ---------------------------------------------------------------------------------------------
// Certificates

TEST_CASE("build_certificate: root and leaf for every key algorithm", "[core][x509]") {
  auto spec_name = GENERATE(as<std::string>{}, "ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096");
  KeySpec spec = KeySpec::parse(spec_name);
  INFO(spec_name);
  auto root_key = hwca::generate_software_key(spec);
  auto leaf_key = hwca::generate_software_key(spec);

  CertTemplate rt = root_template("root " + spec_name);
  rt.path_len = 1;
  auto root_serial = random_serial();
  auto root = build_certificate(rt, root_serial.get(), root_key.get(), nullptr, root_key.get());
  REQUIRE(root);

  // Root: v3, self-issued, KU cert sign + CRL sign critical, CA:TRUE critical with pathlen, SKI, AKI = SKI.
  CHECK(X509_get_version(root.get()) == X509_VERSION_3);
  CHECK(X509_NAME_cmp(X509_get_issuer_name(root.get()), X509_get_subject_name(root.get())) == 0);
  CHECK(hwca::test::ext_order(root.get()) == std::vector<int>{NID_key_usage, NID_basic_constraints,
                                                               NID_subject_key_identifier, NID_authority_key_identifier});
  CHECK(is_critical(root.get(), NID_key_usage));
  CHECK(X509_get_key_usage(root.get()) == (X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN));
  CHECK(is_critical(root.get(), NID_basic_constraints));
  CHECK(X509_check_ca(root.get()) == 1);
  CHECK(X509_get_pathlen(root.get()) == 1);
  CHECK(ski_of(root.get()) == sha1_of_key(root.get()));
  CHECK(aki_of(root.get()) == ski_of(root.get()));
  CHECK_FALSE(is_critical(root.get(), NID_subject_key_identifier));
  CHECK(find_ext(root.get(), NID_subject_alt_name) == nullptr);
  CHECK(X509_verify(root.get(), root_key.get()) == 1);
  CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(root.get()), root_serial.get()) == 0);

  // Signature algorithm follows the issuer key.
  int md_nid = 0, pk_nid = 0;
  REQUIRE(X509_get_signature_info(root.get(), &md_nid, &pk_nid, nullptr, nullptr) == 1);
  CHECK(md_nid == EVP_MD_get_type(hwca::digest_for(root_key.get())));
  CHECK(pk_nid == (spec.type == KeySpec::Type::Rsa ? NID_rsaEncryption : NID_X9_62_id_ecPublicKey));

  // Leaf.
  CertTemplate lt = leaf_template("leaf " + spec_name);
  auto leaf_serial = random_serial();
  auto leaf = build_certificate(lt, leaf_serial.get(), leaf_key.get(), root.get(), root_key.get());
  REQUIRE(leaf);
  CHECK(X509_get_version(leaf.get()) == X509_VERSION_3);
  CHECK(X509_NAME_cmp(X509_get_issuer_name(leaf.get()), X509_get_subject_name(root.get())) == 0);
  CHECK(oneline(X509_get_subject_name(leaf.get())) == "O = k8s + O = system:masters, CN = leaf " + spec_name);
  CHECK(hwca::test::ext_order(leaf.get()) ==
        std::vector<int>{NID_key_usage, NID_ext_key_usage, NID_basic_constraints, NID_subject_key_identifier,
                         NID_authority_key_identifier, NID_subject_alt_name});
  CHECK(is_critical(leaf.get(), NID_key_usage));
  CHECK(hex_of(ext_der(leaf.get(), NID_key_usage)) == "030205a0");  // digitalSignature, keyEncipherment
  CHECK_FALSE(is_critical(leaf.get(), NID_ext_key_usage));
  CHECK(hex_of(ext_der(leaf.get(), NID_ext_key_usage)) == "301406082b0601050507030106082b06010505070302");
  CHECK(is_critical(leaf.get(), NID_basic_constraints));
  CHECK(hex_of(ext_der(leaf.get(), NID_basic_constraints)) == "3000");  // CA:FALSE as an empty SEQUENCE
  CHECK(X509_check_ca(leaf.get()) == 0);
  CHECK(ski_of(leaf.get()) == sha1_of_key(leaf.get()));
  CHECK(aki_of(leaf.get()) == ski_of(root.get()));
  CHECK_FALSE(is_critical(leaf.get(), NID_subject_alt_name));
  CHECK(san_types(leaf.get()) == std::vector<int>{GEN_DNS, GEN_DNS, GEN_EMAIL, GEN_IPADD, GEN_IPADD, GEN_URI});
  SubjectAltNames sans = SubjectAltNames::of_cert(leaf.get());
  CHECK(sans.dns == std::vector<std::string>{"node1.example", "*.svc.example"});
  CHECK(sans.emails == std::vector<std::string>{"ops@example.com"});
  CHECK(sans.ips == std::vector<std::string>{"10.0.0.1", "::1"});
  CHECK(sans.uris == std::vector<std::string>{"spiffe://cluster/ns/x"});

  // Validity and serial.
  CHECK(asn1_time_to_time_t(X509_get0_notBefore(leaf.get())) == lt.not_before);
  CHECK(asn1_time_to_time_t(X509_get0_notAfter(leaf.get())) == lt.not_after);
  CHECK(lt.not_after - lt.not_before == 8760LL * 3600);
  const ASN1_INTEGER* serial = X509_get0_serialNumber(leaf.get());
  CHECK(ASN1_STRING_type(serial) == V_ASN1_INTEGER);  // positive
  CHECK(ASN1_STRING_length(serial) == 20);

  CHECK(X509_verify(leaf.get(), root_key.get()) == 1);
  CHECK(verify_chain(leaf.get(), {root.get()}) == "");
  CHECK(verify_chain(root.get(), {root.get()}) == "");
}

TEST_CASE("build_certificate: cfssl -initca style root has no AKI", "[core][x509]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  CertTemplate t = root_template("cfssl root");
  t.authority_key_id = false;
  auto root = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  CHECK(hwca::test::ext_order(root.get()) ==
        std::vector<int>{NID_key_usage, NID_basic_constraints, NID_subject_key_identifier});
  CHECK(X509_get_pathlen(root.get()) == -1);
  CHECK(hex_of(ext_der(root.get(), NID_basic_constraints)) == "30030101ff");
}

TEST_CASE("build_certificate: path length zero and an empty subject", "[core][x509]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  CertTemplate t = root_template("pathlen zero");
  t.path_len = 0;
  auto root = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  CHECK(X509_get_pathlen(root.get()) == 0);
  CHECK(hex_of(ext_der(root.get(), NID_basic_constraints)) == "30060101ff020100");

  // A leaf with only SANs: the SAN extension becomes critical (RFC 5280).
  auto leaf_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  CertTemplate lt = leaf_template("x");
  lt.subject = make_name({});
  auto leaf = build_certificate(lt, random_serial().get(), leaf_key.get(), root.get(), key.get());
  CHECK(is_critical(leaf.get(), NID_subject_alt_name));
}

TEST_CASE("build_certificate refuses a CA key that does not match the CA certificate", "[core][x509]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  auto other = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  auto root = build_certificate(root_template("r"), random_serial().get(), key.get(), nullptr, key.get());
  auto leaf_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  Error e = error_of([&] { build_certificate(leaf_template("x"), random_serial().get(), leaf_key.get(), root.get(), other.get()); });
  CHECK(std::string(e.what()).find("does not verify") != std::string::npos);
  // Self-signed with a key that is not the subject's.
  CHECK_THROWS_AS(build_certificate(root_template("r"), random_serial().get(), key.get(), nullptr, other.get()), Error);
  // notAfter before notBefore.
  CertTemplate t = root_template("r");
  t.not_after = t.not_before;
  CHECK(error_of([&] { build_certificate(t, random_serial().get(), key.get(), nullptr, key.get()); }).kind() == ErrorKind::Policy);
}

TEST_CASE("verify_chain reports failures", "[core][x509]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  auto root = build_certificate(root_template("r"), random_serial().get(), key.get(), nullptr, key.get());
  auto other_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  auto other_root = build_certificate(root_template("r"), random_serial().get(), other_key.get(), nullptr, other_key.get());
  auto leaf_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  auto leaf = build_certificate(leaf_template("l"), random_serial().get(), leaf_key.get(), root.get(), key.get());

  CHECK(verify_chain(leaf.get(), {root.get()}).empty());
  CHECK_FALSE(verify_chain(leaf.get(), {other_root.get()}).empty());  // same name, wrong key
  CHECK_FALSE(verify_chain(leaf.get(), {}).empty());

  // Through an intermediate.
  CertTemplate it = root_template("intermediate");
  it.path_len = 0;
  auto inter_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p384"));
  auto inter = build_certificate(it, random_serial().get(), inter_key.get(), root.get(), key.get());
  auto leaf2 = build_certificate(leaf_template("l2"), random_serial().get(), leaf_key.get(), inter.get(), inter_key.get());
  CHECK(verify_chain(leaf2.get(), {root.get()}, {inter.get()}).empty());
  CHECK_FALSE(verify_chain(leaf2.get(), {root.get()}).empty());

  // Expired.
  CertTemplate old = leaf_template("old");
  old.not_before = now() - 7200;
  old.not_after = now() - 3600;
  auto expired = build_certificate(old, random_serial().get(), leaf_key.get(), root.get(), key.get());
  CHECK(verify_chain(expired.get(), {root.get()}).find("expired") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// CSRs

TEST_CASE("make_csr, verify_csr_signature and a tampered CSR", "[core][x509]") {
  auto key = hwca::generate_software_key(KeySpec::parse("rsa-2048"));
  auto subject = make_name({{NID_organizationName, "k8s", false}, {NID_commonName, "node1", false}});
  SubjectAltNames sans = SubjectAltNames::classify({"node1.example", "10.1.2.3"});
  auto csr = make_csr(subject.get(), sans, key.get());
  CHECK(X509_REQ_get_version(csr.get()) == X509_REQ_VERSION_1);
  CHECK_NOTHROW(verify_csr_signature(csr.get()));
  CHECK(hwca::same_public_key(X509_REQ_get0_pubkey(csr.get()), key.get()));
  SubjectAltNames back = SubjectAltNames::of_csr(csr.get());
  CHECK(back.dns == sans.dns);
  CHECK(back.ips == sans.ips);
  CHECK_FALSE(csr_requests_ca(csr.get()));
  CHECK(X509_NAME_cmp(X509_REQ_get_subject_name(csr.get()), subject.get()) == 0);

  // Round trip through PEM.
  auto again = hwca::csr_from_pem_or_der(hwca::csr_to_pem(csr.get()), "CSR");
  CHECK_NOTHROW(verify_csr_signature(again.get()));

  // Flip one byte of the subject ("node1" -> "node2"): the signature no longer verifies.
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(csr.get(), &der);
  REQUIRE(len > 0);
  std::string bytes(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  auto pos = bytes.find("node1");
  REQUIRE(pos != std::string::npos);
  bytes[pos + 4] = '2';
  auto tampered = hwca::csr_from_pem_or_der(bytes, "tampered CSR");
  CHECK(common_name(X509_REQ_get_subject_name(tampered.get())) == "node2");
  Error e = error_of([&] { verify_csr_signature(tampered.get()); });
  CHECK(e.kind() == ErrorKind::BadInput);
}

TEST_CASE("make_csr without SANs has no attributes - a CA request says CA:TRUE", "[core][x509]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  auto subject = hwca::test::cn_name("CA");
  auto csr = make_csr(subject.get(), {}, key.get());
  CHECK(X509_REQ_get_attr_count(csr.get()) == 0);
  CHECK(SubjectAltNames::of_csr(csr.get()).empty());
  CHECK_FALSE(csr_requests_ca(csr.get()));
  auto ca_csr = make_csr(subject.get(), {}, key.get(), true);
  CHECK(csr_requests_ca(ca_csr.get()));
  CHECK_NOTHROW(verify_csr_signature(ca_csr.get()));
}

// ---------------------------------------------------------------------------------------------
// Serials and time

TEST_CASE("random_serial: 20 bytes, positive, distinct", "[core][x509]") {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto s = random_serial();
    CHECK(ASN1_STRING_type(s.get()) == V_ASN1_INTEGER);
    REQUIRE(ASN1_STRING_length(s.get()) == 20);
    unsigned char first = ASN1_STRING_get0_data(s.get())[0];
    CHECK(first >= 0x01);
    CHECK(first <= 0x7f);
    seen.insert(hwca::serial_hex(s.get()));
  }
  CHECK(seen.size() == 200);
}

TEST_CASE("time helpers", "[core][x509]") {
  std::time_t r = now_rounded_to_minute();
  CHECK(r % 60 == 0);
  CHECK(std::abs(static_cast<long long>(now() - r)) <= 31);
  CHECK(iso8601(0) == "1970-01-01T00:00:00Z");
  CHECK(iso8601(1795960800) == "2026-11-29T14:00:00Z");
  for (std::time_t t : {std::time_t{0}, std::time_t{1795960800}, std::time_t{2524608000} /* 2050 */, std::time_t{4102444800}}) {
    hwca::ASN1_TIME_ptr at(ASN1_TIME_set(nullptr, t));
    REQUIRE(at);
    CHECK(asn1_time_to_time_t(at.get()) == t);
  }
}

namespace {

// A self-signed ECDSA-P256 CA in software, to issue test leaves from.
struct TestCa {
  hwca::EVP_PKEY_ptr key;
  hwca::X509_ptr cert;
};

TestCa test_ca(const std::string& cn) {
  TestCa ca{hwca::generate_software_key(KeySpec::parse("ecdsa-p256")), nullptr};
  CertTemplate t;
  t.subject = hwca::test::cn_name(cn);
  t.is_ca = true;
  t.key_usage = X509v3_KU_KEY_CERT_SIGN;
  t.not_before = now() - 60;
  t.not_after = now() + 86400;
  ca.cert = build_certificate(t, random_serial().get(), ca.key.get(), nullptr, ca.key.get());
  return ca;
}

// A one-hour leaf for `subject` from `ca`.
hwca::X509_ptr test_leaf(EVP_PKEY* subject, const TestCa& ca) {
  CertTemplate t;
  t.subject = hwca::test::cn_name("spki");
  t.not_before = now() - 60;
  t.not_after = now() + 3600;
  return build_certificate(t, random_serial().get(), subject, ca.cert.get(), ca.key.get());
}

// The SubjectPublicKeyInfo a certificate carries (DER).
std::string spki_of(const X509* cert) { return hwca::test::der_with(i2d_X509_PUBKEY, X509_get_X509_PUBKEY(cert)); }

}  // namespace

TEST_CASE("the certificate's SubjectPublicKeyInfo is the subject key's own DER for every algorithm", "[core][x509]") {
  // build_certificate encodes named-curve EC keys through a faster path than X509_set_pubkey's
  // general one: the bytes must be identical, for keys generated here and for keys read from a CSR.
  TestCa ca = test_ca("spki test CA");
  std::vector<std::pair<std::string, hwca::EVP_PKEY_ptr>> keys;
  for (const char* algo : {"ecdsa-p256", "ecdsa-p384", "rsa-2048"})
    keys.emplace_back(algo, hwca::generate_software_key(KeySpec::parse(algo)));
  keys.emplace_back("P-521", hwca::EVP_PKEY_ptr(EVP_EC_gen("P-521")));
  for (auto& [algo, key] : keys) {
    INFO(algo);
    REQUIRE(key);
    auto csr = make_csr(hwca::test::cn_name("spki").get(), SubjectAltNames{}, key.get());
    for (EVP_PKEY* subject : {key.get(), X509_REQ_get0_pubkey(csr.get())}) {
      auto cert = test_leaf(subject, ca);
      CHECK(spki_of(cert.get()) == hwca::test::der_with(i2d_PUBKEY, subject));
      CHECK(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), subject) == 1);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// d2i_csr: OpenSSL's ASN.1 templates and built-in key methods instead of d2i_X509_REQ's decoder

namespace {

std::string der_of(const X509_REQ* req) { return hwca::test::der_with(i2d_X509_REQ, req); }

// d2i_csr and d2i_X509_REQ on the same bytes: both refuse, or both read the same request (the same
// length, the same DER, the same key, the same signature result). Returns whether d2i_csr's own reader
// (a key with OpenSSL's built-in method) was the one that read it.
bool reads_as_openssl_does(const std::string& bytes) {
  const auto* start = reinterpret_cast<const unsigned char*>(bytes.data());
  const unsigned char* ours_end = start;
  const unsigned char* theirs_end = start;
  hwca::X509_REQ_ptr ours = hwca::d2i_csr(&ours_end, static_cast<long>(bytes.size()));
  hwca::X509_REQ_ptr theirs(d2i_X509_REQ(nullptr, &theirs_end, static_cast<long>(bytes.size())));
  ERR_clear_error();
  REQUIRE(bool(ours) == bool(theirs));
  if (!ours) {
    CHECK(ours_end == start);
    return false;
  }
  CHECK(ours_end == theirs_end);
  CHECK(der_of(ours.get()) == der_of(theirs.get()));
  EVP_PKEY* our_key = X509_REQ_get0_pubkey(ours.get());
  EVP_PKEY* their_key = X509_REQ_get0_pubkey(theirs.get());
  ERR_clear_error();
  REQUIRE(bool(our_key) == bool(their_key));
  if (!our_key) return false;
  CHECK(EVP_PKEY_eq(our_key, their_key) == 1);
  CHECK((X509_REQ_verify(ours.get(), our_key) == 1) == (X509_REQ_verify(theirs.get(), their_key) == 1));
  ERR_clear_error();
  const char* our_kind = EVP_PKEY_get0_description(our_key);
  const char* their_kind = EVP_PKEY_get0_description(their_key);
  return our_kind && their_kind && std::string(our_kind) != their_kind;
}

hwca::X509_REQ_ptr signed_request(EVP_PKEY* key, bool with_sans, bool with_password) {
  hwca::X509_REQ_ptr req(X509_REQ_new());
  REQUIRE(req);
  REQUIRE(X509_REQ_set_subject_name(req.get(), hwca::test::cn_name("system:node:w1").get()) == 1);
  REQUIRE(X509_REQ_set_pubkey(req.get(), key) == 1);
  if (with_sans) {
    hwca::STACK_OF_X509_EXTENSION_ptr exts(sk_X509_EXTENSION_new_null());
    X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, "DNS:w1.example,IP:10.0.0.1");
    REQUIRE(san);
    REQUIRE(sk_X509_EXTENSION_push(exts.get(), san) > 0);
    REQUIRE(X509_REQ_add_extensions(req.get(), exts.get()) == 1);
  }
  if (with_password)
    REQUIRE(X509_REQ_add1_attr_by_NID(req.get(), NID_pkcs9_challengePassword, MBSTRING_ASC,
                                      reinterpret_cast<const unsigned char*>("secret"), -1) == 1);
  const EVP_MD* md = EVP_PKEY_is_a(key, "ED25519") ? nullptr : EVP_sha256();
  REQUIRE(X509_REQ_sign(req.get(), key, md) > 0);
  return req;
}

}  // namespace

TEST_CASE("d2i_csr reads every request exactly as d2i_X509_REQ does, and named-curve EC and RSA keys itself", "[core][x509]") {
  struct Case {
    std::string name;
    hwca::EVP_PKEY_ptr key;
    bool own_reader;  // d2i_csr reads it without OpenSSL's decoder
  };
  std::vector<Case> cases;
  for (const char* algo : {"ecdsa-p256", "ecdsa-p384", "rsa-2048"})
    cases.push_back({algo, hwca::generate_software_key(KeySpec::parse(algo)), true});
  cases.push_back({"P-521", hwca::EVP_PKEY_ptr(EVP_EC_gen("P-521")), true});
  cases.push_back({"secp256k1", hwca::EVP_PKEY_ptr(EVP_EC_gen("secp256k1")), true});
  {
    hwca::EVP_PKEY_ptr compressed(EVP_EC_gen("P-256"));
    REQUIRE(compressed);
    REQUIRE(EVP_PKEY_set_utf8_string_param(compressed.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                           OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED) == 1);
    cases.push_back({"P-256, compressed point", std::move(compressed), true});
  }
  {
    hwca::EVP_PKEY_ptr explicit_curve(EVP_EC_gen("P-256"));
    REQUIRE(explicit_curve);
    REQUIRE(EVP_PKEY_set_utf8_string_param(explicit_curve.get(), OSSL_PKEY_PARAM_EC_ENCODING,
                                           OSSL_PKEY_EC_ENCODING_EXPLICIT) == 1);
    cases.push_back({"P-256, explicit parameters", std::move(explicit_curve), false});
  }
  cases.push_back({"Ed25519", hwca::EVP_PKEY_ptr(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")), false});
  {
    hwca::EVP_PKEY_CTX_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA-PSS", nullptr));
    EVP_PKEY* pss = nullptr;
    REQUIRE(ctx);
    REQUIRE(EVP_PKEY_keygen_init(ctx.get()) == 1);
    REQUIRE(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), 2048) == 1);
    REQUIRE(EVP_PKEY_generate(ctx.get(), &pss) == 1);
    cases.push_back({"RSA-PSS", hwca::EVP_PKEY_ptr(pss), false});
  }

  TestCa ca = test_ca("d2i_csr test CA");

  for (auto& c : cases) {
    INFO(c.name);
    REQUIRE(c.key);
    for (bool sans : {true, false}) {
      for (bool password : {false, true}) {
        INFO("SANs " << sans << ", challengePassword " << password);
        auto req = signed_request(c.key.get(), sans, password);
        std::string der = der_of(req.get());
        CHECK(reads_as_openssl_does(der) == c.own_reader);

        // Through csr_from_pem_or_der, DER and PEM (both labels): the same request, and it verifies.
        std::string pem = hwca::csr_to_pem(req.get());
        std::string old_pem = pem;
        for (std::string label : {"-----BEGIN ", "-----END "}) {
          auto at = old_pem.find(label + "CERTIFICATE REQUEST");
          REQUIRE(at != std::string::npos);
          old_pem.insert(at + label.size(), "NEW ");
        }
        for (const std::string& input : {der, pem, old_pem}) {
          auto read = hwca::csr_from_pem_or_der(input, "CSR");
          CHECK(der_of(read.get()) == der);
          CHECK_NOTHROW(verify_csr_signature(read.get()));
          CHECK(EVP_PKEY_eq(X509_REQ_get0_pubkey(read.get()), c.key.get()) == 1);
        }
        // A CSR that d2i_csr read itself gives the same certificate key as the original key does.
        if (c.own_reader && sans && !password) {
          auto read = hwca::csr_from_pem_or_der(der, "CSR");
          auto cert = test_leaf(X509_REQ_get0_pubkey(read.get()), ca);
          CHECK(spki_of(cert.get()) == hwca::test::der_with(i2d_PUBKEY, c.key.get()));
          // What the policy layer reads from the key: its algorithm, or the refusal of it.
          auto spec_of = [](const EVP_PKEY* k) -> std::string {
            try {
              return KeySpec::of(k).name();
            } catch (const Error& e) {
              return std::string("refused: ") + e.what();
            }
          };
          CHECK(spec_of(X509_REQ_get0_pubkey(read.get())) == spec_of(c.key.get()));
        }
      }
    }
  }
}

TEST_CASE("d2i_csr agrees with d2i_X509_REQ on damaged and trailing bytes", "[core][x509]") {
  // Every byte of a P-256 and an RSA-2048 request with one bit flipped (low and high), every
  // truncation, and extra bytes after the request.
  int own = 0;
  int refused = 0;
  for (const char* algo : {"ecdsa-p256", "rsa-2048"}) {
    INFO(algo);
    auto key = hwca::generate_software_key(KeySpec::parse(algo));
    std::string der = der_of(signed_request(key.get(), true, true).get());
    for (size_t i = 0; i < der.size(); ++i) {
      for (int bit : {0x01, 0x80}) {
        std::string damaged = der;
        damaged[i] = static_cast<char>(static_cast<unsigned char>(damaged[i]) ^ bit);
        INFO("byte " << i << " ^ " << bit);
        if (reads_as_openssl_does(damaged)) ++own;
        const unsigned char* p = reinterpret_cast<const unsigned char*>(damaged.data());
        hwca::X509_REQ_ptr any(d2i_X509_REQ(nullptr, &p, static_cast<long>(damaged.size())));
        ERR_clear_error();
        if (!any) ++refused;
      }
    }
    for (size_t n = 0; n < der.size(); ++n) CHECK_FALSE(reads_as_openssl_does(der.substr(0, n)));
    CHECK(reads_as_openssl_does(der + std::string("\x05\x00", 2)));
    // csr_from_pem_or_der still refuses DER with bytes after the request.
    Error e = error_of([&] { (void)hwca::csr_from_pem_or_der(der + std::string("\x05\x00", 2), "CSR"); });
    CHECK(e.kind() == ErrorKind::BadInput);
  }
  // Both kinds of outcome were exercised: requests read by d2i_csr itself, and requests refused.
  CHECK(own > 100);
  CHECK(refused > 100);
}

namespace {

// What OpenSSL's own traditional writer makes of the key.
std::string openssl_traditional_pem(EVP_PKEY* key) {
  hwca::BIO_ptr bio(BIO_new(BIO_s_mem()));
  REQUIRE(bio);
  REQUIRE(PEM_write_bio_PrivateKey_traditional(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace

TEST_CASE("private_key_to_traditional_pem writes EC keys byte for byte as OpenSSL's traditional writer does", "[core][x509]") {
  auto same = [](EVP_PKEY* key, bool own_writer) {
    std::optional<std::string> der = hwca::ec_private_key_der(key);
    CHECK(der.has_value() == own_writer);
    const std::string ours = hwca::private_key_to_traditional_pem(key);
    CHECK(ours == openssl_traditional_pem(key));
    hwca::EVP_PKEY_ptr back = hwca::private_key_from_pem(ours, "key");
    CHECK(EVP_PKEY_eq(back.get(), key) == 1);
    return der.value_or("");
  };
  // True when the private scalar is shorter than the group order's byte length (it needs padding).
  auto short_scalar = [](EVP_PKEY* key) {
    BIGNUM* d = nullptr;
    REQUIRE(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1);
    const bool is_short = BN_num_bytes(d) < (EVP_PKEY_get_bits(key) + 7) / 8;
    BN_clear_free(d);
    return is_short;
  };
  // Many keys per named curve: the scalar is padded to the order's length (P-521: 66 bytes, whose first
  // holds one bit), and the public point's last byte often ends in zero bits (a BIT STRING of whole bytes).
  int padded = 0, even_last_byte = 0;
  for (const char* curve : {"P-256", "P-384", "P-521", "secp256k1"}) {
    INFO(curve);
    for (int i = 0; i < 200; ++i) {
      hwca::EVP_PKEY_ptr key(EVP_EC_gen(curve));
      REQUIRE(key);
      same(key.get(), true);
      if (short_scalar(key.get())) ++padded;
      size_t len = 0;
      unsigned char point[200];
      REQUIRE(EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &len) == 1);
      if ((point[len - 1] & 1) == 0) ++even_last_byte;
    }
  }
  CHECK(padded > 50);  // P-521 alone gives about half
  CHECK(even_last_byte > 100);
  // A P-256 scalar with a leading zero byte (about 1 key in 256).
  bool found = false;
  for (int i = 0; i < 20000 && !found; ++i) {
    hwca::EVP_PKEY_ptr key(EVP_EC_gen("P-256"));
    found = short_scalar(key.get());
    if (found) same(key.get(), true);
  }
  CHECK(found);
  // The keys hwca makes for leaves.
  same(hwca::generate_software_key(KeySpec::parse("ecdsa-p256")).get(), true);
  same(hwca::generate_software_key(KeySpec::parse("ecdsa-p384")).get(), true);
  // A compressed point is written compressed.
  {
    hwca::EVP_PKEY_ptr key(EVP_EC_gen("P-256"));
    REQUIRE(EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                           OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED) == 1);
    hwca::EVP_PKEY_ptr uncompressed(EVP_EC_gen("P-256"));
    CHECK(same(key.get(), true).size() + 32 == hwca::ec_private_key_der(uncompressed.get()).value_or("").size());
  }
  // Left to OpenSSL: explicit curve parameters, no public point, other key types.
  {
    hwca::EVP_PKEY_ptr key(EVP_EC_gen("P-256"));
    REQUIRE(EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_ENCODING, OSSL_PKEY_EC_ENCODING_EXPLICIT) == 1);
    same(key.get(), false);
  }
  {
    hwca::EVP_PKEY_ptr key(EVP_EC_gen("P-256"));
    REQUIRE(EVP_PKEY_set_int_param(key.get(), OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, 0) == 1);
    same(key.get(), false);
  }
  same(hwca::generate_software_key(KeySpec::parse("rsa-2048")).get(), false);
  {
    hwca::EVP_PKEY_ptr full(EVP_EC_gen("P-256"));
    const std::string spki = hwca::public_key_der(full.get());
    const unsigned char* p = reinterpret_cast<const unsigned char*>(spki.data());
    hwca::EVP_PKEY_ptr pub(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
    REQUIRE(pub);
    CHECK_FALSE(hwca::ec_private_key_der(pub.get()).has_value());
  }
}
