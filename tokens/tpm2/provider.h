// An OpenSSL 3 provider of our own ("hwca-tpm2") that turns a TPM key into an EVP_PKEY that X509_sign,
// X509_REQ_sign and EVP_DigestSign use like any other key: OpenSSL hashes, the TPM signs the digest
// (Esys_Sign), and OpenSSL gets the signature back (DER ECDSA-Sig-Value, or the PKCS#1 v1.5 block).
//
// The provider lives in a library context of its own, so it never answers a fetch for ordinary
// software keys in the default context; its signature algorithms have names of their own
// (HWCA-TPM2-ECDSA, HWCA-TPM2-RSA) so that OpenSSL cannot route a TPM key to a software signer.
#pragma once

#include "core/base/algorithm.h"
#include "core/base/ossl.h"

#include <openssl/types.h>

#include <memory>
#include <string>

namespace hwca::tokens::tpm2 {

// A key that signs digests inside the TPM.
class DeviceKey {
 public:
  virtual ~DeviceKey() = default;
  virtual const KeySpec& spec() const = 0;
  // The public half, a software key.
  virtual EVP_PKEY* public_key() const = 0;
  // Signs `digest` (made with `md`). Throws hwca::Error.
  virtual std::string sign_digest(const EVP_MD* md, const std::string& digest) = 0;
};

class Provider {
 public:
  Provider();
  ~Provider();
  Provider(const Provider&) = delete;
  Provider& operator=(const Provider&) = delete;

  // An EVP_PKEY backed by `key`. The EVP_PKEY must be freed before this Provider.
  EVP_PKEY_ptr make_pkey(std::shared_ptr<DeviceKey> key);

 private:
  OSSL_LIB_CTX* m_libctx = nullptr;
  OSSL_PROVIDER* m_ours = nullptr;
  OSSL_PROVIDER* m_default = nullptr;
};

}  // namespace hwca::tokens::tpm2
