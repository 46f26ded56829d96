// CRL v2 building (core/crl.h) with software keys, checked with OpenSSL's own parser and verifier.
#include "core_helpers.h"

#include "core/crl.h"

#include <openssl/x509v3.h>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using namespace hwca::core;

namespace {

struct Ca {
  hwca::EVP_PKEY_ptr key;
  hwca::X509_ptr cert;
  explicit Ca(const std::string& algo, unsigned ku = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN) {
    key = hwca::generate_software_key(KeySpec::parse(algo));
    CertTemplate t;
    t.subject = hwca::test::cn_name("crl test root " + algo);
    t.key_usage = ku;
    t.is_ca = true;
    t.not_before = now() - 60;
    t.not_after = now() + 86400;
    cert = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  }
};

}  // namespace

TEST_CASE("revocation reasons: RFC 5280 names and codes", "[core][crl]") {
  CHECK(revocation_reason_code("unspecified") == 0);
  CHECK(revocation_reason_code("keyCompromise") == 1);
  CHECK(revocation_reason_code("cACompromise") == 2);
  CHECK(revocation_reason_code("affiliationChanged") == 3);
  CHECK(revocation_reason_code("superseded") == 4);
  CHECK(revocation_reason_code("cessationOfOperation") == 5);
  CHECK(revocation_reason_code("certificateHold") == 6);
  CHECK(revocation_reason_code("removeFromCRL") == 8);
  CHECK(revocation_reason_code("privilegeWithdrawn") == 9);
  CHECK(revocation_reason_code("aACompromise") == 10);
  CHECK(revocation_reason_names().size() == 10);
  CHECK(revocation_reason_name(9) == "privilegeWithdrawn");
  Error e = error_of([] { revocation_reason_code("stolen"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()).find("keyCompromise") != std::string::npos);
  CHECK_THROWS_AS(revocation_reason_name(7), Error);
}

TEST_CASE("normalize_serial and parse_iso8601", "[core][crl]") {
  CHECK(normalize_serial("0x0A1B") == "0a1b");
  CHECK(normalize_serial("0a:1b") == normalize_serial("A1B"));
  auto serial = random_serial();
  CHECK(normalize_serial(hwca::serial_hex(serial.get())) == hwca::serial_hex(serial.get()));
  CHECK(error_of([] { normalize_serial("xyz"); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([] { normalize_serial("0"); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([] { normalize_serial(""); }).kind() == ErrorKind::BadInput);
  CHECK(parse_iso8601("2027-01-15T08:00:00Z") == 1800000000);
  CHECK(parse_iso8601(iso8601(1234567890)) == 1234567890);
  CHECK(error_of([] { parse_iso8601("2027-01-15 08:00:00"); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([] { parse_iso8601("2027-13-45T08:00:00Z"); }).kind() == ErrorKind::BadInput);
}

TEST_CASE("build_crl: v2, dates, number, AKI, reasons, signature", "[core][crl]") {
  for (const char* algo : {"ecdsa-p256", "ecdsa-p384", "rsa-2048"}) {
    Ca ca(algo);
    auto s1 = random_serial(), s2 = random_serial();
    CrlRequest req;
    req.issuer = ca.cert.get();
    req.issuer_key = ca.key.get();
    req.revoked = {{hwca::serial_hex(s1.get()), 1800000000, 1}, {hwca::serial_hex(s2.get()), 1800000060, 0}};
    req.number = 42;
    req.this_update = 1800000100;
    req.next_update = 1800000100 + 7 * 86400;
    hwca::X509_CRL_ptr crl = build_crl(req);
    INFO(algo);
    CHECK(X509_CRL_get_version(crl.get()) == X509_CRL_VERSION_2);
    CHECK(X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(ca.cert.get())) == 0);
    CHECK(asn1_time_to_time_t(X509_CRL_get0_lastUpdate(crl.get())) == 1800000100);
    CHECK(asn1_time_to_time_t(X509_CRL_get0_nextUpdate(crl.get())) == 1800000100 + 7 * 86400);
    CHECK(crl_number(crl.get()) == 42);
    CHECK(X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.cert.get())) == 1);
    // AKI = the issuer's SKI.
    int crit = 0;
    std::unique_ptr<AUTHORITY_KEYID, hwca::OsslDeleter<&AUTHORITY_KEYID_free>> akid(
        static_cast<AUTHORITY_KEYID*>(X509_CRL_get_ext_d2i(crl.get(), NID_authority_key_identifier, &crit, nullptr)));
    REQUIRE(akid);
    REQUIRE(akid->keyid);
    CHECK(ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(ca.cert.get())) == 0);
    // Entries and reasons.
    STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
    REQUIRE(sk_X509_REVOKED_num(revoked) == 2);
    int with_reason = 0;
    for (int i = 0; i < 2; ++i) {
      X509_REVOKED* r = sk_X509_REVOKED_value(revoked, i);
      std::unique_ptr<ASN1_ENUMERATED, hwca::OsslDeleter<&ASN1_ENUMERATED_free>> reason(
          static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(r, NID_crl_reason, &crit, nullptr)));
      std::string serial = hwca::serial_hex(X509_REVOKED_get0_serialNumber(r));
      if (serial == hwca::serial_hex(s1.get())) {
        REQUIRE(reason);
        CHECK(ASN1_ENUMERATED_get(reason.get()) == 1);
        CHECK(asn1_time_to_time_t(X509_REVOKED_get0_revocationDate(r)) == 1800000000);
        ++with_reason;
      } else {
        CHECK(serial == hwca::serial_hex(s2.get()));
        CHECK(!reason);  // unspecified: the extension is left out (RFC 5280 5.3.1)
      }
    }
    CHECK(with_reason == 1);
    // Round trips.
    auto pem = crl_to_pem(crl.get());
    CHECK(pem.rfind("-----BEGIN X509 CRL-----", 0) == 0);
    CHECK(crl_to_der(crl_from_pem_or_der(pem, "pem").get()) == crl_to_der(crl.get()));
    CHECK(crl_number(crl_from_pem_or_der(crl_to_der(crl.get()), "der").get()) == 42);
  }
}

TEST_CASE("build_crl refuses what cannot make a valid CRL", "[core][crl]") {
  Ca ca("ecdsa-p256");
  CrlRequest req;
  req.issuer = ca.cert.get();
  req.issuer_key = ca.key.get();
  req.number = 1;
  req.this_update = 1800000000;
  req.next_update = 1800000000;
  CHECK(error_of([&] { build_crl(req); }).kind() == ErrorKind::BadInput);
  req.next_update = 1800003600;
  // A key that is not the certificate's.
  auto other = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  req.issuer_key = other.get();
  CHECK(error_of([&] { build_crl(req); }).kind() == ErrorKind::Token);
  // An issuer without cRLSign.
  Ca no_crl_sign("ecdsa-p256", X509v3_KU_KEY_CERT_SIGN);
  req.issuer = no_crl_sign.cert.get();
  req.issuer_key = no_crl_sign.key.get();
  CHECK(error_of([&] { build_crl(req); }).kind() == ErrorKind::Policy);
  CHECK(error_of([] { crl_from_pem_or_der("nonsense", "x.crl"); }).kind() == ErrorKind::BadInput);
}
