// PIN sources and the PIN-flag rule.
#include "core/base/error.h"
#include "support/softhsm_token.h"
#include "tokens/pin.h"
#include "tokens/pkcs11/ck.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <unistd.h>

using namespace hwca;
using namespace hwca::tokens;

namespace {

std::string write(const test::TempDir& dir, const std::string& name, const std::string& content) {
  std::ofstream(dir.file(name), std::ios::binary) << content;
  return dir.file(name);
}

// Sets (or unsets) HWCA_PIN for the scope.
struct EnvPin {
  explicit EnvPin(const char* value) {
    if (const char* old = std::getenv("HWCA_PIN")) saved = old;
    if (value)
      ::setenv("HWCA_PIN", value, 1);
    else
      ::unsetenv("HWCA_PIN");
  }
  ~EnvPin() {
    if (saved)
      ::setenv("HWCA_PIN", saved->c_str(), 1);
    else
      ::unsetenv("HWCA_PIN");
  }
  std::optional<std::string> saved;
};

}  // namespace

TEST_CASE("tokens: PIN-flag rule refuses locked and final-try PINs", "[tokens][pkcs11][pin]") {
  using namespace hwca::tokens::pkcs11;
  CHECK_FALSE(pin_flags_refusal(CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED, "t"));
  CHECK_FALSE(pin_flags_refusal(0, "t"));
  // COUNT_LOW alone still allows a try.
  CHECK_FALSE(pin_flags_refusal(CKF_USER_PIN_COUNT_LOW | CKF_LOGIN_REQUIRED, "t"));

  auto final_try = pin_flags_refusal(CKF_LOGIN_REQUIRED | CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY, "hwca-root");
  REQUIRE(final_try);
  CHECK(*final_try == "only one PIN attempt left on token hwca-root; not trying, to avoid locking it");

  auto locked = pin_flags_refusal(CKF_LOGIN_REQUIRED | CKF_USER_PIN_LOCKED, "hwca-root");
  REQUIRE(locked);
  CHECK(locked->find("user PIN is locked") != std::string::npos);
  CHECK(locked->find("hwca-root") != std::string::npos);
  // Locked wins over final try.
  CHECK(pin_flags_refusal(CKF_USER_PIN_LOCKED | CKF_USER_PIN_FINAL_TRY, "t")->find("locked") != std::string::npos);

  CHECK(ckr_name(CKR_PIN_INCORRECT) == "CKR_PIN_INCORRECT");
  CHECK(ckr_name(CKR_OK) == "CKR_OK");
  CHECK(ckr_name(CKR_ATTRIBUTE_SENSITIVE) == "CKR_ATTRIBUTE_SENSITIVE");
  CHECK(ckr_name(0x12345678UL) == "CKR_0x12345678");
}

TEST_CASE("tokens: PIN sources in order", "[tokens][pin]") {
  test::TempDir dir;
  EnvPin env(nullptr);

  SECTION("pin-source file: one trailing newline stripped") {
    std::string path = write(dir, "pin", "1234\n");
    CHECK(read_pin_source("file:" + path).str() == "1234");
    CHECK(read_pin_source(path).str() == "1234");
    CHECK(read_pin_source("file://" + path).str() == "1234");
    std::string two = write(dir, "pin2", "5678\n\n");
    CHECK_THROWS(read_pin_source(two));  // two lines
    std::string none = write(dir, "pin3", "abcd");
    CHECK(read_pin_source(none).str() == "abcd");
  }
  SECTION("pin-source wins over pin-value and HWCA_PIN") {
    EnvPin e("env-pin");
    std::string path = write(dir, "pin", "file-pin\n");
    PinSources s{"file:" + path, std::string("value-pin"), true, "t"};
    CHECK(resolve_pin(s).str() == "file-pin");
  }
  SECTION("pin-value only when allowed, before HWCA_PIN") {
    EnvPin e("env-pin");
    PinSources allowed{std::nullopt, std::string("value-pin"), true, "t"};
    CHECK(resolve_pin(allowed).str() == "value-pin");
    PinSources refused{std::nullopt, std::string("value-pin"), false, "t"};
    try {
      resolve_pin(refused);
      FAIL("pin-value used though not allowed");
    } catch (const Error& err) {
      CHECK(err.kind() == ErrorKind::Usage);
      CHECK(std::string(err.what()).find("value-pin") == std::string::npos);
    }
  }
  SECTION("HWCA_PIN") {
    EnvPin e("env-pin");
    CHECK(resolve_pin(PinSources{}).str() == "env-pin");
  }
  SECTION("nothing: BadInput (when not on a terminal)") {
    if (::isatty(STDIN_FILENO)) {
      WARN("stdin is a terminal: skipping the no-PIN check");
      return;
    }
    try {
      resolve_pin(PinSources{});
      FAIL("resolved a PIN from nothing");
    } catch (const Error& err) {
      CHECK(err.kind() == ErrorKind::BadInput);
      CHECK(std::string(err.what()) ==
            "no PIN: give pin-source=file:... in the key URI, set HWCA_PIN, or run on a terminal");
    }
  }
  SECTION("missing and empty PIN files") {
    try {
      read_pin_source("file:" + dir.file("absent"));
      FAIL("read a missing file");
    } catch (const Error& err) {
      CHECK(err.kind() == ErrorKind::NotFound);
    }
    std::string empty = write(dir, "empty", "\n");
    try {
      read_pin_source(empty);
      FAIL("accepted an empty PIN");
    } catch (const Error& err) {
      CHECK(err.kind() == ErrorKind::BadInput);
    }
    CHECK_THROWS_AS(read_pin_source("env:HWCA_PIN"), Error);
  }
}

TEST_CASE("tokens: SecretString wipes and moves", "[tokens][pin]") {
  SecretString a(std::string("top-secret"));
  CHECK(a.str() == "top-secret");
  SecretString b(std::move(a));
  CHECK(b.str() == "top-secret");
  CHECK(a.empty());  // NOLINT(bugprone-use-after-move): moved-from secrets are wiped
  SecretString c;
  c = std::move(b);
  CHECK(c.size() == 10);
  c.clear();
  CHECK(c.empty());
}
