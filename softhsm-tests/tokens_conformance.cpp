// The same conformance checks against every key backend: the software (file:) backend and SoftHSM2, for
// every algorithm: generate, describe, sign with EVP_DigestSign and X509_sign, verify with OpenSSL.
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "support/softhsm_token.h"
#include "tokens/backend.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <sys/stat.h>
#include <thread>

using namespace hwca;
using namespace hwca::tokens;

namespace {

const std::vector<std::string> kAlgorithms = {"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"};

std::string sign(EVP_PKEY* key, const std::string& data) {
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

bool verify(EVP_PKEY* pub, const EVP_MD* md, const std::string& data, const std::string& sig) {
  EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, pub) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
}

X509_ptr self_signed(const Signer& signer) {
  X509_ptr cert(X509_new());
  REQUIRE(cert);
  REQUIRE(X509_set_version(cert.get(), X509_VERSION_3) == 1);
  REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 4242) == 1);
  X509_NAME* name = X509_get_subject_name(cert.get());
  REQUIRE(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("hwca test"), -1,
                                     -1, 0) == 1);
  REQUIRE(X509_set_issuer_name(cert.get(), name) == 1);
  REQUIRE(X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0));
  REQUIRE(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600));
  REQUIRE(X509_set_pubkey(cert.get(), signer.public_key()) == 1);
  REQUIRE(X509_sign(cert.get(), signer.pkey(), digest_for(signer.pkey())) > 0);
  return cert;
}

void check_signer(const Signer& signer, const KeySpec& spec) {
  REQUIRE(signer.pkey() != nullptr);
  REQUIRE(signer.public_key() != nullptr);
  CHECK(KeySpec::of(signer.public_key()) == spec);
  CHECK(KeySpec::of(signer.pkey()) == spec);
  // The digest rule gives the same answer for the device key and its software public half.
  CHECK(digest_for(signer.pkey()) == digest_for(signer.public_key()));

  const std::string data = "hwca conformance: " + spec.name();
  std::string sig = sign(signer.pkey(), data);
  CHECK(verify(signer.public_key(), digest_for(signer.public_key()), data, sig));
  CHECK_FALSE(verify(signer.public_key(), digest_for(signer.public_key()), data + "!", sig));
  drain_openssl_errors();

  X509_ptr cert = self_signed(signer);
  CHECK(X509_verify(cert.get(), signer.public_key()) == 1);
  EVP_PKEY* in_cert = X509_get0_pubkey(cert.get());
  REQUIRE(in_cert != nullptr);
  CHECK(same_public_key(in_cert, signer.public_key()));
}

}  // namespace

TEST_CASE("tokens: file backend conformance", "[tokens][file]") {
  const std::string algorithm = GENERATE(from_range(kAlgorithms));
  INFO("backend file, algorithm " << algorithm);
  const KeySpec spec = KeySpec::parse(algorithm);
  test::TempDir dir;
  auto registry = Registry::with_builtin_backends();
  const std::string uri = "file:" + dir.file(algorithm + ".pem");
  KeyBackend& backend = registry->backend_for(uri);
  CHECK(backend.scheme() == "file");
  CHECK_FALSE(backend.exists(uri));

  auto signer = backend.generate(uri, GenerateOptions{spec});
  REQUIRE(signer);
  CHECK(signer->uri() == uri);
  check_signer(*signer, spec);

  struct stat st {};
  REQUIRE(::stat(dir.file(algorithm + ".pem").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(backend.exists(uri));

  KeyDescription d = backend.describe(uri);
  CHECK(d.backend == "file");
  CHECK(d.algorithm == algorithm);
  CHECK_FALSE(d.hardware);
  CHECK(d.attribute("sensitive") == "false");
  CHECK(d.attribute("never-extractable") == "false");
  CHECK(d.attribute("local") == "false");
  CHECK_FALSE(d.attribute("no-such-attribute"));
  REQUIRE(d.public_key);
  CHECK(same_public_key(d.public_key.get(), signer->public_key()));

  auto reopened = backend.open(uri);
  check_signer(*reopened, spec);
  CHECK(same_public_key(reopened->public_key(), signer->public_key()));

  // Never overwritten.
  try {
    backend.generate(uri, GenerateOptions{spec});
    FAIL("generate over an existing file succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Conflict);
  }
  auto again = backend.open(uri);
  CHECK(same_public_key(again->public_key(), signer->public_key()));
}

TEST_CASE("tokens: softhsm2 backend conformance", "[tokens][pkcs11]") {
  const std::string algorithm = GENERATE(from_range(kAlgorithms));
  INFO("backend pkcs11 (SoftHSM2), algorithm " << algorithm);
  const KeySpec spec = KeySpec::parse(algorithm);
  test::SoftHsmToken token;
  auto registry = Registry::with_builtin_backends();
  const std::string uri = token.uri("ca-" + algorithm);
  KeyBackend& backend = registry->backend_for(uri);
  CHECK(backend.scheme() == "pkcs11");
  CHECK_FALSE(backend.exists(uri));

  auto signer = backend.generate(uri, GenerateOptions{spec});
  REQUIRE(signer);
  CHECK(signer->uri() == uri);
  check_signer(*signer, spec);
  CHECK(backend.exists(uri));

  KeyDescription d = backend.describe(uri);
  CHECK(d.backend == "pkcs11");
  CHECK(d.algorithm == algorithm);
  CHECK(d.hardware);
  REQUIRE(d.public_key);
  CHECK(same_public_key(d.public_key.get(), signer->public_key()));
  std::vector<std::string> names;
  for (const auto& a : d.attributes) names.push_back(a.first);
  CHECK(names == std::vector<std::string>{"token", "object", "id", "local", "sensitive", "always-sensitive",
                                          "never-extractable", "extractable", "private", "sign", "decrypt",
                                          "key-value-readable"});
  CHECK(d.attribute("token") == token.label());
  CHECK(d.attribute("object") == "ca-" + algorithm);
  CHECK(d.attribute("id")->size() == 32);  // 16 random bytes, hex
  CHECK(d.attribute("local") == "true");
  CHECK(d.attribute("sensitive") == "true");
  CHECK(d.attribute("always-sensitive") == "true");
  CHECK(d.attribute("never-extractable") == "true");
  CHECK(d.attribute("extractable") == "false");
  CHECK(d.attribute("private") == "true");
  CHECK(d.attribute("sign") == "true");
  CHECK(d.attribute("decrypt") == "false");
  CHECK(d.attribute("key-value-readable") == "false");

  auto reopened = backend.open(uri);
  check_signer(*reopened, spec);
  CHECK(same_public_key(reopened->public_key(), signer->public_key()));

  // A signature made by the first signer verifies with the second's public key and vice versa.
  const std::string data = "cross-check";
  CHECK(verify(reopened->public_key(), digest_for(reopened->public_key()), data, sign(signer->pkey(), data)));
}

TEST_CASE("tokens: softhsm2 signers sign from two threads at once", "[tokens][pkcs11]") {
  test::SoftHsmToken token;
  auto registry = Registry::with_builtin_backends();
  KeyBackend& backend = registry->backend_for(token.uri("x"));
  auto ec = backend.generate(token.uri("threads-ec"), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  auto rsa = backend.generate(token.uri("threads-rsa"), GenerateOptions{KeySpec::parse("rsa-2048")});
  // Keys generated after a signer was opened must not disturb it (libp11 grows its key list).
  auto later = backend.generate(token.uri("threads-later"), GenerateOptions{KeySpec::parse("ecdsa-p384")});
  std::atomic<int> good{0}, bad{0};
  auto work = [&](const Signer* s) {
    for (int i = 0; i < 25; ++i) {
      const std::string data = "message " + std::to_string(i);
      EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
      size_t len = 0;
      std::string sig(1024, '\0');
      len = sig.size();
      bool ok = EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, s->pkey()) == 1 &&
                EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                               reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
      if (ok) {
        sig.resize(len);
        ok = verify(s->public_key(), EVP_sha256(), data, sig);
      }
      (ok ? good : bad)++;
    }
  };
  std::thread t1(work, ec.get()), t2(work, ec.get()), t3(work, rsa.get()), t4(work, rsa.get());
  t1.join();
  t2.join();
  t3.join();
  t4.join();
  CHECK(bad.load() == 0);
  CHECK(good.load() == 100);
  check_signer(*later, KeySpec::parse("ecdsa-p384"));
}
