// Reading a DER certificate request (RFC 2986) without OpenSSL 3.0's per-call decoder set-up, and EC
// public keys with OpenSSL's built-in method.
#pragma once

#include "core/base/ossl.h"

namespace hwca {

// Like d2i_X509_REQ: reads one CertificationRequest at *pp (at most `len` bytes), advances *pp past
// it, and returns null if it is not one.
//
// OpenSSL 3.0's d2i_X509_REQ decodes the subject public key eagerly through a new OSSL_DECODER
// context, whose set-up walks every decoder of every loaded provider under the method store's locks:
// about 70 us per request on this project's machines, and worse with two threads (the locks are
// shared). Here the request's fields are read with OpenSSL's ASN.1 templates, its key (a named-curve
// EC key or an RSA key) is made with OpenSSL's built-in methods, and the request is rebuilt from those
// parts; it is returned only if it encodes back to exactly the bytes read, so its signature covers
// what it says. Anything else (other key types, explicit curves, encodings that do not round-trip)
// goes to d2i_X509_REQ itself, so what is accepted and what the X509_REQ holds do not change.
X509_REQ_ptr d2i_csr(const unsigned char** pp, long len);

// An EC public key with OpenSSL's built-in EC method (which X509_set_pubkey and X509_REQ_set_pubkey
// encode directly, without an OSSL_ENCODER) on the named curve `curve_nid`, from its encoded point.
// d2i_PublicKey checks that the point is on the curve. Null if the curve or the point is not usable.
EVP_PKEY_ptr ec_public_key_from_point(int curve_nid, const unsigned char* point, long point_len);

}  // namespace hwca
