// The same conformance checks against every key backend: the software (file:) backend and SoftHSM2, for
// every algorithm: generate, describe, sign with EVP_DigestSign and X509_sign, verify with OpenSSL.
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "support/softhsm_token.h"
#include "tokens/backend.h"

#include "support/signer_checks.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <sys/stat.h>
#include <thread>

using namespace hwca;
using namespace hwca::tokens;

namespace {

const std::vector<std::string> kAlgorithms = {"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"};


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
  test::check_signer(*signer, spec);

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
  test::check_signer(*reopened, spec);
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
  test::check_signer(*signer, spec);
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
  test::check_signer(*reopened, spec);
  CHECK(same_public_key(reopened->public_key(), signer->public_key()));

  // A signature made by the first signer verifies with the second's public key and vice versa.
  const std::string data = "cross-check";
  CHECK(test::verify_data(reopened->public_key(), digest_for(reopened->public_key()), data, test::sign_data(signer->pkey(), data)));
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
        ok = test::verify_data(s->public_key(), EVP_sha256(), data, sig);
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
  test::check_signer(*later, KeySpec::parse("ecdsa-p384"));
}
