// Certificate revocation lists (RFC 5280 CRL v2), built with OpenSSL's X509_CRL_* API and signed with
// the CA's EVP_PKEY (a token key through libp11, or a software key in tests).
#pragma once

#include "core/base/ossl.h"

#include <ctime>
#include <string>
#include <vector>

namespace hwca::core {

// RFC 5280 section 5.3.1 CRLReason codes, by their ASN.1 names.
// unspecified(0) keyCompromise(1) cACompromise(2) affiliationChanged(3) superseded(4)
// cessationOfOperation(5) certificateHold(6) removeFromCRL(8) privilegeWithdrawn(9) aACompromise(10)
// Error(BadInput) naming the accepted set for anything else.
int revocation_reason_code(const std::string& name);
std::string revocation_reason_name(int code);
// The names, in code order, for help texts.
const std::vector<std::string>& revocation_reason_names();

// "0x0A1b", "0a:1b", "A1B" -> "0a1b" as serial_hex() writes it (BN_bn2hex, lowercase).
// Error(BadInput) when it is not a positive hex number.
std::string normalize_serial(const std::string& text);

struct RevokedCertificate {
  std::string serial_hex;      // as the ledger keeps it
  std::time_t revoked_at = 0;
  int reason = 0;              // RFC 5280 code; 0 (unspecified) leaves the reasonCode extension out
};

struct CrlRequest {
  const X509* issuer = nullptr;    // the CA certificate (issuer name, AKI)
  EVP_PKEY* issuer_key = nullptr;  // signs the CRL
  std::vector<RevokedCertificate> revoked;
  long long number = 0;            // cRLNumber, > 0
  std::time_t this_update = 0;
  std::time_t next_update = 0;     // > this_update
};

// Builds, signs (X509_CRL_sign with digest_for(issuer_key)) and checks (X509_CRL_verify with the
// issuer certificate's public key) a v2 CRL: issuer, thisUpdate, nextUpdate, revoked entries (sorted by
// serial) with reasonCode, cRLNumber, authorityKeyIdentifier (the issuer's SKI, or SHA-1 of its public
// key when it has none). Error(Policy) when the issuer is not a CA allowed to sign CRLs.
X509_CRL_ptr build_crl(const CrlRequest& request);

std::string crl_to_pem(const X509_CRL* crl);
std::string crl_to_der(const X509_CRL* crl);
X509_CRL_ptr crl_from_pem_or_der(std::string_view data, const std::string& what);
long long crl_number(const X509_CRL* crl);  // -1 when absent

// "2026-11-29T14:00:00Z" (as iso8601() writes it) -> time_t. Error(BadInput) otherwise.
std::time_t parse_iso8601(const std::string& text);

// Hex SHA-256 of the public key (SPKI DER): how the ledger names a CA for its CRL counter.
std::string key_id(const EVP_PKEY* key);

}  // namespace hwca::core
