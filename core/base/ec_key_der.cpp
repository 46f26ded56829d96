#include "core/base/ec_key_der.h"

#include "core/base/error.h"

#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>

#include <string_view>
#include <vector>

namespace hwca {

namespace {

// RFC 5915's ECPrivateKey with the namedCurve choice of ECParameters, as OpenSSL's EC_PRIVATEKEY.
struct Sec1Key {
  ASN1_INTEGER* version;
  ASN1_OCTET_STRING* private_key;
  ASN1_OBJECT* curve;
  ASN1_BIT_STRING* public_key;
};

ASN1_SEQUENCE(Sec1Key) = {
    ASN1_SIMPLE(Sec1Key, version, ASN1_INTEGER),
    ASN1_SIMPLE(Sec1Key, private_key, ASN1_OCTET_STRING),
    ASN1_EXP_OPT(Sec1Key, curve, ASN1_OBJECT, 0),
    ASN1_EXP_OPT(Sec1Key, public_key, ASN1_BIT_STRING, 1),
} static_ASN1_SEQUENCE_END(Sec1Key)

void free_sec1(Sec1Key* k) {
  if (k && k->private_key) OPENSSL_cleanse(k->private_key->data, static_cast<size_t>(k->private_key->length));
  ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(k), ASN1_ITEM_rptr(Sec1Key));
}
using Sec1Key_ptr = std::unique_ptr<Sec1Key, OsslDeleter<&free_sec1>>;

int curve_nid_of(EVP_PKEY* key) {
  char name[80];
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name, &len) != 1) return NID_undef;
  int nid = OBJ_sn2nid(name);
  if (nid == NID_undef) nid = EC_curve_nist2nid(name);
  return nid;
}

}  // namespace

std::optional<std::string> ec_private_key_der(EVP_PKEY* key) {
  if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return std::nullopt;
  const int nid = curve_nid_of(key);
  const int order_bits = EVP_PKEY_get_bits(key);
  if (nid == NID_undef || order_bits <= 0) return std::nullopt;
  // OpenSSL's writer follows two settings of the key: the curve as a name (else explicit parameters),
  // and the public point included. Keys set otherwise are left to it.
  char encoding[32];
  size_t encoding_len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof encoding, &encoding_len) == 1 &&
      std::string_view(encoding, encoding_len) != OSSL_PKEY_EC_ENCODING_GROUP)
    return std::nullopt;
  int include_public = 1;
  if (EVP_PKEY_get_int_param(key, OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, &include_public) == 1 && include_public == 0)
    return std::nullopt;
  drain_openssl_errors();
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &raw) != 1 || !raw) {
    drain_openssl_errors();
    return std::nullopt;
  }
  std::unique_ptr<BIGNUM, OsslDeleter<&BN_clear_free>> scalar(raw);
  size_t point_len = 0;
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0, &point_len) != 1 || point_len == 0) {
    drain_openssl_errors();
    return std::nullopt;
  }
  std::vector<unsigned char> point(point_len);
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size(), &point_len) != 1)
    throw_openssl(ErrorKind::Internal, "reading the EC public point");

  Sec1Key_ptr sec1(reinterpret_cast<Sec1Key*>(ASN1_item_new(ASN1_ITEM_rptr(Sec1Key))));
  if (!sec1) throw_openssl(ErrorKind::Internal, "ASN1_item_new");
  // The private scalar, padded to the byte length of the group order (RFC 5915 section 3).
  const size_t scalar_len = static_cast<size_t>((order_bits + 7) / 8);
  std::vector<unsigned char> scalar_bytes(scalar_len);
  bool ok = BN_bn2binpad(scalar.get(), scalar_bytes.data(), static_cast<int>(scalar_len)) == static_cast<int>(scalar_len) &&
            ASN1_INTEGER_set(sec1->version, 1) == 1 &&
            ASN1_OCTET_STRING_set(sec1->private_key, scalar_bytes.data(), static_cast<int>(scalar_len)) == 1;
  OPENSSL_cleanse(scalar_bytes.data(), scalar_bytes.size());
  sec1->curve = OBJ_nid2obj(nid);  // a static object: freeing it does nothing
  sec1->public_key = ASN1_BIT_STRING_new();
  ok = ok && sec1->curve && sec1->public_key &&
       ASN1_BIT_STRING_set(sec1->public_key, point.data(), static_cast<int>(point_len)) == 1;
  if (!ok) throw_openssl(ErrorKind::Internal, "building the ECPrivateKey");
  // Whole bytes: without this the encoder drops the last byte's trailing zero bits.
  sec1->public_key->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07L);
  sec1->public_key->flags |= ASN1_STRING_FLAG_BITS_LEFT;

  unsigned char* der = nullptr;
  const int der_len = ASN1_item_i2d(reinterpret_cast<ASN1_VALUE*>(sec1.get()), &der, ASN1_ITEM_rptr(Sec1Key));
  if (der_len <= 0) throw_openssl(ErrorKind::Internal, "encoding the ECPrivateKey");
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(der_len));
  OPENSSL_clear_free(der, static_cast<size_t>(der_len));
  return out;
}

}  // namespace hwca
