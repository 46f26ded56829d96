// The conformance checks every key backend's Signer must pass (file, SoftHSM2, swtpm): the device
// key signs with the digest that follows the key, the signature verifies with the software public
// half, and an X.509 certificate signed through it verifies with the signature algorithm expected.
#pragma once

#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/base/ossl.h"
#include "tokens/backend.h"

#include <catch2/catch.hpp>

#include <openssl/objects.h>
#include <openssl/x509.h>

#include <string>

namespace hwca::test {

inline std::string sign_data(EVP_PKEY* key, const std::string& data) {
  EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
  REQUIRE(ctx);
  REQUIRE(EVP_DigestSignInit(ctx.get(), nullptr, digest_for(key), nullptr, key) == 1);
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  REQUIRE(EVP_DigestSign(ctx.get(), nullptr, &len, in, data.size()) == 1);
  std::string sig(len, '\0');
  REQUIRE(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, data.size()) == 1);
  sig.resize(len);
  return sig;
}

inline bool verify_data(EVP_PKEY* pub, const EVP_MD* md, const std::string& data, const std::string& sig) {
  EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, pub) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
}

// A minimal self-signed certificate signed through the Signer with X509_sign.
inline X509_ptr self_signed(const tokens::Signer& signer, const std::string& cn = "hwca conformance") {
  X509_ptr cert(X509_new());
  REQUIRE(cert);
  REQUIRE(X509_set_version(cert.get(), X509_VERSION_3) == 1);
  REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 4242) == 1);
  X509_NAME* name = X509_get_subject_name(cert.get());
  REQUIRE(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1,
                                     -1, 0) == 1);
  REQUIRE(X509_set_issuer_name(cert.get(), name) == 1);
  REQUIRE(X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0));
  REQUIRE(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600));
  REQUIRE(X509_set_pubkey(cert.get(), signer.public_key()) == 1);
  REQUIRE(X509_sign(cert.get(), signer.pkey(), digest_for(signer.pkey())) > 0);
  return cert;
}

inline void check_signer(const tokens::Signer& signer, const KeySpec& spec) {
  REQUIRE(signer.pkey() != nullptr);
  REQUIRE(signer.public_key() != nullptr);
  CHECK(KeySpec::of(signer.public_key()) == spec);
  CHECK(KeySpec::of(signer.pkey()) == spec);
  // The digest rule gives the same answer for the device key and its software public half.
  CHECK(digest_for(signer.pkey()) == digest_for(signer.public_key()));
  // The device key's EVP_PKEY encodes to the same public key as its software half.
  CHECK(public_key_der(signer.pkey()) == public_key_der(signer.public_key()));

  const std::string data = "hwca conformance: " + spec.name();
  std::string sig = sign_data(signer.pkey(), data);
  CHECK(verify_data(signer.public_key(), digest_for(signer.public_key()), data, sig));
  CHECK_FALSE(verify_data(signer.public_key(), digest_for(signer.public_key()), data + "!", sig));
  drain_openssl_errors();

  X509_ptr cert = self_signed(signer);
  // Signing leaves nothing behind on OpenSSL's error queue (a later error message would show it).
  CHECK(drain_openssl_errors() == "");
  CHECK(X509_verify(cert.get(), signer.public_key()) == 1);
  EVP_PKEY* in_cert = X509_get0_pubkey(cert.get());
  REQUIRE(in_cert != nullptr);
  CHECK(same_public_key(in_cert, signer.public_key()));
  // The signature algorithm in the certificate is the one that follows the key.
  int md_nid = NID_undef, pk_nid = NID_undef;
  REQUIRE(OBJ_find_sigid_algs(X509_get_signature_nid(cert.get()), &md_nid, &pk_nid) == 1);
  CHECK(md_nid == EVP_MD_get_type(digest_for(signer.public_key())));
  CHECK(pk_nid == (spec.type == KeySpec::Type::Rsa ? NID_rsaEncryption : NID_X9_62_id_ecPublicKey));
  drain_openssl_errors();
}

}  // namespace hwca::test
