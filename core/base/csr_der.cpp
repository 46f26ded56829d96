#include "core/base/csr_der.h"

#include "core/base/error.h"

#include <openssl/asn1t.h>
#include <openssl/objects.h>

#include <cstring>
#include <vector>

namespace hwca {

namespace {

// RFC 2986's CertificationRequest, with the SubjectPublicKeyInfo as its two fields (no key decoding).
struct RequestKeyInfo {
  X509_ALGOR* algorithm;
  ASN1_BIT_STRING* key;
};
struct RequestInfo {
  ASN1_INTEGER* version;
  X509_NAME* subject;
  RequestKeyInfo* key_info;
  STACK_OF(X509_ATTRIBUTE) * attributes;
};
struct Request {
  RequestInfo* info;
  X509_ALGOR* signature_algorithm;
  ASN1_BIT_STRING* signature;
};

ASN1_SEQUENCE(RequestKeyInfo) = {
    ASN1_SIMPLE(RequestKeyInfo, algorithm, X509_ALGOR),
    ASN1_SIMPLE(RequestKeyInfo, key, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(RequestKeyInfo)

ASN1_SEQUENCE(RequestInfo) = {
    ASN1_SIMPLE(RequestInfo, version, ASN1_INTEGER),
    ASN1_SIMPLE(RequestInfo, subject, X509_NAME),
    ASN1_SIMPLE(RequestInfo, key_info, RequestKeyInfo),
    // As OpenSSL's X509_REQ_INFO reads it: [0] IMPLICIT, optional.
    ASN1_IMP_SET_OF_OPT(RequestInfo, attributes, X509_ATTRIBUTE, 0),
} static_ASN1_SEQUENCE_END(RequestInfo)

ASN1_SEQUENCE(Request) = {
    ASN1_SIMPLE(Request, info, RequestInfo),
    ASN1_SIMPLE(Request, signature_algorithm, X509_ALGOR),
    ASN1_SIMPLE(Request, signature, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(Request)

void free_request(Request* r) { ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(r), ASN1_ITEM_rptr(Request)); }
using Request_ptr = std::unique_ptr<Request, OsslDeleter<&free_request>>;

// The request's key with a built-in method, or null (then d2i_X509_REQ decides).
EVP_PKEY_ptr built_in_key(const RequestKeyInfo& info) {
  const ASN1_OBJECT* oid = nullptr;
  int param_type = 0;
  const void* param = nullptr;
  X509_ALGOR_get0(&oid, &param_type, &param, info.algorithm);
  const unsigned char* bits = ASN1_STRING_get0_data(info.key);
  long bits_len = ASN1_STRING_length(info.key);
  switch (OBJ_obj2nid(oid)) {
    case NID_rsaEncryption:
      return EVP_PKEY_ptr(d2i_PublicKey(EVP_PKEY_RSA, nullptr, &bits, bits_len));
    case NID_X9_62_id_ecPublicKey:
      if (param_type != V_ASN1_OBJECT) return nullptr;  // explicit or implicit curve
      return ec_public_key_from_point(OBJ_obj2nid(static_cast<const ASN1_OBJECT*>(param)), bits, bits_len);
    default:
      return nullptr;
  }
}

// The request rebuilt from its parts, or null.
X509_REQ_ptr rebuild(Request& parts) {
  EVP_PKEY_ptr key = built_in_key(*parts.info->key_info);
  if (!key) return nullptr;
  X509_REQ_ptr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), ASN1_INTEGER_get(parts.info->version)) != 1 ||
      X509_REQ_set_subject_name(req.get(), parts.info->subject) != 1 || X509_REQ_set_pubkey(req.get(), key.get()) != 1 ||
      X509_REQ_set1_signature_algo(req.get(), parts.signature_algorithm) != 1)
    return nullptr;
  for (int i = 0; i < sk_X509_ATTRIBUTE_num(parts.info->attributes); ++i)
    if (X509_REQ_add1_attr(req.get(), sk_X509_ATTRIBUTE_value(parts.info->attributes, i)) != 1) return nullptr;
  X509_REQ_set0_signature(req.get(), parts.signature);  // the request owns it from here
  parts.signature = nullptr;
  return req;
}

}  // namespace

EVP_PKEY_ptr ec_public_key_from_point(int curve_nid, const unsigned char* point, long point_len) {
  if (curve_nid == NID_undef || point_len <= 0) return nullptr;
  // The curve's parameters as a key with the built-in method, made once per thread and curve.
  const EVP_PKEY* params = per_thread_key(curve_nid, [curve_nid]() -> EVP_PKEY_ptr {
    const ASN1_OBJECT* curve = OBJ_nid2obj(curve_nid);
    unsigned char* der = nullptr;
    int der_len = curve ? i2d_ASN1_OBJECT(curve, &der) : 0;  // ECParameters: the namedCurve choice
    if (der_len <= 0) return nullptr;
    const unsigned char* p = der;
    EVP_PKEY_ptr made(d2i_KeyParams(EVP_PKEY_EC, nullptr, &p, der_len));
    OPENSSL_free(der);
    return made;
  });
  if (!params) return nullptr;
  EVP_PKEY_ptr key(EVP_PKEY_new());
  EVP_PKEY* out = key.get();
  if (!out || EVP_PKEY_copy_parameters(out, params) != 1 || d2i_PublicKey(EVP_PKEY_EC, &out, &point, point_len) == nullptr)
    return nullptr;
  return key;
}

X509_REQ_ptr d2i_csr(const unsigned char** pp, long len) {
  const unsigned char* start = *pp;
  const unsigned char* p = start;
  Request_ptr parts(reinterpret_cast<Request*>(ASN1_item_d2i(nullptr, &p, len, ASN1_ITEM_rptr(Request))));
  if (parts) {
    if (X509_REQ_ptr req = rebuild(*parts)) {
      unsigned char* der = nullptr;
      int der_len = i2d_X509_REQ(req.get(), &der);
      bool same = der_len > 0 && der_len == p - start && std::memcmp(der, start, static_cast<size_t>(der_len)) == 0;
      OPENSSL_free(der);
      if (same) {
        *pp = p;
        return req;
      }
    }
  }
  // Not one this reader rebuilds exactly: OpenSSL's own reader decides, errors and all.
  drain_openssl_errors();
  p = start;
  X509_REQ_ptr req(d2i_X509_REQ(nullptr, &p, len));
  if (req) *pp = p;
  return req;
}

}  // namespace hwca
