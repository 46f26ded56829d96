#include "core/crl.h"

#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/x509.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cctype>

namespace hwca::core {

namespace {

struct Reason {
  const char* name;
  int code;
};
constexpr Reason kReasons[] = {
    {"unspecified", 0},          {"keyCompromise", 1},     {"cACompromise", 2}, {"affiliationChanged", 3},
    {"superseded", 4},           {"cessationOfOperation", 5}, {"certificateHold", 6}, {"removeFromCRL", 8},
    {"privilegeWithdrawn", 9},   {"aACompromise", 10},
};

using ASN1_ENUMERATED_ptr = std::unique_ptr<ASN1_ENUMERATED, OsslDeleter<&ASN1_ENUMERATED_free>>;
using AUTHORITY_KEYID_ptr = std::unique_ptr<AUTHORITY_KEYID, OsslDeleter<&AUTHORITY_KEYID_free>>;

}  // namespace

const std::vector<std::string>& revocation_reason_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& r : kReasons) v.emplace_back(r.name);
    return v;
  }();
  return names;
}

int revocation_reason_code(const std::string& name) {
  for (const auto& r : kReasons)
    if (name == r.name) return r.code;
  std::string list;
  for (const auto& n : revocation_reason_names()) list += (list.empty() ? "" : ", ") + n;
  throw Error(ErrorKind::BadInput, "unknown revocation reason '" + name + "' (RFC 5280 reasons: " + list + ")");
}

std::string revocation_reason_name(int code) {
  for (const auto& r : kReasons)
    if (code == r.code) return r.name;
  throw Error(ErrorKind::BadInput, "unknown revocation reason code " + std::to_string(code));
}

std::string normalize_serial(const std::string& text) {
  std::string hex;
  std::string s = text;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s = s.substr(2);
  for (char c : s) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c)))
      throw Error(ErrorKind::BadInput, "serial '" + text + "' is not a hexadecimal number");
    hex += c;
  }
  if (hex.empty() || hex.size() > 64) throw Error(ErrorKind::BadInput, "serial '" + text + "' is not a serial number");
  BIGNUM* raw = nullptr;
  if (BN_hex2bn(&raw, hex.c_str()) == 0 || !raw) throw_openssl(ErrorKind::BadInput, "serial '" + text + "'");
  BIGNUM_ptr bn(raw);
  if (BN_is_zero(bn.get())) throw Error(ErrorKind::BadInput, "serial 0 is not a valid serial number");
  ASN1_INTEGER_ptr ai(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (!ai) throw_openssl(ErrorKind::Internal, "BN_to_ASN1_INTEGER");
  return serial_hex(ai.get());
}

std::time_t parse_iso8601(const std::string& text) {
  // YYYY-MM-DDTHH:MM:SSZ -> GeneralizedTime YYYYMMDDHHMMSSZ, which OpenSSL parses and checks.
  static const char kShape[] = "dddd-dd-ddTdd:dd:ddZ";
  bool shaped = text.size() == sizeof kShape - 1;
  for (size_t i = 0; shaped && i < text.size(); ++i)
    shaped = kShape[i] == 'd' ? std::isdigit(static_cast<unsigned char>(text[i])) != 0 : text[i] == kShape[i];
  if (!shaped) throw Error(ErrorKind::BadInput, "'" + text + "' is not a UTC time like 2026-11-29T14:00:00Z");
  std::string gt;
  for (char c : text)
    if (c != '-' && c != ':' && c != 'T') gt += c;
  ASN1_TIME_ptr t(ASN1_TIME_new());
  if (!t || ASN1_TIME_set_string(t.get(), gt.c_str()) != 1) throw_openssl(ErrorKind::BadInput, "time '" + text + "'");
  return asn1_time_to_time_t(t.get());
}

std::string key_id(const EVP_PKEY* key) { return sha256_hex(public_key_der(key)); }

X509_CRL_ptr build_crl(const CrlRequest& req) {
  if (!req.issuer || !req.issuer_key) throw Error(ErrorKind::Internal, "build_crl: no issuer");
  if (req.number <= 0) throw Error(ErrorKind::Internal, "build_crl: CRL number must be positive");
  if (req.next_update <= req.this_update) throw Error(ErrorKind::BadInput, "the CRL's next update must be after this update");
  X509* issuer = const_cast<X509*>(req.issuer);
  if (X509_check_ca(issuer) == 0) {
    ERR_clear_error();
    throw Error(ErrorKind::Policy, "the issuer certificate is not a CA certificate");
  }
  if ((X509_get_extension_flags(issuer) & EXFLAG_KUSAGE) && !(X509_get_key_usage(issuer) & KU_CRL_SIGN))
    throw Error(ErrorKind::Policy, "the issuer certificate's keyUsage does not allow CRL signing (cRLSign)");

  X509_CRL_ptr crl(X509_CRL_new());
  if (!crl || X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer)) != 1)
    throw_openssl(ErrorKind::Internal, "starting the CRL");
  ASN1_TIME_ptr this_update(ASN1_TIME_set(nullptr, req.this_update));
  ASN1_TIME_ptr next_update(ASN1_TIME_set(nullptr, req.next_update));
  if (!this_update || !next_update || X509_CRL_set1_lastUpdate(crl.get(), this_update.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next_update.get()) != 1)
    throw_openssl(ErrorKind::Internal, "setting the CRL's dates");

  for (const auto& r : req.revoked) {
    std::unique_ptr<X509_REVOKED, OsslDeleter<&X509_REVOKED_free>> rev(X509_REVOKED_new());
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, r.serial_hex.c_str()) == 0 || !raw) throw_openssl(ErrorKind::BadInput, "serial " + r.serial_hex);
    BIGNUM_ptr bn(raw);
    ASN1_INTEGER_ptr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    ASN1_TIME_ptr when(ASN1_TIME_set(nullptr, r.revoked_at));
    if (!rev || !serial || !when || X509_REVOKED_set_serialNumber(rev.get(), serial.get()) != 1 ||
        X509_REVOKED_set_revocationDate(rev.get(), when.get()) != 1)
      throw_openssl(ErrorKind::Internal, "adding a revoked certificate");
    if (r.reason != 0) {
      revocation_reason_name(r.reason);  // a known code
      ASN1_ENUMERATED_ptr code(ASN1_ENUMERATED_new());
      if (!code || ASN1_ENUMERATED_set(code.get(), r.reason) != 1 ||
          X509_REVOKED_add1_ext_i2d(rev.get(), NID_crl_reason, code.get(), 0, X509V3_ADD_DEFAULT) != 1)
        throw_openssl(ErrorKind::Internal, "adding a reasonCode");
    }
    if (X509_CRL_add0_revoked(crl.get(), rev.get()) != 1) throw_openssl(ErrorKind::Internal, "adding a revoked certificate");
    rev.release();  // owned by the CRL now
  }
  X509_CRL_sort(crl.get());

  // authorityKeyIdentifier: the issuer's own SKI (what chain builders match), else SHA-1 of its key.
  AUTHORITY_KEYID_ptr akid(AUTHORITY_KEYID_new());
  if (!akid) throw_openssl(ErrorKind::Internal, "AUTHORITY_KEYID_new");
  const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(issuer);
  ASN1_OCTET_STRING_ptr keyid(ski ? ASN1_OCTET_STRING_dup(ski) : ASN1_OCTET_STRING_new());
  if (!keyid) throw_openssl(ErrorKind::Internal, "ASN1_OCTET_STRING");
  if (!ski) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (X509_pubkey_digest(issuer, EVP_sha1(), md, &len) != 1 ||
        ASN1_OCTET_STRING_set(keyid.get(), md, static_cast<int>(len)) != 1)
      throw_openssl(ErrorKind::Internal, "hashing the issuer's public key");
  }
  akid->keyid = keyid.release();
  if (X509_CRL_add1_ext_i2d(crl.get(), NID_authority_key_identifier, akid.get(), 0, X509V3_ADD_DEFAULT) != 1)
    throw_openssl(ErrorKind::Internal, "adding the authorityKeyIdentifier");

  ASN1_INTEGER_ptr number(ASN1_INTEGER_new());
  if (!number || ASN1_INTEGER_set_int64(number.get(), req.number) != 1 ||
      X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, X509V3_ADD_DEFAULT) != 1)
    throw_openssl(ErrorKind::Internal, "adding the cRLNumber");

  if (X509_CRL_sign(crl.get(), req.issuer_key, digest_for(req.issuer_key)) <= 0)
    throw_openssl(ErrorKind::Token, "signing the CRL");
  EVP_PKEY* pub = X509_get0_pubkey(issuer);
  if (!pub || X509_CRL_verify(crl.get(), pub) != 1) {
    drain_openssl_errors();
    throw Error(ErrorKind::Token, "the CRL's signature does not verify with the issuer certificate's public key");
  }
  return crl;
}

std::string crl_to_pem(const X509_CRL* crl) {
  BIO_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_CRL(bio.get(), const_cast<X509_CRL*>(crl)) != 1) throw_openssl(ErrorKind::Internal, "PEM-encoding the CRL");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string crl_to_der(const X509_CRL* crl) {
  unsigned char* der = nullptr;
  int len = i2d_X509_CRL(const_cast<X509_CRL*>(crl), &der);
  if (len <= 0) throw_openssl(ErrorKind::Internal, "DER-encoding the CRL");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

X509_CRL_ptr crl_from_pem_or_der(std::string_view data, const std::string& what) {
  BIO_ptr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new_mem_buf");
  X509_CRL* crl = nullptr;
  if (data.find("-----BEGIN X509 CRL-----") != std::string_view::npos) {
    crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr);
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(data.size()));
  }
  if (!crl) throw_openssl(ErrorKind::BadInput, what + " is not a CRL");
  return X509_CRL_ptr(crl);
}

long long crl_number(const X509_CRL* crl) {
  int crit = 0;
  ASN1_INTEGER_ptr n(static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl, NID_crl_number, &crit, nullptr)));
  if (!n) return -1;
  int64_t v = 0;
  if (ASN1_INTEGER_get_int64(&v, n.get()) != 1) return -1;
  return static_cast<long long>(v);
}

}  // namespace hwca::core
