// X.509 building blocks: names, subject alternative names, certificate templates, and building and
// signing a certificate with any EVP_PKEY (a token's or a software key).
#pragma once

#include "core/base/ossl.h"

#include <ctime>
#include <string>
#include <vector>

namespace hwca::core {

// Subject alternative names, kept in cfssl's output order: DNS, email, IP, URI.
struct SubjectAltNames {
  std::vector<std::string> dns;
  std::vector<std::string> emails;
  std::vector<std::string> ips;   // textual, IPv4 or IPv6
  std::vector<std::string> uris;

  bool empty() const { return dns.empty() && emails.empty() && ips.empty() && uris.empty(); }
  // Classifies host strings as cfssl does: an IP address -> IP; an RFC 5322 address -> email; an
  // absolute URI with "scheme://" -> URI; anything else -> DNS. Empty strings are skipped (cfssl's
  // `"hosts": [""]` means none). Error(BadInput) for NUL bytes, control characters, a label over 63
  // or a name over 253 characters, or an invalid DNS name.
  static SubjectAltNames classify(const std::vector<std::string>& hosts);
  // The SANs of a CSR's extension request (empty when it has none).
  static SubjectAltNames of_csr(const X509_REQ* csr);
  static SubjectAltNames of_cert(const X509* cert);
  // All entries in order, with prefixes "DNS:", "email:", "IP:", "URI:".
  std::vector<std::string> describe() const;
};

// One RDN attribute of a subject, in order. Several values of one type with `multi` set go into one
// multi-valued RDN ("O = k8s + O = system:masters").
struct NameAttribute {
  int nid = 0;
  std::string value;
  bool joins_previous = false;  // part of the previous RDN (multi-valued)
};

// Builds an X509_NAME. Strings are PrintableString when every character allows it, else UTF8String
// (as Go's encoding/asn1 and so cfssl do). Error(BadInput) for empty values or NUL bytes.
X509_NAME_ptr make_name(const std::vector<NameAttribute>& attrs);
// Parses OpenSSL's "/CN=Example Root CA/O=Example" form (also "CN=x,O=y"). Known short names:
// C, ST, L, O, OU, CN, serialNumber, emailAddress, DC. Error(BadInput) otherwise.
X509_NAME_ptr parse_subject(const std::string& text);
// One-line RFC 2253 form, as `openssl x509 -nameopt RFC2253` prints it.
std::string name_to_string(const X509_NAME* name);
// Well-formed UTF-8: shortest forms only, no surrogates, nothing above U+10FFFF.
bool valid_utf8(const std::string& s);
std::string common_name(const X509_NAME* name);

struct CertTemplate {
  X509_NAME_ptr subject;
  SubjectAltNames sans;
  unsigned key_usage = 0;          // X509v3_KU_* bits; 0 = no keyUsage extension
  bool key_usage_critical = true;
  std::vector<int> ext_key_usage;  // NIDs (NID_server_auth, NID_client_auth, ...); empty = none
  bool basic_constraints = true;   // always critical
  bool is_ca = false;
  int path_len = -1;               // -1: no pathLenConstraint
  std::time_t not_before = 0;
  std::time_t not_after = 0;
  bool subject_key_id = true;
  bool authority_key_id = true;    // for a self-signed certificate: AKI = own SKI
};

// Builds the certificate, signs it with `issuer_key` using digest_for(issuer_key), and checks the
// signature with the issuer's public key before returning. `issuer` null = self-signed (issuer name
// = subject, AKI = own SKI). Extensions, in cfssl's order: keyUsage, extKeyUsage, basicConstraints,
// subjectKeyIdentifier, authorityKeyIdentifier, subjectAltName.
X509_ptr build_certificate(const CertTemplate& tmpl, const ASN1_INTEGER* serial, EVP_PKEY* subject_public_key,
                           const X509* issuer, EVP_PKEY* issuer_key);
// build_certificate's three steps, for batches that sign back to back (Issuer::issue_batch): the
// certificate with every field and extension but no signature; the signature; the check of the signature
// with the issuer's public key (`issuer` null: `subject_public_key`), Error(Token) when it fails.
X509_ptr unsigned_certificate(const CertTemplate& tmpl, const ASN1_INTEGER* serial, EVP_PKEY* subject_public_key,
                              const X509* issuer);
void sign_certificate(X509* cert, EVP_PKEY* issuer_key);
void check_certificate_signature(X509* cert, const X509* issuer, EVP_PKEY* subject_public_key);

// 20 random bytes with the top bit cleared (cfssl's rule; >= 64 bits of entropy), never zero.
ASN1_INTEGER_ptr random_serial();

// Verifies the CSR's own signature (proof of possession); Error(BadInput) when it does not verify.
void verify_csr_signature(X509_REQ* csr);
// Builds a CSR for `subject`/`sans` signed by `key` (what gencert hands back as `csr`).
X509_REQ_ptr make_csr(const X509_NAME* subject, const SubjectAltNames& sans, EVP_PKEY* key);
// The same, also asking for basicConstraints CA:TRUE in the extension request when `request_ca`.
X509_REQ_ptr make_csr(const X509_NAME* subject, const SubjectAltNames& sans, EVP_PKEY* key, bool request_ca);
// True when the CSR asks for basicConstraints CA:TRUE.
bool csr_requests_ca(const X509_REQ* csr);

// Time helpers.
std::time_t now();
// now rounded to the minute (Go's time.Round(time.Minute)).
std::time_t now_rounded_to_minute();
std::string iso8601(std::time_t t);      // 2026-11-29T14:00:00Z
std::time_t asn1_time_to_time_t(const ASN1_TIME* t);

// Verifies `cert` against `roots` (+ `intermediates`) with OpenSSL's verifier at the current time.
// Returns an empty string on success, else OpenSSL's reason.
std::string verify_chain(X509* cert, const std::vector<X509*>& roots, const std::vector<X509*>& intermediates = {});

}  // namespace hwca::core
