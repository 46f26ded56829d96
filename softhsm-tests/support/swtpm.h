// Test fixture: a fresh swtpm (TPM 2.0 simulator) for this test process.
//
// The constructor makes a temporary state folder, picks two free loopback ports (server P, control P+1),
// starts `swtpm socket --tpm2 ... --flags not-need-init,startup-clear` and waits (boundedly) until the
// server port accepts connections. The destructor stops it by PID (SIGTERM, then SIGKILL) and removes the
// folder. Nothing is put in the environment: the URIs carry the TCTI.
#pragma once

#include "support/softhsm_token.h"

#include <cstdint>
#include <string>
#include <sys/types.h>

namespace hwca::test {

class Swtpm {
 public:
  Swtpm();
  ~Swtpm();
  Swtpm(const Swtpm&) = delete;
  Swtpm& operator=(const Swtpm&) = delete;

  // "swtpm:host=127.0.0.1,port=P"
  std::string tcti() const;
  int port() const { return m_port; }
  pid_t pid() const { return m_pid; }
  const std::string& folder() const { return m_dir.path(); }
  std::string file(const std::string& name) const { return m_dir.file(name); }

  // tpm2:handle=0x...?tcti=...[&pin-source=file:AUTHFILE]
  std::string handle_uri(std::uint32_t handle, const std::string& auth_file = "") const;
  // tpm2:file=PATH?tcti=...[&pin-source=file:AUTHFILE]
  std::string file_uri(const std::string& path, const std::string& auth_file = "") const;
  // Writes `content` to a 0600 file in the folder and returns its path.
  std::string write_secret(const std::string& name, const std::string& content) const;

  // SIGKILL, as a crash would (the state folder stays).
  void kill_now();
  // Starts swtpm again on the same ports with the same state (after kill_now()).
  void restart();

 private:
  void start();
  void stop() noexcept;

  TempDir m_dir;
  int m_port = 0;
  pid_t m_pid = -1;
};

}  // namespace hwca::test
