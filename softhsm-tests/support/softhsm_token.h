// Test fixture: a private SoftHSM2 token store for this test process.
//
// The constructor makes a fresh temporary folder, writes softhsm2.conf there (file object store, log level
// ERROR), points SOFTHSM2_CONF at it, initialises a token with `softhsm2-util --init-token --free` (run as
// a subprocess) and writes the user PIN to a 0600 file. The destructor removes the folder and restores
// SOFTHSM2_CONF. Create the fixture BEFORE any Registry that uses it (SoftHSM2 reads its configuration in
// C_Initialize) and destroy the Registry first.
#pragma once

#include <string>
#include <vector>

namespace hwca::test {

inline constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";

// Runs a program (no shell) and returns its exit status; stdout+stderr go to `output` when given.
int run_program(const std::vector<std::string>& argv, std::string* output = nullptr);

// A fresh temporary folder, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return m_path; }
  std::string file(const std::string& name) const { return m_path + "/" + name; }

 private:
  std::string m_path;
};

class SoftHsmToken {
 public:
  // `label` empty: set up the store but initialise no token (for testing init_token).
  explicit SoftHsmToken(std::string label = "hwca-test");
  ~SoftHsmToken();
  SoftHsmToken(const SoftHsmToken&) = delete;
  SoftHsmToken& operator=(const SoftHsmToken&) = delete;

  const std::string& folder() const { return m_dir.path(); }
  const std::string& label() const { return m_label; }
  const std::string& pin() const { return m_pin; }
  const std::string& so_pin() const { return m_so_pin; }
  const std::string& pin_file() const { return m_pin_file; }
  std::string file(const std::string& name) const { return m_dir.file(name); }

  // pkcs11:token=LABEL;object=OBJECT?module-path=...&pin-source=file:PINFILE
  std::string uri(const std::string& object) const;
  // The same with a different token label / pin file.
  std::string uri_for(const std::string& token, const std::string& object, const std::string& pin_file) const;
  // pkcs11:token=LABEL?module-path=...&pin-source=file:PINFILE
  std::string token_uri() const;

  // Initialises another token in the same store; returns its PIN file.
  std::string add_token(const std::string& label, const std::string& pin, const std::string& so_pin);
  // Writes `content` to a 0600 file in the folder and returns its path.
  std::string write_secret(const std::string& name, const std::string& content) const;
  // pkcs11-tool with this store's module, token and PIN: e.g. {"--keypairgen", "--key-type", "EC:prime256v1"}.
  int pkcs11_tool(const std::vector<std::string>& args, std::string* output = nullptr) const;

 private:
  TempDir m_dir;
  std::string m_label;
  std::string m_pin;
  std::string m_so_pin;
  std::string m_pin_file;
  std::string m_old_conf;
  bool m_had_conf = false;
};

}  // namespace hwca::test
