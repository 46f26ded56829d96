// RAII aliases for OpenSSL handles. Every OpenSSL object our code owns lives in one of these.
#pragma once

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hwca {

template <auto Fn>
struct OsslDeleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    if (p) Fn(p);
  }
};

using EVP_PKEY_ptr = std::unique_ptr<EVP_PKEY, OsslDeleter<&EVP_PKEY_free>>;
using EVP_PKEY_CTX_ptr = std::unique_ptr<EVP_PKEY_CTX, OsslDeleter<&EVP_PKEY_CTX_free>>;
using EVP_MD_CTX_ptr = std::unique_ptr<EVP_MD_CTX, OsslDeleter<&EVP_MD_CTX_free>>;
using X509_ptr = std::unique_ptr<X509, OsslDeleter<&X509_free>>;
using X509_REQ_ptr = std::unique_ptr<X509_REQ, OsslDeleter<&X509_REQ_free>>;
using X509_NAME_ptr = std::unique_ptr<X509_NAME, OsslDeleter<&X509_NAME_free>>;
using X509_EXTENSION_ptr = std::unique_ptr<X509_EXTENSION, OsslDeleter<&X509_EXTENSION_free>>;
using X509_STORE_ptr = std::unique_ptr<X509_STORE, OsslDeleter<&X509_STORE_free>>;
using X509_STORE_CTX_ptr = std::unique_ptr<X509_STORE_CTX, OsslDeleter<&X509_STORE_CTX_free>>;
using X509_CRL_ptr = std::unique_ptr<X509_CRL, OsslDeleter<&X509_CRL_free>>;
using BIO_ptr = std::unique_ptr<BIO, OsslDeleter<&BIO_free_all>>;
using BIGNUM_ptr = std::unique_ptr<BIGNUM, OsslDeleter<&BN_free>>;
using ASN1_INTEGER_ptr = std::unique_ptr<ASN1_INTEGER, OsslDeleter<&ASN1_INTEGER_free>>;
using ASN1_TIME_ptr = std::unique_ptr<ASN1_TIME, OsslDeleter<&ASN1_TIME_free>>;
using ASN1_OCTET_STRING_ptr = std::unique_ptr<ASN1_OCTET_STRING, OsslDeleter<&ASN1_OCTET_STRING_free>>;
using GENERAL_NAMES_ptr = std::unique_ptr<GENERAL_NAMES, OsslDeleter<&GENERAL_NAMES_free>>;
// sk_X509_EXTENSION_free is a macro in OpenSSL 3 (no address to take); the stack owns its extensions.
inline void free_x509_extension_stack(STACK_OF(X509_EXTENSION) * exts) noexcept {
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}
using STACK_OF_X509_EXTENSION_ptr =
    std::unique_ptr<STACK_OF(X509_EXTENSION), OsslDeleter<&free_x509_extension_stack>>;

// A shared reference to an EVP_PKEY (EVP_PKEY_up_ref).
EVP_PKEY_ptr share(EVP_PKEY* key);

// A key made once per thread and `id` (a curve's NID or size) by `make`, kept until the thread ends; null
// when `make` returns null (then nothing is kept). Each call site (each `Make` type) has a cache of its
// own. For EC curve parameters: building the curve is the costly part of making a key from its name.
template <typename Make>
const EVP_PKEY* per_thread_key(int id, Make&& make) {
  thread_local std::vector<std::pair<int, EVP_PKEY_ptr>> cache;
  for (const auto& [cached_id, key] : cache)
    if (cached_id == id) return key.get();
  EVP_PKEY_ptr made = make();
  if (!made) return nullptr;
  cache.emplace_back(id, std::move(made));
  return cache.back().second.get();
}

// PEM <-> objects. Parsing failures throw Error(BadInput) naming `what` (a file name or "CSR").
X509_ptr x509_from_pem(std::string_view pem, const std::string& what);
std::vector<X509_ptr> x509_chain_from_pem(std::string_view pem, const std::string& what);
std::string x509_to_pem(const X509* cert);
std::string x509_to_der(const X509* cert);
// DER bytes under a PEM label ("CERTIFICATE", ...): what PEM_write_bio_X509 and its kin write for the
// same bytes, line for line.
std::string der_to_pem(std::string_view der, const char* label);
// A CSR in PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST") or DER.
X509_REQ_ptr csr_from_pem_or_der(std::string_view data, const std::string& what);
std::string csr_to_pem(const X509_REQ* csr);
// Private keys: PEM in any form OpenSSL reads (PKCS#8, PKCS#1, SEC1), unencrypted.
EVP_PKEY_ptr private_key_from_pem(std::string_view pem, const std::string& what);
// PKCS#1 "RSA PRIVATE KEY" / SEC1 "EC PRIVATE KEY", as cfssl writes them.
std::string private_key_to_traditional_pem(EVP_PKEY* key);
std::string public_key_to_pem(EVP_PKEY* key);
// DER SubjectPublicKeyInfo, for comparing keys.
std::string public_key_der(const EVP_PKEY* key);
bool same_public_key(const EVP_PKEY* a, const EVP_PKEY* b);

// Reads a whole file; Error(NotFound) when it does not exist, Error(Io) when unreadable.
std::string read_file(const std::string& path);

// Reads a configuration file (cluster.yaml, a ceremony file) that may name keys. A key URI's
// `pin-value=` is accepted only from a file that other users cannot read: Error(BadInput) when the
// file holds "pin-value=" and is world-readable.
std::string read_config_file(const std::string& path);

// Lowercase hex without separators.
std::string to_hex(const unsigned char* data, size_t len);
std::string to_hex(std::string_view bytes);
std::string serial_hex(const ASN1_INTEGER* serial);
// SHA-256 of `data`, lowercase hex.
std::string sha256_hex(std::string_view data);

}  // namespace hwca
