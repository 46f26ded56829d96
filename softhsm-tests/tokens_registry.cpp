// The registry: schemes, creation on first use, destruction in reverse order.
#include "core/base/error.h"
#include "tokens/backend.h"

#include <catch2/catch.hpp>

using namespace hwca;
using namespace hwca::tokens;

namespace {

class RecordingBackend final : public KeyBackend {
 public:
  RecordingBackend(std::string name, std::vector<std::string>* log) : m_name(std::move(name)), m_log(log) {
    m_log->push_back("create " + m_name);
  }
  ~RecordingBackend() override { m_log->push_back("destroy " + m_name); }
  std::string scheme() const override { return m_name; }
  std::unique_ptr<Signer> generate(const std::string&, const GenerateOptions&) override { return nullptr; }
  std::unique_ptr<Signer> open(const std::string&) override { return nullptr; }
  bool exists(const std::string&) override { return false; }
  KeyDescription describe(const std::string&) override { return {}; }

 private:
  std::string m_name;
  std::vector<std::string>* m_log;
};

}  // namespace

TEST_CASE("tokens: registry picks backends by scheme", "[tokens][registry]") {
  CHECK(Registry::scheme_of("pkcs11:token=a") == "pkcs11");
  CHECK(Registry::scheme_of("PKCS11:token=a") == "pkcs11");
  CHECK(Registry::scheme_of("file:/tmp/k.pem") == "file");
  CHECK(Registry::scheme_of("tpm2:handle=0x81000100") == "tpm2");
  CHECK(Registry::scheme_of("no-scheme") == "");

  auto registry = Registry::with_builtin_backends();
  CHECK(registry->backend_for("pkcs11:token=a").scheme() == "pkcs11");
  CHECK(registry->backend_for("file:/tmp/x.pem").scheme() == "file");
  // The same backend object each time.
  CHECK(&registry->backend_for("file:/a.pem") == &registry->backend_for("file:/b.pem"));
  // The optional capabilities.
  CHECK(dynamic_cast<KeyImporter*>(&registry->backend_for("pkcs11:token=a")) != nullptr);
  CHECK(dynamic_cast<TokenInitializer*>(&registry->backend_for("pkcs11:token=a")) != nullptr);
  CHECK(dynamic_cast<KeyImporter*>(&registry->backend_for("file:/a.pem")) != nullptr);

  for (const std::string uri : {"x:y", "http://example.com/key", "no-scheme", "s3cr3t-scheme:pin"}) {
    INFO(uri);
    try {
      registry->backend_for(uri);
      FAIL("unknown scheme accepted");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::BadInput);
      CHECK(std::string(e.what()).find("(use pkcs11:, tpm2: or file:)") != std::string::npos);
    }
  }
  try {
    registry->backend_for("x:y");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "unknown key URI scheme 'x' (use pkcs11:, tpm2: or file:)");
  }
  CHECK(registry->backend_for("tpm2:handle=0x81000100").scheme() == "tpm2");
}

TEST_CASE("tokens: registry destroys backends in reverse creation order", "[tokens][registry]") {
  std::vector<std::string> log;
  {
    Registry registry;
    registry.add("a", [&log] { return std::make_unique<RecordingBackend>("a", &log); });
    registry.add("b", [&log] { return std::make_unique<RecordingBackend>("b", &log); });
    registry.add("c", [&log] { return std::make_unique<RecordingBackend>("c", &log); });
    registry.backend_for("b:1");
    registry.backend_for("a:1");
    registry.backend_for("c:1");
    registry.backend_for("a:2");
    CHECK(log == std::vector<std::string>{"create b", "create a", "create c"});
  }
  CHECK(log == std::vector<std::string>{"create b", "create a", "create c", "destroy c", "destroy a", "destroy b"});
}
