// Custody of TPM keys (tokens::KeyAuthChanger on the tpm2: backend) against a real swtpm: the auth value
// of a TSS2 PRIVATE KEY blob and of a persistent key is changed with Esys_ObjectChangeAuth; the new value
// opens the key and signs, the old one does not (except an older copy of a blob, as docs/ceremony.md
// warns); a persistent key keeps its handle; an interrupted split (the states a crash between the steps
// leaves, made here with the same TPM commands) is reported and finished by resume_key_auth_change.
// Each swtpm sees at most two wrong auth values: its dictionary-attack lockout starts at three.
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "support/signer_checks.h"
#include "support/swtpm.h"
#include "tokens/backend.h"
#include "tokens/pin.h"
#include "tokens/tpm2/esys.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <string>
#include <sys/stat.h>

using namespace hwca;
using namespace hwca::tokens;

namespace {

const std::string kNewAuth = "Zq8rT2wLx9VbN4mK7pS1dF6gH3jC5aE0";  // 32 characters, as custody split makes them

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

KeyAuthChanger& changer_for(Registry& registry, const std::string& uri) {
  auto* changer = dynamic_cast<KeyAuthChanger*>(&registry.backend_for(uri));
  REQUIRE(changer);
  return *changer;
}

// The process-wide override (what --pin-shares sets), cleared at the end of a scope.
struct Override {
  explicit Override(const std::string& secret) { set_pin_override(secret.data(), secret.size()); }
  ~Override() { clear_pin_override(); }
  Override(const Override&) = delete;
  Override& operator=(const Override&) = delete;
};

void copy_file(const std::string& from, const std::string& to) {
  std::string data = read_file(from);
  std::FILE* f = std::fopen(to.c_str(), "wb");
  REQUIRE(f);
  REQUIRE(std::fwrite(data.data(), 1, data.size(), f) == data.size());
  REQUIRE(std::fclose(f) == 0);
}

// What a custody split that died after step 1 leaves: the key also at `staging` with `new_auth`
// (ObjectChangeAuth, load, EvictControl), and, when `free_handle`, the key at `handle` freed (died after
// step 2). Made with the same ESAPI calls the backend uses, on the backend's own kind of connection.
void leave_interrupted_split(const test::Swtpm& tpm, std::uint32_t handle, std::uint32_t staging, const std::string& old_auth,
                             const std::string& new_auth, bool free_handle) {
  tpm2::Connection conn(tpm.tcti());
  conn.run(
      [&](ESYS_CONTEXT* ctx) {
        tpm2::Object key = tpm2::open_persistent(ctx, handle, "the key");
        tpm2::set_auth(ctx, key, old_auth);
        tpm2::Object parent = tpm2::storage_parent(ctx, tpm2::default_parent(ctx));
        tpm2::KeyBlob blob;
        blob.pub = tpm2::read_public(ctx, key);
        blob.priv = tpm2::change_auth(ctx, key, parent, new_auth, "the key");
        {
          tpm2::Object loaded = tpm2::load_key(ctx, parent, blob, "the new blob");
          tpm2::make_persistent(ctx, loaded, staging);
        }
        if (free_handle) tpm2::evict_persistent(ctx, key, handle);
      },
      false);
}

}  // namespace

TEST_CASE("tokens: tpm2 custody - a blob gets a new auth value in place, an older copy keeps the old one", "[tokens][tpm2][custody]") {
  test::Swtpm tpm;
  const std::string old_auth = tpm.write_secret("old", "old-auth-value\n");
  const std::string new_auth_file = tpm.write_secret("new", kNewAuth + "\n");
  auto registry = Registry::with_builtin_backends();
  const std::string path = tpm.file("ca.tss2.pem");
  KeyBackend& backend = registry->backend_for(tpm.file_uri(path));
  auto original = backend.generate(tpm.file_uri(path, old_auth), GenerateOptions{KeySpec::parse("ecdsa-p256")});
  const std::string before = read_file(path);
  copy_file(path, tpm.file("backup-copy.tss2.pem"));

  KeyAuthChanger& changer = changer_for(*registry, tpm.file_uri(path));
  CHECK(changer.max_auth_size() == 32);
  KeyAuthChanger::Progress progress;
  auto done = changer.change_key_auth(tpm.file_uri(path, old_auth), kNewAuth, progress);
  CHECK(progress.committed);
  REQUIRE(done.size() == 3);
  CHECK(contains(done[1], "replaced in one rename"));
  CHECK(contains(done[2], "overwritten"));

  // The file: replaced (new private part, same public part), still 0600, no temporary left behind.
  const std::string after = read_file(path);
  CHECK(after != before);
  CHECK(contains(after, "-----BEGIN TSS2 PRIVATE KEY-----"));
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(backend.describe(tpm.file_uri(path)).attribute("empty-auth") == "false");

  // The new auth value opens the key and signs; it is the same key.
  auto reopened = backend.open(tpm.file_uri(path, new_auth_file));
  test::check_signer(*reopened, KeySpec::parse("ecdsa-p256"));
  CHECK(same_public_key(reopened->public_key(), original->public_key()));
  changer.check_key_auth(tpm.file_uri(path), kNewAuth);

  // The shares' secret works through the process-wide override when the URI has no pin-source.
  {
    Override shares(kNewAuth);
    test::check_signer(*backend.open(tpm.file_uri(path)), KeySpec::parse("ecdsa-p256"));
  }

  // The old auth value does not open the replaced file (one TPM failure)...
  Error old = expect_error([&] { backend.open(tpm.file_uri(path, old_auth)); });
  CHECK(old.kind() == ErrorKind::Token);
  CHECK(contains(old.what(), "wrong auth value"));
  // ...but an older copy of the blob still opens with it: it must be destroyed (docs/ceremony.md).
  auto stale = backend.open(tpm.file_uri(tpm.file("backup-copy.tss2.pem"), old_auth));
  CHECK(same_public_key(stale->public_key(), original->public_key()));

  // check_key_auth with a wrong value: refused by the TPM (the second and last failure on this swtpm).
  Error wrong = expect_error([&] { changer.check_key_auth(tpm.file_uri(path), "old-auth-value"); });
  CHECK(wrong.kind() == ErrorKind::Token);
  CHECK(contains(wrong.what(), "wrong auth value"));
}

TEST_CASE("tokens: tpm2 custody - a blob without an auth value gets one, bad requests change nothing", "[tokens][tpm2][custody]") {
  test::Swtpm tpm;
  auto registry = Registry::with_builtin_backends();
  const std::string path = tpm.file("noauth.tss2.pem");
  KeyBackend& backend = registry->backend_for(tpm.file_uri(path));
  auto original = backend.generate(tpm.file_uri(path), GenerateOptions{KeySpec::parse("rsa-2048")});
  KeyAuthChanger& changer = changer_for(*registry, tpm.file_uri(path));
  const std::string before = read_file(path);

  // Refused before the TPM is asked: an empty or too long auth value; shares for a key without auth.
  KeyAuthChanger::Progress progress;
  CHECK(expect_error([&] { changer.change_key_auth(tpm.file_uri(path), "", progress); }).kind() == ErrorKind::BadInput);
  CHECK(expect_error([&] { changer.change_key_auth(tpm.file_uri(path), std::string(33, 'x'), progress); }).kind() ==
        ErrorKind::BadInput);
  CHECK_FALSE(progress.committed);
  CHECK(contains(expect_error([&] { changer.check_key_auth(tpm.file_uri(path), kNewAuth); }).what(), "emptyAuth TRUE"));
  CHECK(read_file(path) == before);
  // An override (shares) is not used for a blob that says it has no auth value.
  {
    Override shares(kNewAuth);
    test::check_signer(*backend.open(tpm.file_uri(path)), KeySpec::parse("rsa-2048"));
  }

  auto done = changer.change_key_auth(tpm.file_uri(path), kNewAuth, progress);
  CHECK(progress.committed);
  CHECK(backend.describe(tpm.file_uri(path)).attribute("empty-auth") == "false");
  Error missing = expect_error([&] { backend.open(tpm.file_uri(path)); });
  CHECK(missing.kind() == ErrorKind::BadInput);
  CHECK(contains(missing.what(), "--pin-shares"));
  Override shares(kNewAuth);
  auto reopened = backend.open(tpm.file_uri(path));
  CHECK(same_public_key(reopened->public_key(), original->public_key()));
  // Nothing to resume for a blob.
  CHECK(changer.resume_key_auth_change(tpm.file_uri(path)).empty());
}

TEST_CASE("tokens: tpm2 custody - a persistent key keeps its handle and the staging handle is freed", "[tokens][tpm2][custody]") {
  test::Swtpm tpm;
  const std::string old_auth = tpm.write_secret("old", "old-auth-value\n");
  const std::string new_auth_file = tpm.write_secret("new", kNewAuth + "\n");
  const std::string wrong = tpm.write_secret("wrong", "not-the-auth\n");
  auto registry = Registry::with_builtin_backends();
  const std::uint32_t handle = 0x81000100, staging = 0x81400100;
  KeyBackend& backend = registry->backend_for(tpm.handle_uri(handle));
  auto original = backend.generate(tpm.handle_uri(handle, old_auth), GenerateOptions{KeySpec::parse("ecdsa-p384")});
  KeyAuthChanger& changer = changer_for(*registry, tpm.handle_uri(handle));

  // A wrong current auth value: refused once by the TPM, nothing changed, nothing committed.
  KeyAuthChanger::Progress refused;
  Error e = expect_error([&] { changer.change_key_auth(tpm.handle_uri(handle, wrong), kNewAuth, refused); });
  CHECK(e.call() == "Esys_ObjectChangeAuth");
  CHECK(contains(e.what(), "wrong auth value"));
  CHECK_FALSE(refused.committed);
  CHECK_FALSE(backend.exists(tpm.handle_uri(staging)));
  test::check_signer(*backend.open(tpm.handle_uri(handle, old_auth)), KeySpec::parse("ecdsa-p384"));

  KeyAuthChanger::Progress progress;
  auto done = changer.change_key_auth(tpm.handle_uri(handle, old_auth), kNewAuth, progress);
  CHECK(progress.committed);
  REQUIRE(done.size() == 5);
  CHECK(contains(done[1], "staging handle 0x81400100"));
  CHECK(contains(done[2], "freed 0x81000100"));
  CHECK(contains(done[4], "freed the staging handle 0x81400100"));

  // Same handle, same key, new auth value; the staging handle is free again.
  CHECK(backend.exists(tpm.handle_uri(handle)));
  CHECK_FALSE(backend.exists(tpm.handle_uri(staging)));
  CHECK(backend.describe(tpm.handle_uri(handle)).attribute("handle") == "0x81000100");
  auto reopened = backend.open(tpm.handle_uri(handle, new_auth_file));
  test::check_signer(*reopened, KeySpec::parse("ecdsa-p384"));
  CHECK(same_public_key(reopened->public_key(), original->public_key()));
  {
    Override shares(kNewAuth);
    CHECK(same_public_key(backend.open(tpm.handle_uri(handle))->public_key(), original->public_key()));
    CHECK(changer.resume_key_auth_change(tpm.handle_uri(handle)).empty());  // nothing interrupted
  }
  // The old auth value opens nothing (the second failure on this swtpm).
  Error old = expect_error([&] { backend.open(tpm.handle_uri(handle, old_auth)); });
  CHECK(contains(old.what(), "wrong auth value for TPM handle 0x81000100"));
}

TEST_CASE("tokens: tpm2 custody - an interrupted split of a persistent key is reported and finished", "[tokens][tpm2][custody]") {
  test::Swtpm tpm;
  const std::string old_auth = tpm.write_secret("old", "old-auth-value\n");
  auto registry = Registry::with_builtin_backends();
  KeyBackend& backend = registry->backend_for(tpm.handle_uri(0x81000100));
  KeyAuthChanger& changer = changer_for(*registry, tpm.handle_uri(0x81000100));

  SECTION("died after the new key was persisted at the staging handle, before the old one was freed") {
    const std::uint32_t handle = 0x81000100, staging = 0x81400100;
    auto original = backend.generate(tpm.handle_uri(handle, old_auth), GenerateOptions{KeySpec::parse("ecdsa-p256")});
    leave_interrupted_split(tpm, handle, staging, "old-auth-value", kNewAuth, false);
    // The key still works with the old auth value; a new split refuses to touch the occupied staging handle.
    test::check_signer(*backend.open(tpm.handle_uri(handle, old_auth)), KeySpec::parse("ecdsa-p256"));
    KeyAuthChanger::Progress progress;
    Error busy = expect_error([&] { changer.change_key_auth(tpm.handle_uri(handle, old_auth), "other", progress); });
    CHECK(busy.kind() == ErrorKind::Conflict);
    CHECK(contains(busy.what(), "custody resume"));
    CHECK_FALSE(progress.committed);

    Override shares(kNewAuth);
    auto done = changer.resume_key_auth_change(tpm.handle_uri(handle));
    REQUIRE(done.size() == 4);
    CHECK(contains(done[1], "freed 0x81000100"));
    CHECK_FALSE(backend.exists(tpm.handle_uri(staging)));
    auto reopened = backend.open(tpm.handle_uri(handle));
    CHECK(same_public_key(reopened->public_key(), original->public_key()));
    test::check_signer(*reopened, KeySpec::parse("ecdsa-p256"));
  }

  SECTION("died after the old key was freed, before the new one was persisted at the key's own handle") {
    const std::uint32_t handle = 0x81000200, staging = 0x81400200;
    auto original = backend.generate(tpm.handle_uri(handle, old_auth), GenerateOptions{KeySpec::parse("rsa-2048")});
    leave_interrupted_split(tpm, handle, staging, "old-auth-value", kNewAuth, true);
    // The URI names an empty handle: the error says where the key is and what to run.
    Error gone = expect_error([&] { backend.open(tpm.handle_uri(handle, old_auth)); });
    CHECK(gone.kind() == ErrorKind::NotFound);
    CHECK(contains(gone.what(), "0x81400200"));
    CHECK(contains(gone.what(), "hwca custody resume"));

    // resume needs the new auth value.
    CHECK(expect_error([&] { changer.resume_key_auth_change(tpm.handle_uri(handle)); }).kind() == ErrorKind::BadInput);
    Override shares(kNewAuth);
    auto done = changer.resume_key_auth_change(tpm.handle_uri(handle));
    REQUIRE(done.size() == 3);
    CHECK(backend.exists(tpm.handle_uri(handle)));
    CHECK_FALSE(backend.exists(tpm.handle_uri(staging)));
    auto reopened = backend.open(tpm.handle_uri(handle));
    CHECK(same_public_key(reopened->public_key(), original->public_key()));
  }

  SECTION("the staging handle holds another key: resume refuses to touch it") {
    const std::uint32_t handle = 0x81000300, staging = 0x81400300;
    backend.generate(tpm.handle_uri(handle), GenerateOptions{KeySpec::parse("ecdsa-p256")});
    backend.generate(tpm.handle_uri(staging), GenerateOptions{KeySpec::parse("ecdsa-p256")});
    Override shares(kNewAuth);
    Error other = expect_error([&] { changer.resume_key_auth_change(tpm.handle_uri(handle)); });
    CHECK(other.kind() == ErrorKind::Conflict);
    CHECK(contains(other.what(), "another key"));
    CHECK(backend.exists(tpm.handle_uri(handle)));
    CHECK(backend.exists(tpm.handle_uri(staging)));
  }
}
