// Key algorithms: the vocabulary shared by core/ (leaf keys, signature hashes) and tokens/ (keys
// generated inside a device).
#pragma once

#include "core/base/ossl.h"

#include <string>

namespace hwca {

struct KeySpec {
  enum class Type { Rsa, Ec };
  Type type = Type::Ec;
  int bits = 256;  // RSA modulus bits, or the EC curve size (256, 384, 521)

  // "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096" (and any rsa-N
  // with 2048 <= N <= 8192 when `allow_any_rsa`). Error(BadInput) naming the accepted set otherwise.
  static KeySpec parse(const std::string& name, bool allow_any_rsa = false);
  // cfssl's {"algo","size"}: rsa 2048..8192, ecdsa 256/384/521.
  static KeySpec from_cfssl(const std::string& algo, int size);
  // The spec of an existing key (RSA bits or EC curve); Error(BadInput) for other key types.
  static KeySpec of(const EVP_PKEY* key);

  std::string name() const;          // "ecdsa-p384", "rsa-2048"
  std::string curve_name() const;    // "P-256" (EC only)
  int curve_nid() const;             // NID_X9_62_prime256v1 ... (EC only)
  bool operator==(const KeySpec&) const = default;
};

// The signature digest that follows the key, as cfssl and the foundation issue define it:
// RSA >= 4096 SHA-512, >= 3072 SHA-384, else SHA-256; ECDSA by curve (P-256 SHA-256, P-384 SHA-384,
// P-521 SHA-512).
const EVP_MD* digest_for(const EVP_PKEY* key);

// A software key pair, generated with OpenSSL (leaf keys, the file: backend, tests).
EVP_PKEY_ptr generate_software_key(const KeySpec& spec);

}  // namespace hwca
