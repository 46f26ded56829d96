// The PKCS#11 backend against a real SoftHSM2 token: errors, import, init_token.
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "support/softhsm_token.h"
#include "tokens/backend.h"
#include "tokens/pkcs11/ck.h"
#include "tokens/pkcs11/uri.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>

using namespace hwca;
using namespace hwca::tokens;

namespace {

// Runs `f` and returns the hwca::Error it throws (fails the test when it throws none).
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no hwca::Error was thrown");
  return Error(ErrorKind::Internal, "unreachable");
}

std::string signature_check(const Signer& s) {
  EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
  std::string sig(1024, '\0');
  size_t len = sig.size();
  const std::string data = "check";
  if (EVP_DigestSignInit(ctx.get(), nullptr, digest_for(s.pkey()), nullptr, s.pkey()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
    return "sign failed: " + drain_openssl_errors();
  EVP_MD_CTX_ptr vctx(EVP_MD_CTX_new());
  if (EVP_DigestVerifyInit(vctx.get(), nullptr, digest_for(s.public_key()), nullptr, s.public_key()) != 1 ||
      EVP_DigestVerify(vctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), len,
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
    return "verify failed: " + drain_openssl_errors();
  return "ok";
}

}  // namespace

TEST_CASE("tokens: pkcs11 module that does not exist", "[tokens][pkcs11]") {
  auto registry = Registry::with_builtin_backends();
  const std::string uri = "pkcs11:token=a;object=b?module-path=/nonexistent/libnothing.so&pin-source=file:/dev/null";
  Error e = error_of([&] { registry->backend_for(uri).open(uri); });
  CHECK(e.kind() == ErrorKind::NotFound);
  CHECK(std::string(e.what()).rfind("PKCS#11 module /nonexistent/libnothing.so: cannot load (", 0) == 0);
  CHECK(std::string(e.what()).find('\n') == std::string::npos);
}

TEST_CASE("tokens: pkcs11 token that does not exist", "[tokens][pkcs11]") {
  test::SoftHsmToken token("present-token");
  // SoftHSM2 lists tokens as they were at C_Initialize: make the second one before the module loads.
  token.add_token("second-token", "1111", "2222");
  auto registry = Registry::with_builtin_backends();
  const std::string uri = token.uri_for("absent-token", "k", token.pin_file());
  Error e = error_of([&] { registry->backend_for(uri).open(uri); });
  CHECK(e.kind() == ErrorKind::NotFound);
  CHECK(std::string(e.what()) == "no token matches token=absent-token (tokens present: present-token, second-token)");

  // Several tokens match a loose selector.
  const std::string loose = "pkcs11:model=SoftHSM%20v2;object=k?module-path=" + std::string(test::kSoftHsmModule) +
                            "&pin-source=file:" + token.pin_file();
  Error several = error_of([&] { registry->backend_for(loose).open(loose); });
  CHECK(several.kind() == ErrorKind::BadInput);
  CHECK(std::string(several.what()).find("2 tokens match") != std::string::npos);
  CHECK(std::string(several.what()).find("present-token") != std::string::npos);
  CHECK(std::string(several.what()).find("second-token") != std::string::npos);
}

TEST_CASE("tokens: pkcs11 wrong PIN fails once with CKR_PIN_INCORRECT and is not retried", "[tokens][pkcs11][pin]") {
  test::SoftHsmToken token("pin-token");
  // Make a key with the right PIN in a first registry.
  {
    auto registry = Registry::with_builtin_backends();
    registry->backend_for(token.uri("k")).generate(token.uri("k"), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  }
  std::string wrong = token.write_secret("wrong.pin", "00000000\n");
  auto registry = Registry::with_builtin_backends();
  const std::string bad_uri = token.uri_for(token.label(), "k", wrong);
  KeyBackend& backend = registry->backend_for(bad_uri);
  Error e = error_of([&] { backend.open(bad_uri); });
  CHECK(e.kind() == ErrorKind::Token);
  CHECK(std::string(e.what()) == "C_Login failed: CKR_PIN_INCORRECT (token pin-token)");
  CHECK(e.call() == "C_Login");
  CHECK(e.backend_code() == CKR_PIN_INCORRECT);
  CHECK(e.code_name() == "CKR_PIN_INCORRECT");

  // The failure left no half-open login behind: the right PIN works in the same process.
  auto signer = backend.open(token.uri("k"));
  CHECK(signature_check(*signer) == "ok");
}

TEST_CASE("tokens: pkcs11 generate never overwrites a key", "[tokens][pkcs11]") {
  test::SoftHsmToken token("conflict-token");
  auto registry = Registry::with_builtin_backends();
  const std::string uri = token.uri("ca");
  KeyBackend& backend = registry->backend_for(uri);
  auto first = backend.generate(uri, GenerateOptions{KeySpec::parse("ecdsa-p256")});
  std::string first_pub = public_key_der(first->public_key());

  Error e = error_of([&] { backend.generate(uri, GenerateOptions{KeySpec::parse("rsa-2048")}); });
  CHECK(e.kind() == ErrorKind::Conflict);
  CHECK(std::string(e.what()) ==
        "a key labelled 'ca' already exists on token conflict-token; hwca never overwrites keys");

  // The same id under another label is refused too.
  KeyDescription d = backend.describe(uri);
  std::string id_hex = *d.attribute("id");
  std::string id_pct;
  for (size_t i = 0; i < id_hex.size(); i += 2) id_pct += "%" + id_hex.substr(i, 2);
  const std::string same_id = "pkcs11:token=conflict-token;object=other;id=" + id_pct +
                              "?module-path=" + std::string(test::kSoftHsmModule) + "&pin-source=file:" + token.pin_file();
  Error e2 = error_of([&] { backend.generate(same_id, GenerateOptions{KeySpec::parse("ecdsa-p256")}); });
  CHECK(e2.kind() == ErrorKind::Conflict);
  CHECK(std::string(e2.what()).find("id=" + id_hex) != std::string::npos);

  // The first key is intact.
  auto again = backend.open(uri);
  CHECK(public_key_der(again->public_key()) == first_pub);
  CHECK(KeySpec::of(again->public_key()).name() == "ecdsa-p256");
  CHECK(signature_check(*again) == "ok");

  // generate needs a label or id.
  const std::string no_object = token.token_uri();
  Error e3 = error_of([&] { backend.generate(no_object, GenerateOptions{KeySpec::parse("ecdsa-p256")}); });
  CHECK(e3.kind() == ErrorKind::BadInput);
}

TEST_CASE("tokens: pkcs11 open errors for no key or two keys with one label", "[tokens][pkcs11]") {
  test::SoftHsmToken token("dup-token");
  // Two key pairs under one label, made with pkcs11-tool (which does not refuse duplicates).
  std::string out;
  REQUIRE(token.pkcs11_tool({"--keypairgen", "--key-type", "EC:prime256v1", "--label", "dup", "--id", "01"}, &out) == 0);
  REQUIRE(token.pkcs11_tool({"--keypairgen", "--key-type", "EC:prime256v1", "--label", "dup", "--id", "02"}, &out) == 0);

  auto registry = Registry::with_builtin_backends();
  KeyBackend& backend = registry->backend_for(token.uri("dup"));

  Error none = error_of([&] { backend.open(token.uri("absent")); });
  CHECK(none.kind() == ErrorKind::NotFound);
  CHECK(std::string(none.what()) == "no private key matches object=absent on token dup-token");
  CHECK_FALSE(backend.exists(token.uri("absent")));

  Error two = error_of([&] { backend.open(token.uri("dup")); });
  CHECK(two.kind() == ErrorKind::BadInput);
  CHECK(std::string(two.what()) == "2 keys match object=dup on token dup-token; add id=... to the URI");
  CHECK_THROWS_AS(backend.exists(token.uri("dup")), Error);
  CHECK_THROWS_AS(backend.describe(token.uri("dup")), Error);

  // Adding the id picks one.
  const std::string with_id = "pkcs11:token=dup-token;object=dup;id=%02?module-path=" +
                              std::string(test::kSoftHsmModule) + "&pin-source=file:" + token.pin_file();
  auto signer = backend.open(with_id);
  CHECK(signature_check(*signer) == "ok");
  CHECK(backend.describe(with_id).attribute("id") == "02");
  CHECK(backend.exists(with_id));

  // type=cert is not something hwca opens.
  const std::string cert = "pkcs11:token=dup-token;object=dup;type=cert?module-path=" +
                           std::string(test::kSoftHsmModule) + "&pin-source=file:" + token.pin_file();
  CHECK(error_of([&] { backend.open(cert); }).kind() == ErrorKind::BadInput);
}

TEST_CASE("tokens: pkcs11 import of a software key", "[tokens][pkcs11]") {
  const std::string algorithm = GENERATE(as<std::string>{}, "ecdsa-p256", "ecdsa-p384", "rsa-2048");
  INFO("algorithm " << algorithm);
  test::SoftHsmToken token("import-token");
  auto registry = Registry::with_builtin_backends();
  const std::string uri = token.uri("imported");
  auto* importer = dynamic_cast<KeyImporter*>(&registry->backend_for(uri));
  REQUIRE(importer);
  EVP_PKEY_ptr software = generate_software_key(KeySpec::parse(algorithm));
  auto signer = importer->import_key(uri, software.get());
  REQUIRE(signer);
  CHECK(same_public_key(signer->public_key(), software.get()));
  CHECK(signature_check(*signer) == "ok");

  KeyDescription d = registry->backend_for(uri).describe(uri);
  CHECK(d.algorithm == algorithm);
  CHECK(d.hardware);
  CHECK(d.attribute("sensitive") == "true");
  CHECK(d.attribute("never-extractable") == "false");
  CHECK(d.attribute("always-sensitive") == "false");
  CHECK(d.attribute("local") == "false");
  CHECK(d.attribute("extractable") == "false");
  CHECK(d.attribute("key-value-readable") == "false");
  CHECK(d.attribute("decrypt") == "false");

  // Importing over it is refused.
  Error e = error_of([&] { importer->import_key(uri, software.get()); });
  CHECK(e.kind() == ErrorKind::Conflict);
  // A reopened signer signs for the imported public key.
  auto reopened = registry->backend_for(uri).open(uri);
  CHECK(same_public_key(reopened->public_key(), software.get()));
  CHECK(signature_check(*reopened) == "ok");
}

TEST_CASE("tokens: pkcs11 init_token initialises a fresh token", "[tokens][pkcs11]") {
  test::SoftHsmToken store("");  // no token yet; the user PIN file is ready
  auto registry = Registry::with_builtin_backends();
  const std::string token_uri = store.token_uri();
  auto* init = dynamic_cast<TokenInitializer*>(&registry->backend_for(token_uri));
  REQUIRE(init);
  init->init_token(token_uri, store.so_pin());

  // Initialising the same label again is a conflict.
  Error e = error_of([&] { init->init_token(token_uri, store.so_pin()); });
  CHECK(e.kind() == ErrorKind::Conflict);

  // The user PIN works: generate and sign.
  const std::string key = store.uri("root-ca");
  auto signer = registry->backend_for(key).generate(key, GenerateOptions{KeySpec::parse("ecdsa-p384")});
  CHECK(signature_check(*signer) == "ok");
  CHECK(registry->backend_for(key).describe(key).attribute("token") == store.label());

  // A second token after libp11 is loaded: found through a fresh libp11 slot list.
  const std::string second = store.uri_for("second", "", store.pin_file());
  init->init_token(second, "87654321");
  const std::string key2 = store.uri_for("second", "k2", store.pin_file());
  auto signer2 = registry->backend_for(key2).generate(key2, GenerateOptions{KeySpec::parse("rsa-2048")});
  CHECK(signature_check(*signer2) == "ok");
  CHECK(signature_check(*signer) == "ok");
}

TEST_CASE("tokens: signers from two registries share one module", "[tokens][pkcs11]") {
  test::SoftHsmToken token("shared-token");
  auto a = Registry::with_builtin_backends();
  auto b = Registry::with_builtin_backends();
  auto s1 = a->backend_for(token.uri("one")).generate(token.uri("one"), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  auto s2 = b->backend_for(token.uri("one")).open(token.uri("one"));
  CHECK(signature_check(*s1) == "ok");
  CHECK(signature_check(*s2) == "ok");
  // Signers keep their module alive: destroying a registry first must not break them.
  a.reset();
  CHECK(signature_check(*s1) == "ok");
  s1.reset();
  CHECK(signature_check(*s2) == "ok");
}

TEST_CASE("tokens: pkcs11 module is initialised and finalised exactly once", "[tokens][pkcs11]") {
  // OpenSC's pkcs11-spy logs every call it forwards to the real module.
  const std::string spy = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";
  // opensc-pkcs11 (installed by scripts/install.sh) ships it; its absence is a failure, not a skip.
  REQUIRE(std::ifstream(spy).good());
  test::SoftHsmToken token("spy-token");
  const std::string log = token.file("spy.log");
  ::setenv("PKCS11SPY", test::kSoftHsmModule, 1);
  ::setenv("PKCS11SPY_OUTPUT", log.c_str(), 1);
  const std::string uri = "pkcs11:token=spy-token;object=k?module-path=" + spy + "&pin-source=file:" + token.pin_file();
  {
    auto registry = Registry::with_builtin_backends();
    KeyBackend& backend = registry->backend_for(uri);
    auto signer = backend.generate(uri, GenerateOptions{KeySpec::parse("ecdsa-p256")});
    CHECK(signature_check(*signer) == "ok");
    CHECK(backend.describe(uri).attribute("sensitive") == "true");
    auto reopened = backend.open(uri);
    CHECK(signature_check(*reopened) == "ok");
  }
  ::unsetenv("PKCS11SPY");
  ::unsetenv("PKCS11SPY_OUTPUT");
  std::string text = read_file(log);
  auto count = [&text](const std::string& call) {
    size_t n = 0;
    for (size_t pos = text.find(call + "\n"); pos != std::string::npos; pos = text.find(call + "\n", pos + 1))
      if (pos > 0 && text[pos - 1] == ' ') ++n;
    return n;
  };
  CHECK(count("C_Login") == 1);
  CHECK(count("C_Finalize") == 1);
  CHECK(text.rfind("C_Finalize") > text.rfind("C_Sign"));
}
