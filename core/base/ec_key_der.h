// Writing an EC private key as SEC1 / RFC 5915 ECPrivateKey DER (PEM "EC PRIVATE KEY") without OpenSSL
// 3.0's conversion of the key to a legacy EC_KEY.
#pragma once

#include "core/base/ossl.h"

#include <optional>
#include <string>

namespace hwca {

// The key's ECPrivateKey DER, byte for byte what i2d_ECPrivateKey (and so
// PEM_write_bio_PrivateKey_traditional) writes for it: version 1, the private scalar padded to the
// length of the group order, the named curve as [0], the public point as [1]. nullopt when the key is
// not an EC key on a named curve with its private half (the caller then leaves it to OpenSSL).
//
// For a provider key, PEM_write_bio_PrivateKey_traditional first exports the key to a legacy EC_KEY,
// which builds an EC_GROUP from the curve's name every time: in `hwca k8s init` of 1,000 workers that
// was 10.7 % of the user time, more than the ledger. Here the three fields are read as parameters and
// the structure is encoded with OpenSSL's ASN.1 templates.
std::optional<std::string> ec_private_key_der(EVP_PKEY* key);

}  // namespace hwca
