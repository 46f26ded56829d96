#include "support/swtpm.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <random>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace hwca::test {

namespace {

// Whether a listening socket could bind `port` on 127.0.0.1 now (no socket holds it, TIME-WAIT included).
bool can_bind(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// A port free on 127.0.0.1 (and the next one too), or 0. Drawn from 20000-31999, below the kernel's
// ephemeral range, as scripts/ports.bash does for the shell tests: swtpm's TCTI opens a connection per
// TPM command, so one test leaves thousands of client sockets in TIME-WAIT on ephemeral ports, and a
// port asked of the kernel (bind to port 0) can then not be had at all.
int free_port_pair() {
  std::random_device seed;
  std::mt19937 draw(seed());
  std::uniform_int_distribution<int> in_range(20000, 31998);
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = in_range(draw);
    if (can_bind(port) && can_bind(port + 1)) return port;
  }
  return 0;
}

bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

Swtpm::Swtpm() {
  std::filesystem::create_directories(m_dir.file("state"));
  for (int attempt = 0; attempt < 5; ++attempt) {
    m_port = free_port_pair();
    if (m_port == 0) throw std::runtime_error("no free loopback port for swtpm");
    try {
      start();
      return;
    } catch (const std::exception&) {
      if (attempt == 4) throw;  // another process took the port between the check and swtpm's bind: retry
    }
  }
}

Swtpm::~Swtpm() { stop(); }

void Swtpm::start() {
  std::string log = m_dir.file("swtpm.log");
  std::vector<std::string> argv = {
      "swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + m_dir.file("state"),
      "--server", "type=tcp,port=" + std::to_string(m_port) + ",bindaddr=127.0.0.1",
      "--ctrl", "type=tcp,port=" + std::to_string(m_port + 1) + ",bindaddr=127.0.0.1",
      "--flags", "not-need-init,startup-clear", "--log", "file=" + log + ",level=0"};
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (out >= 0) {
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  m_pid = pid;
  // Bounded wait: up to 10 s for the server port to accept a connection.
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
      m_pid = -1;
      throw std::runtime_error("swtpm exited at start (see " + log + ")");
    }
    if (accepts(m_port)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop();
  throw std::runtime_error("swtpm did not answer on port " + std::to_string(m_port));
}

void Swtpm::stop() noexcept {
  if (m_pid <= 0) return;
  ::kill(m_pid, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    int status = 0;
    pid_t r = ::waitpid(m_pid, &status, WNOHANG);
    if (r == m_pid || (r < 0 && errno != EINTR)) {
      m_pid = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(m_pid, SIGKILL);
  int status = 0;
  while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
  }
  m_pid = -1;
}

void Swtpm::kill_now() {
  if (m_pid <= 0) return;
  ::kill(m_pid, SIGKILL);
  int status = 0;
  while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
  }
  m_pid = -1;
}

void Swtpm::restart() {
  stop();
  // The ports were ours a moment ago; the kernel may hold them briefly (swtpm sets SO_REUSEADDR).
  for (int attempt = 0; attempt < 20; ++attempt) {
    try {
      start();
      return;
    } catch (const std::exception&) {
      if (attempt == 19) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

std::string Swtpm::tcti() const { return "swtpm:host=127.0.0.1,port=" + std::to_string(m_port); }

std::string Swtpm::handle_uri(std::uint32_t handle, const std::string& auth_file) const {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", handle);
  std::string uri = std::string("tpm2:handle=") + buf + "?tcti=" + tcti();
  if (!auth_file.empty()) uri += "&pin-source=file:" + auth_file;
  return uri;
}

std::string Swtpm::file_uri(const std::string& path, const std::string& auth_file) const {
  std::string uri = "tpm2:file=" + path + "?tcti=" + tcti();
  if (!auth_file.empty()) uri += "&pin-source=file:" + auth_file;
  return uri;
}

std::string Swtpm::write_secret(const std::string& name, const std::string& content) const {
  std::string path = m_dir.file(name);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + path);
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot write " + path);
  return path;
}

}  // namespace hwca::test
