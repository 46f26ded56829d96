// The file: backend's errors and file handling.
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "support/softhsm_token.h"
#include "tokens/backend.h"
#include "tokens/file/file_backend.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sys/stat.h>

using namespace hwca;
using namespace hwca::tokens;

TEST_CASE("tokens: file backend errors", "[tokens][file]") {
  test::TempDir dir;
  auto registry = Registry::with_builtin_backends();
  KeyBackend& backend = registry->backend_for("file:/x");

  try {
    backend.open("file:" + dir.file("absent.pem"));
    FAIL("opened a missing file");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::NotFound);
  }
  std::ofstream(dir.file("junk.pem")) << "not a key\n";
  try {
    backend.open("file:" + dir.file("junk.pem"));
    FAIL("opened junk");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::BadInput);
  }
  CHECK_THROWS_AS(backend.exists("file:" + dir.file("junk.pem")), Error);
  CHECK_FALSE(backend.exists("file:" + dir.file("absent.pem")));

  // generate refuses an existing file of any kind and leaves it alone.
  try {
    backend.generate("file:" + dir.file("junk.pem"), GenerateOptions{KeySpec::parse("ecdsa-p256")});
    FAIL("overwrote a file");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Conflict);
  }
  std::ifstream in(dir.file("junk.pem"));
  std::string line;
  std::getline(in, line);
  CHECK(line == "not a key");

  CHECK(file_uri_path("file:///etc/k.pem") == "/etc/k.pem");
  CHECK(file_uri_path("file:rel/k.pem") == "rel/k.pem");
  CHECK_THROWS_AS(file_uri_path("file:"), Error);
  CHECK_THROWS_AS(file_uri_path("file://host/k.pem"), Error);
  CHECK_THROWS_AS(file_uri_path("file:/tmp/"), Error);

  // A folder that does not exist.
  try {
    backend.generate("file:" + dir.file("no/such/dir/k.pem"), GenerateOptions{KeySpec::parse("ecdsa-p256")});
    FAIL("wrote into a missing folder");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Io);
  }
  // No temporary files left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path())) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("tokens: file backend imports a software key (cfssl ca-key.pem style)", "[tokens][file]") {
  test::TempDir dir;
  auto registry = Registry::with_builtin_backends();
  const std::string uri = "file:" + dir.file("ca-key.pem");
  auto* importer = dynamic_cast<KeyImporter*>(&registry->backend_for(uri));
  REQUIRE(importer);
  EVP_PKEY_ptr key = generate_software_key(KeySpec::parse("rsa-2048"));
  auto signer = importer->import_key(uri, key.get());
  CHECK(same_public_key(signer->public_key(), key.get()));
  struct stat st {};
  REQUIRE(::stat(dir.file("ca-key.pem").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::string pem = read_file(dir.file("ca-key.pem"));
  CHECK(pem.rfind("-----BEGIN RSA PRIVATE KEY-----", 0) == 0);
  CHECK_THROWS_AS(importer->import_key(uri, key.get()), Error);
}
