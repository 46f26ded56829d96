// RFC 7512 PKCS#11 URI parsing: the typed result, and a table of malformed URIs.
#include "core/base/error.h"
#include "tokens/backend.h"
#include "tokens/pkcs11/uri.h"

#include <catch2/catch.hpp>

using namespace hwca;
using namespace hwca::tokens;
using namespace hwca::tokens::pkcs11;

TEST_CASE("tokens: pkcs11 URI parses into typed attributes", "[tokens][pkcs11][uri]") {
  Pkcs11Uri u = parse_pkcs11_uri(
      "pkcs11:token=hwca%20root;object=root-ca;id=%01%02%ff;type=private;serial=abc;manufacturer=SoftHSM%20project;"
      "model=SoftHSM%20v2;slot-id=42;library-manufacturer=x;x-vendor=y"
      "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/hwca/pin");
  CHECK(u.token == "hwca root");
  CHECK(u.object == "root-ca");
  CHECK(u.id == std::string("\x01\x02\xff", 3));
  CHECK(u.type == Pkcs11Uri::ObjectType::Private);
  CHECK(u.serial == "abc");
  CHECK(u.manufacturer == "SoftHSM project");
  CHECK(u.model == "SoftHSM v2");
  CHECK(u.slot_id == 42UL);
  CHECK(u.module_path == "/usr/lib/softhsm/libsofthsm2.so");
  CHECK(u.pin_source == "file:/run/hwca/pin");
  CHECK_FALSE(u.pin_value);
  CHECK(u.module() == "/usr/lib/softhsm/libsofthsm2.so");
  CHECK(u.object_selector_text() == "object=root-ca;id=0102ff");
  CHECK(u.has_token_selector());

  Pkcs11Uri minimal = parse_pkcs11_uri("pkcs11:token=a");
  CHECK(minimal.module() == kDefaultModule);
  CHECK_FALSE(minimal.object);

  // module-name resolves in the system folders.
  Pkcs11Uri named = parse_pkcs11_uri("pkcs11:token=a?module-name=softhsm2");
  CHECK(named.module() == "/usr/lib/softhsm/libsofthsm2.so");
  Pkcs11Uri missing = parse_pkcs11_uri("pkcs11:token=a?module-name=no-such-module");
  try {
    missing.module();
    FAIL("an unknown module-name resolved");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::NotFound);
  }

  // An object alone is a selector; case-insensitive scheme.
  CHECK(parse_pkcs11_uri("PKCS11:object=k").object == "k");
  // Escaping round-trips.
  std::string odd = "a b;c?d&e=f%g/h";
  CHECK(parse_pkcs11_uri("pkcs11:token=" + pkcs11_uri_escape(odd)).token == odd);
}

TEST_CASE("tokens: malformed pkcs11 URIs are BadInput with a one-line message", "[tokens][pkcs11][uri]") {
  struct Case {
    const char* uri;
    const char* reason;  // a fragment of the message
  };
  const std::vector<Case> cases = {
      {"token=a", "must start with 'pkcs11:'"},
      {"pkcs11", "must start with 'pkcs11:'"},
      {"pkcs12:token=a", "must start with 'pkcs11:'"},
      {"pkcs11:", "names no token"},
      {"pkcs11:token", "without '='"},
      {"pkcs11:=a", "malformed path attribute name"},
      {"pkcs11:token=", "empty value for 'token'"},
      {"pkcs11:object=", "empty value for 'object'"},
      {"pkcs11:token=a;token=b", "duplicate attribute 'token'"},
      {"pkcs11:token=a;;object=b", "stray ';'"},
      {"pkcs11:token=a;", "stray ';'"},
      {"pkcs11:token=a%zz", "bad percent-escape"},
      {"pkcs11:token=a%4", "incomplete percent-escape"},
      {"pkcs11:token=a%", "incomplete percent-escape"},
      {"pkcs11:id=%", "incomplete percent-escape"},
      {"pkcs11:token=a%0a", "control character"},
      {"pkcs11:token=a b", "unescaped space"},
      {"pkcs11:token=a;colour=blue", "unknown path attribute 'colour'"},
      {"pkcs11:token=a;slot-id=x1", "slot-id must be a decimal number"},
      {"pkcs11:token=a;slot-id=-1", "slot-id must be a decimal number"},
      {"pkcs11:token=a;slot-id=99999999999999999999999", "slot-id must be a decimal number"},
      {"pkcs11:token=a;type=secret", "type must be"},
      {"pkcs11:token=a?", "empty query"},
      {"pkcs11:token=a?colour=blue", "unknown query attribute 'colour'"},
      {"pkcs11:token=a?module-path=/x.so&module-path=/y.so", "duplicate attribute 'module-path'"},
      {"pkcs11:token=a?module-path=/x.so&&pin-source=/p", "stray '&'"},
      {"pkcs11:token=a?module-path=relative.so", "module-path must be an absolute path"},
      {"pkcs11:token=a?module-path=/x.so&module-name=y", "not both"},
      {"pkcs11:token=a?module-name=../evil", "module-name must be a name"},
      {"pkcs11:token=a?pin-source=", "empty value for 'pin-source'"},
      {"pkcs11:token=a?pin-source=file:/p&pin-value=1234", "not both"},
      {"pkcs11:token=a?object=k", "belongs in the path"},
      {"pkcs11:module-path=/x.so", "belongs in the query"},
      {"pkcs11:pin-value=1234", "belongs in the query"},
      {"pkcs11:token=a#frag", "fragments"},
  };
  REQUIRE(cases.size() >= 20);
  for (const auto& c : cases) {
    INFO("URI: " << c.uri);
    try {
      parse_pkcs11_uri(c.uri);
      FAIL("accepted a malformed URI");
    } catch (const Error& e) {
      std::string msg = e.what();
      CHECK(e.kind() == ErrorKind::BadInput);
      CHECK(msg.rfind("invalid PKCS#11 URI: ", 0) == 0);
      CHECK(msg.find(c.reason) != std::string::npos);
      CHECK(msg.find('\n') == std::string::npos);
    }
  }
}

TEST_CASE("tokens: URI errors never echo a pin-value", "[tokens][pkcs11][uri]") {
  const std::vector<std::string> uris = {
      "pkcs11:token=a?pin-value=s3cr3t%zz",
      "pkcs11:token=a?pin-value=s3cr3t&pin-value=s3cr3t",
      "pkcs11:token=a?pin-value=s3cr3t&pin-source=file:/p",
      "pkcs11:token=a;colour=s3cr3t?pin-value=s3cr3t",
  };
  for (const auto& uri : uris) {
    INFO(uri);
    try {
      parse_pkcs11_uri(uri);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("s3cr3t") == std::string::npos);
    }
  }
}

TEST_CASE("tokens: pin-value is refused on the command line", "[tokens][pkcs11][pin]") {
  for (const std::string uri : {"pkcs11:token=a;object=b?pin-value=1234", "pkcs11:token=a?module-path=/x.so&PIN-VALUE=1",
                                "pkcs11:token=a;pin-value=1234"}) {
    INFO(uri);
    try {
      refuse_pin_value_on_command_line(uri);
      FAIL("pin-value accepted");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Usage);
      CHECK(std::string(e.what()) ==
            "pin-value would put the PIN in the process list; use pin-source=file:... or HWCA_PIN");
    }
  }
  CHECK_NOTHROW(refuse_pin_value_on_command_line("pkcs11:token=a;object=b?pin-source=file:/run/pin"));
  CHECK_NOTHROW(refuse_pin_value_on_command_line("file:/tmp/pin-value=1.pem"));
  CHECK_NOTHROW(refuse_pin_value_on_command_line("pkcs11:token=pin-value"));
}
