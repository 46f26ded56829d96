// The tpm2: backend against a real TPM 2.0 simulator (swtpm, one per test process): the conformance
// checks of tokens_conformance.cpp for every algorithm the TPM supports, in both forms (persistent
// handle and TSS2 PRIVATE KEY blob), the attributes read back from the TPM, and the failure cases
// (occupied handle, existing file, wrong auth value, a blob from another TPM, swtpm killed and
// restarted, an algorithm the TPM does not support), plus interop with tpm2-openssl.
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/base/signing_run.h"
#include "support/softhsm_token.h"
#include "support/swtpm.h"
#include "tokens/backend.h"
#include "tokens/tpm2/esys.h"

#include "support/signer_checks.h"

#include <catch2/catch.hpp>

#include <openssl/pem.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <cstdlib>
#include <sys/stat.h>
#include <thread>

using namespace hwca;
using namespace hwca::tokens;

namespace {

const std::vector<std::string> kTpmAlgorithms = {"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"};


void check_tpm_attributes(const KeyDescription& d) {
  CHECK(d.backend == "tpm2");
  CHECK(d.hardware);
  CHECK(d.attribute("fixedTPM") == "true");
  CHECK(d.attribute("fixedParent") == "true");
  CHECK(d.attribute("sensitiveDataOrigin") == "true");
  CHECK(d.attribute("userWithAuth") == "true");
  CHECK(d.attribute("sign") == "true");
  CHECK(d.attribute("decrypt") == "false");
  CHECK(d.attribute("restricted") == "false");
}

template <typename F>
Error expect_error(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no hwca::Error was thrown");
  return Error(ErrorKind::Internal, "unreachable");
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string hex(std::uint32_t handle) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", handle);
  return buf;
}

std::uint32_t handle_for(const std::string& algorithm) {
  static const std::map<std::string, std::uint32_t> handles = {
      {"ecdsa-p256", 0x81000100}, {"ecdsa-p384", 0x81000101}, {"rsa-2048", 0x81000102}, {"rsa-3072", 0x81000103}};
  return handles.at(algorithm);
}

// ESAPI's own error lines off, as the tpm2 backend has them (TSS2_LOG set by the user wins): the
// connection tests below make ESAPI refuse calls on purpose.
void quiet_esapi() { ::setenv("TSS2_LOG", "all+NONE", 0); }

// Eight random bytes from the TPM (a command that changes nothing); returns how many came back.
size_t random_bytes(ESYS_CONTEXT* ctx) {
  TPM2B_DIGEST* bytes = nullptr;
  TSS2_RC rc = Esys_GetRandom(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 8, &bytes);
  if (rc != TSS2_RC_SUCCESS) tokens::tpm2::throw_rc(ErrorKind::Token, "Esys_GetRandom", rc);
  size_t n = bytes->size;
  Esys_Free(bytes);
  return n;
}

}  // namespace

TEST_CASE("tokens: tpm2 persistent-handle keys on swtpm (conformance)", "[tokens][tpm2]") {
  const std::string algorithm = GENERATE(from_range(kTpmAlgorithms));
  INFO("tpm2 handle=, algorithm " << algorithm);
  const KeySpec spec = KeySpec::parse(algorithm);
  test::Swtpm tpm;
  const std::string auth = tpm.write_secret("auth", "tpm-key-auth\n");
  auto registry = Registry::with_builtin_backends();
  const std::string uri = tpm.handle_uri(handle_for(algorithm), auth);
  KeyBackend& backend = registry->backend_for(uri);
  CHECK(backend.scheme() == "tpm2");
  CHECK_FALSE(backend.exists(uri));

  auto signer = backend.generate(uri, GenerateOptions{spec});
  REQUIRE(signer);
  CHECK(signer->uri() == uri);
  test::check_signer(*signer, spec);
  CHECK(backend.exists(uri));

  KeyDescription d = backend.describe(uri);
  CHECK(d.algorithm == algorithm);
  check_tpm_attributes(d);
  CHECK(d.attribute("handle") == hex(handle_for(algorithm)));
  REQUIRE(d.public_key);
  CHECK(same_public_key(d.public_key.get(), signer->public_key()));

  auto reopened = backend.open(uri);
  test::check_signer(*reopened, spec);
  CHECK(same_public_key(reopened->public_key(), signer->public_key()));
  const std::string data = "cross-check";
  CHECK(test::verify_data(reopened->public_key(), digest_for(reopened->public_key()), data, test::sign_data(signer->pkey(), data)));

  // The handle is occupied now: never overwritten, and the message says how to free it.
  Error e = expect_error([&] { backend.generate(uri, GenerateOptions{spec}); });
  CHECK(e.kind() == ErrorKind::Conflict);
  CHECK(contains(e.what(), hex(handle_for(algorithm))));
  CHECK(contains(e.what(), "tpm2_evictcontrol"));
  auto again = backend.open(uri);
  CHECK(same_public_key(again->public_key(), signer->public_key()));
}

TEST_CASE("tokens: tpm2 TSS2 PRIVATE KEY blobs on swtpm (conformance)", "[tokens][tpm2]") {
  const std::string algorithm = GENERATE(from_range(kTpmAlgorithms));
  INFO("tpm2 file=, algorithm " << algorithm);
  const KeySpec spec = KeySpec::parse(algorithm);
  test::Swtpm tpm;
  auto registry = Registry::with_builtin_backends();
  const std::string path = tpm.file(algorithm + ".tss2.pem");
  const std::string uri = tpm.file_uri(path);
  KeyBackend& backend = registry->backend_for(uri);
  CHECK_FALSE(backend.exists(uri));

  auto signer = backend.generate(uri, GenerateOptions{spec});
  REQUIRE(signer);
  test::check_signer(*signer, spec);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(contains(read_file(path), "-----BEGIN TSS2 PRIVATE KEY-----"));
  CHECK(backend.exists(uri));

  KeyDescription d = backend.describe(uri);
  CHECK(d.algorithm == algorithm);
  check_tpm_attributes(d);
  CHECK(d.attribute("file") == path);
  CHECK(d.attribute("parent") == "0x40000001 (owner hierarchy primary)");
  CHECK(d.attribute("empty-auth") == "true");
  REQUIRE(d.public_key);
  CHECK(same_public_key(d.public_key.get(), signer->public_key()));

  auto reopened = backend.open(uri);
  test::check_signer(*reopened, spec);
  CHECK(same_public_key(reopened->public_key(), signer->public_key()));

  // Never overwritten.
  const std::string before = read_file(path);
  Error e = expect_error([&] { backend.generate(uri, GenerateOptions{spec}); });
  CHECK(e.kind() == ErrorKind::Conflict);
  CHECK(read_file(path) == before);
}

TEST_CASE("tokens: tpm2 keys with an auth value - a wrong one is refused once, clearly", "[tokens][tpm2]") {
  test::Swtpm tpm;
  const std::string auth = tpm.write_secret("auth", "right-auth\n");
  const std::string wrong = tpm.write_secret("wrong", "wrong-auth\n");
  auto registry = Registry::with_builtin_backends();
  const std::string path = tpm.file("authed.tss2.pem");
  KeyBackend& backend = registry->backend_for(tpm.file_uri(path, auth));

  auto signer = backend.generate(tpm.file_uri(path, auth), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  test::check_signer(*signer, KeySpec::parse("ecdsa-p256"));
  CHECK(backend.describe(tpm.file_uri(path, auth)).attribute("empty-auth") == "false");
  test::check_signer(*backend.open(tpm.file_uri(path, auth)), KeySpec::parse("ecdsa-p256"));

  // No pin-source for a key that has an auth value: refused before the TPM is asked (no lockout count).
  Error missing = expect_error([&] { backend.open(tpm.file_uri(path)); });
  CHECK(missing.kind() == ErrorKind::BadInput);
  CHECK(contains(missing.what(), "pin-source"));

  // A wrong auth value: one TPM attempt (the check signature in open), the failing call and its code.
  Error e = expect_error([&] { backend.open(tpm.file_uri(path, wrong)); });
  CHECK(e.kind() == ErrorKind::Token);
  CHECK(e.call() == "Esys_Sign");
  CHECK((e.backend_code() & 0xbf) == 0x8e);  // TPM_RC_AUTH_FAIL (session 1)
  CHECK(contains(e.what(), "Esys_Sign failed: 0x0000098e"));
  CHECK(contains(e.what(), "wrong auth value"));
  CHECK(contains(e.what(), "not retried"));

  // The same for a persistent key; the right value still works afterwards (one failure is below the
  // TPM's dictionary-attack threshold).
  const std::string handle_uri = tpm.handle_uri(0x81000110, auth);
  backend.generate(handle_uri, GenerateOptions{KeySpec::parse("rsa-2048")});
  Error e2 = expect_error([&] { backend.open(tpm.handle_uri(0x81000110, wrong)); });
  CHECK(e2.kind() == ErrorKind::Token);
  CHECK(contains(e2.what(), "wrong auth value for TPM handle 0x81000110"));
  test::check_signer(*backend.open(handle_uri), KeySpec::parse("rsa-2048"));
}

TEST_CASE("tokens: tpm2 reports what the TPM does not support, and bad URIs", "[tokens][tpm2]") {
  test::Swtpm tpm;
  auto registry = Registry::with_builtin_backends();
  KeyBackend& backend = registry->backend_for("tpm2:handle=0x81000100");
  // swtpm 0.7 (libtpms) has no RSA-4096.
  const std::string path = tpm.file("big.tss2.pem");
  Error e = expect_error([&] { backend.generate(tpm.file_uri(path), GenerateOptions{KeySpec::parse("rsa-4096")}); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(contains(e.what(), "the TPM does not support rsa-4096"));
  CHECK(contains(e.what(), "Esys_TestParms"));
  struct stat st {};
  CHECK(::stat(path.c_str(), &st) != 0);  // nothing written

  for (const std::string bad : {"tpm2:", "tpm2:handle=0x1234", "tpm2:handle=zz", "tpm2:file=", "tpm2:file=/a;handle=0x81000001",
                                "tpm2:handle=0x81000100?pin-value=1234", "tpm2:handle=0x81000100?colour=red",
                                "tpm2:file=/x%4"}) {
    INFO(bad);
    Error b = expect_error([&] { backend.describe(bad); });
    CHECK(b.kind() == ErrorKind::BadInput);
    CHECK(contains(b.what(), "invalid tpm2: key URI"));
    if (contains(bad, "pin-value")) CHECK_FALSE(contains(b.what(), "1234"));
  }

  // A key file that is not a TSS2 PRIVATE KEY.
  const std::string cert = tpm.write_secret("not-a-key.pem", "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n");
  Error c = expect_error([&] { backend.open(tpm.file_uri(cert)); });
  CHECK(c.kind() == ErrorKind::BadInput);
  CHECK(contains(c.what(), "not a TSS2 PRIVATE KEY"));
  // Nothing at the handle.
  Error n = expect_error([&] { backend.open(tpm.handle_uri(0x81000177)); });
  CHECK(n.kind() == ErrorKind::NotFound);
  CHECK(contains(n.what(), "no key at TPM handle 0x81000177"));
  // No TPM there.
  Error t = expect_error([&] { backend.open("tpm2:handle=0x81000100?tcti=swtpm:host=127.0.0.1,port=1"); });
  CHECK(t.kind() == ErrorKind::Token);
  CHECK(contains(t.what(), "Tss2_TctiLdr_Initialize failed: 0x000a000a"));
}

TEST_CASE("tokens: tpm2 refuses a blob made by another TPM", "[tokens][tpm2]") {
  test::Swtpm first;
  test::Swtpm second;
  auto registry = Registry::with_builtin_backends();
  const std::string path = first.file("first.tss2.pem");
  KeyBackend& backend = registry->backend_for(first.file_uri(path));
  backend.generate(first.file_uri(path), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  Error e = expect_error([&] { backend.open(second.file_uri(path)); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(e.call() == "Esys_Load");
  CHECK(contains(e.what(), "this TPM cannot load key file " + path));
  CHECK(contains(e.what(), "another TPM"));
  Error d = expect_error([&] { backend.describe(second.file_uri(path)); });
  CHECK(d.kind() == ErrorKind::BadInput);
  // Still fine on its own TPM.
  test::check_signer(*backend.open(first.file_uri(path)), KeySpec::parse("ecdsa-p256"));
}

TEST_CASE("tokens: tpm2 signer survives a swtpm restart and fails clearly while it is down", "[tokens][tpm2]") {
  test::Swtpm tpm;
  auto registry = Registry::with_builtin_backends();
  const std::string file_uri = tpm.file_uri(tpm.file("k.tss2.pem"));
  const std::string handle_uri = tpm.handle_uri(0x81000120);
  KeyBackend& backend = registry->backend_for(file_uri);
  auto blob_signer = backend.generate(file_uri, GenerateOptions{KeySpec::parse("ecdsa-p256")});
  auto handle_signer = backend.generate(handle_uri, GenerateOptions{KeySpec::parse("ecdsa-p384")});
  test::check_signer(*blob_signer, KeySpec::parse("ecdsa-p256"));

  tpm.kill_now();
  // While swtpm is down: signing fails (one reconnect is tried), with the TSS2 call in OpenSSL's queue.
  EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
  REQUIRE(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, blob_signer->pkey()) == 1);
  std::string sig(256, '\0');
  size_t len = sig.size();
  const std::string data = "while down";
  CHECK(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1);
  std::string queue = drain_openssl_errors();
  INFO(queue);
  CHECK(contains(queue, "hwca tpm2"));
  CHECK(contains(queue, "0x000a000a"));
  Error e = expect_error([&] { backend.open(file_uri); });
  CHECK(e.kind() == ErrorKind::Token);

  // Back up (same state, same ports): the open signers reconnect and go on; the persistent key is still there.
  tpm.restart();
  test::check_signer(*blob_signer, KeySpec::parse("ecdsa-p256"));
  test::check_signer(*handle_signer, KeySpec::parse("ecdsa-p384"));
  CHECK(backend.exists(handle_uri));
}

TEST_CASE("tokens: tpm2 signs many times in a row and from several threads without exhausting the TPM", "[tokens][tpm2]") {
  test::Swtpm tpm;
  auto registry = Registry::with_builtin_backends();
  KeyBackend& backend = registry->backend_for("tpm2:handle=0x81000100");
  // Four open keys at once: more than swtpm's three transient slots, so nothing may stay loaded.
  auto a = backend.generate(tpm.file_uri(tpm.file("a.tss2.pem")), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  auto b = backend.generate(tpm.file_uri(tpm.file("b.tss2.pem")), GenerateOptions{KeySpec::parse("rsa-2048")});
  auto c = backend.generate(tpm.handle_uri(0x81000130), GenerateOptions{KeySpec::parse("ecdsa-p384")});
  auto d = backend.open(tpm.file_uri(tpm.file("a.tss2.pem")));
  std::atomic<int> good{0}, bad{0};
  auto work = [&](const Signer* s, int rounds) {
    for (int i = 0; i < rounds; ++i) {
      const std::string data = "message " + std::to_string(i);
      EVP_MD_CTX_ptr ctx(EVP_MD_CTX_new());
      std::string sig(1024, '\0');
      size_t len = sig.size();
      const EVP_MD* md = digest_for(s->public_key());
      bool ok = EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, s->pkey()) == 1 &&
                EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                               reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
      if (ok) {
        sig.resize(len);
        ok = test::verify_data(s->public_key(), md, data, sig);
      }
      (ok ? good : bad)++;
    }
  };
  work(a.get(), 300);
  CHECK(bad.load() == 0);
  std::thread t1(work, a.get(), 25), t2(work, b.get(), 25), t3(work, c.get(), 25), t4(work, d.get(), 25);
  t1.join();
  t2.join();
  t3.join();
  t4.join();
  CHECK(bad.load() == 0);
  CHECK(good.load() == 400);
  drain_openssl_errors();
}

TEST_CASE("tokens: tpm2 blobs interoperate with tpm2-openssl", "[tokens][tpm2]") {
  test::Swtpm tpm;
  auto registry = Registry::with_builtin_backends();
  // tpm2-openssl takes its TCTI from the environment.
  ::setenv("TPM2OPENSSL_TCTI", tpm.tcti().c_str(), 1);
  ::setenv("TSS2_LOG", "all+NONE", 1);

  for (const std::string algorithm : {"ecdsa-p256", "rsa-2048"}) {
    INFO(algorithm);
    // hwca -> tpm2-openssl: the same public key.
    const std::string ours = tpm.file(algorithm + "-hwca.tss2.pem");
    KeyBackend& backend = registry->backend_for(tpm.file_uri(ours));
    auto signer = backend.generate(tpm.file_uri(ours), GenerateOptions{KeySpec::parse(algorithm)});
    std::string out;
    const std::string pub = tpm.file(algorithm + "-pub.pem");
    REQUIRE(test::run_program({"openssl", "pkey", "-provider", "tpm2", "-provider", "default", "-in", ours, "-pubout",
                               "-out", pub},
                              &out) == 0);
    EVP_PKEY_ptr theirs(nullptr);
    {
      std::string pem = read_file(pub);
      BIO_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
      theirs.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    }
    REQUIRE(theirs);
    CHECK(same_public_key(theirs.get(), signer->public_key()));

    // tpm2-openssl signs with our blob, and the signature verifies with hwca's public key.
    const std::string msg = tpm.write_secret(algorithm + ".msg", "signed by tpm2-openssl");
    const std::string sig = tpm.file(algorithm + ".sig");
    // (pkeyutl, not `dgst -sign`: dgst hands tpm2-openssl's key to the default provider's ECDSA.)
    REQUIRE(test::run_program({"openssl", "pkeyutl", "-provider", "tpm2", "-provider", "default", "-sign", "-rawin",
                               "-digest", "sha256", "-inkey", ours, "-in", msg, "-out", sig},
                              &out) == 0);
    CHECK(test::verify_data(signer->public_key(), EVP_sha256(), "signed by tpm2-openssl", read_file(sig)));

    // tpm2-openssl -> hwca: a key made by `openssl genpkey -provider tpm2` opens and signs.
    const std::string made = tpm.file(algorithm + "-tpm2-openssl.tss2.pem");
    std::vector<std::string> genpkey = {"openssl", "genpkey", "-provider", "tpm2", "-provider", "default", "-out", made};
    if (algorithm == "rsa-2048") {
      genpkey.insert(genpkey.end(), {"-algorithm", "RSA", "-pkeyopt", "bits:2048"});
    } else {
      genpkey.insert(genpkey.end(), {"-algorithm", "EC", "-pkeyopt", "group:P-256"});
    }
    REQUIRE(test::run_program(genpkey, &out) == 0);
    INFO(out);
    CHECK(contains(read_file(made), "-----BEGIN TSS2 PRIVATE KEY-----"));
    auto opened = backend.open(tpm.file_uri(made));
    test::check_signer(*opened, KeySpec::parse(algorithm));
    KeyDescription d = backend.describe(tpm.file_uri(made));
    CHECK(d.attribute("sign") == "true");
    CHECK(d.attribute("fixedTPM") == "true");
  }
  ::unsetenv("TPM2OPENSSL_TCTI");
}

TEST_CASE("tokens: tpm2 TCTI comes from the URI, else HWCA_TCTI, TPM2TSS_TCTI, TPM2OPENSSL_TCTI", "[tokens][tpm2]") {
  test::Swtpm tpm;
  auto registry = Registry::with_builtin_backends();
  const std::string path = tpm.file("env.tss2.pem");
  KeyBackend& backend = registry->backend_for(tpm.file_uri(path));
  backend.generate(tpm.file_uri(path), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  const std::string bare = "tpm2:file=" + path;  // no tcti= in the URI
  const std::string nowhere = "swtpm:host=127.0.0.1,port=1";
  for (const char* var : {"HWCA_TCTI", "TPM2TSS_TCTI", "TPM2OPENSSL_TCTI"}) ::unsetenv(var);

  for (const char* var : {"TPM2OPENSSL_TCTI", "TPM2TSS_TCTI", "HWCA_TCTI"}) {
    INFO(var);
    ::setenv(var, tpm.tcti().c_str(), 1);  // the most specific variable set so far points at our swtpm
    CHECK(backend.describe(bare).attribute("tcti") == tpm.tcti());
    test::check_signer(*backend.open(bare), KeySpec::parse("ecdsa-p256"));
  }
  // HWCA_TCTI wins over the other two; the URI wins over all of them.
  ::setenv("TPM2TSS_TCTI", nowhere.c_str(), 1);
  ::setenv("TPM2OPENSSL_TCTI", nowhere.c_str(), 1);
  CHECK(backend.describe(bare).attribute("tcti") == tpm.tcti());
  ::setenv("HWCA_TCTI", nowhere.c_str(), 1);
  CHECK(backend.describe(tpm.file_uri(path)).attribute("tcti") == tpm.tcti());
  Error e = expect_error([&] { backend.describe(bare); });
  CHECK(e.kind() == ErrorKind::Token);
  CHECK(contains(e.what(), "'" + nowhere + "'"));
  for (const char* var : {"HWCA_TCTI", "TPM2TSS_TCTI", "TPM2OPENSSL_TCTI"}) ::unsetenv(var);
}

TEST_CASE("tokens: tpm2 connection - a context left half-way by a broken command is replaced, not reused", "[tokens][tpm2]") {
  // A command that ends half-way (the link broke between sending and answering) leaves the ESYS context
  // in a state where every later call is refused with ESAPI's BAD_SEQUENCE. The connection must drop that
  // context and make a new one, as it does for a broken link; it used to keep it, so every later
  // operation on the connection failed. Made here with an asynchronous call whose answer is never read.
  quiet_esapi();
  test::Swtpm tpm;
  tokens::tpm2::Connection connection(tpm.tcti());
  // Half-way: sent, never finished.
  auto leave_half_way = [&connection] {
    connection.run(
        [](ESYS_CONTEXT* ctx) {
          REQUIRE(Esys_GetRandom_Async(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 8) == TSS2_RC_SUCCESS);
          return 0;
        },
        false);
  };
  CHECK(connection.run(random_bytes, true) == 8);
  leave_half_way();
  // The same call on that context is refused locally (nothing is sent)...
  TSS2_RC refused = connection.run(
      [](ESYS_CONTEXT* ctx) { return Esys_GetRandom_Async(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 8); }, false);
  CHECK(tokens::tpm2::is_unusable_context(refused));
  CHECK(tokens::tpm2::rc_text(refused).find("wrong order") != std::string::npos);
  // ...and an operation that fails so is run again on a new context.
  CHECK(connection.run(random_bytes, true) == 8);
  CHECK(connection.run(random_bytes, true) == 8);
  // Without a retry, the refusal is the caller's error, and the connection is usable afterwards.
  leave_half_way();
  Error e = expect_error([&] { connection.run(random_bytes, false); });
  CHECK(contains(e.what(), "Esys_GetRandom"));
  CHECK(contains(e.what(), "ended half-way"));
  CHECK(connection.run(random_bytes, false) == 8);
}

TEST_CASE("tokens: tpm2 connection - a signing run keeps the TPM for its thread until the run ends", "[tokens][tpm2]") {
  // Issuer::issue_batch signs a batch inside a SigningRun: the connection's lock stays with that thread
  // from its first operation to the end of the run, so another thread's operation waits for the run,
  // and the thread itself goes on without waiting for itself. Outside a run nothing is kept.
  quiet_esapi();
  test::Swtpm tpm;
  tokens::tpm2::Connection connection(tpm.tcti());
  std::atomic<int> other_state{0};  // 1: started its operation, 2: finished it
  std::atomic<bool> run_ended{false};
  bool other_finished_after_the_run = false;
  size_t other_bytes = 0;
  std::thread other;
  {
    SigningRun run;
    CHECK(connection.run(random_bytes, true) == 8);  // kept from here
    other = std::thread([&] {
      other_state = 1;
      try {
        other_bytes = connection.run(random_bytes, true);
      } catch (...) {
      }
      other_finished_after_the_run = run_ended.load();
      other_state = 2;
    });
    for (int i = 0; i < 1000 && other_state.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(other_state.load() == 1);  // still waiting for the TPM
    for (int i = 0; i < 3; ++i) CHECK(connection.run(random_bytes, true) == 8);
    {
      SigningRun nested;  // runs nest: the inner one's end releases nothing
      CHECK(connection.run(random_bytes, true) == 8);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(other_state.load() == 1);
    run_ended = true;
  }
  other.join();
  CHECK(other_state.load() == 2);
  CHECK(other_bytes == 8);
  CHECK(other_finished_after_the_run);
  // No run open: each operation gives the lock back, so a second thread gets the TPM.
  CHECK(connection.run(random_bytes, true) == 8);
  size_t later = 0;
  std::thread after([&] { later = connection.run(random_bytes, true); });
  after.join();
  CHECK(later == 8);
  // A run whose operation fails still gives the TPM back at its end.
  {
    SigningRun run;
    Error e = expect_error([&] {
      connection.run([](ESYS_CONTEXT*) -> int { throw Error(ErrorKind::Token, "refused on purpose"); }, true);
    });
    CHECK(contains(e.what(), "refused on purpose"));
  }
  std::thread after_failure([&] { later = connection.run(random_bytes, true); });
  after_failure.join();
  CHECK(later == 8);
}
