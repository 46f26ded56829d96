#include "support/softhsm_token.h"

#include "tokens/pkcs11/uri.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace hwca::test {

namespace {

std::string random_digits(size_t n) {
  std::ifstream in("/dev/urandom", std::ios::binary);
  std::string out;
  while (out.size() < n) {
    char c = 0;
    in.read(&c, 1);
    out += static_cast<char>('0' + static_cast<unsigned char>(c) % 10);
  }
  return out;
}

}  // namespace

int run_program(const std::vector<std::string>& argv, std::string* output) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (output) *output = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/hwca-tokens-test.XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
  m_path = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(m_path, ec);
}

SoftHsmToken::SoftHsmToken(std::string label) : m_label(std::move(label)) {
  std::filesystem::create_directories(m_dir.file("tokens"));
  {
    std::ofstream conf(m_dir.file("softhsm2.conf"));
    conf << "directories.tokendir = " << m_dir.file("tokens") << "\n"
         << "objectstore.backend = file\n"
         << "log.level = ERROR\n"
         << "slots.removable = false\n";
  }
  if (const char* old = std::getenv("SOFTHSM2_CONF")) {
    m_had_conf = true;
    m_old_conf = old;
  }
  ::setenv("SOFTHSM2_CONF", m_dir.file("softhsm2.conf").c_str(), 1);
  m_pin = random_digits(8);
  m_so_pin = random_digits(8);
  if (!m_label.empty()) {
    m_pin_file = add_token(m_label, m_pin, m_so_pin);
  } else {
    m_label = "hwca-new";
    m_pin_file = write_secret(m_label + ".pin", m_pin + "\n");
  }
}

SoftHsmToken::~SoftHsmToken() {
  if (m_had_conf)
    ::setenv("SOFTHSM2_CONF", m_old_conf.c_str(), 1);
  else
    ::unsetenv("SOFTHSM2_CONF");
}

std::string SoftHsmToken::write_secret(const std::string& name, const std::string& content) const {
  std::string path = m_dir.file(name);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + path);
  if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    ::close(fd);
    throw std::runtime_error("cannot write " + path);
  }
  ::close(fd);
  return path;
}

std::string SoftHsmToken::add_token(const std::string& label, const std::string& pin, const std::string& so_pin) {
  std::string out;
  int rc = run_program({"softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin},
                       &out);
  if (rc != 0) throw std::runtime_error("softhsm2-util --init-token failed: " + out);
  return write_secret(label + ".pin", pin + "\n");
}

std::string SoftHsmToken::uri_for(const std::string& token, const std::string& object, const std::string& pin_file) const {
  using tokens::pkcs11::pkcs11_uri_escape;
  std::string uri = "pkcs11:token=" + pkcs11_uri_escape(token);
  if (!object.empty()) uri += ";object=" + pkcs11_uri_escape(object);
  uri += "?module-path=" + pkcs11_uri_escape(kSoftHsmModule) + "&pin-source=file:" + pkcs11_uri_escape(pin_file);
  return uri;
}

std::string SoftHsmToken::uri(const std::string& object) const { return uri_for(m_label, object, m_pin_file); }

std::string SoftHsmToken::token_uri() const { return uri_for(m_label, "", m_pin_file); }

int SoftHsmToken::pkcs11_tool(const std::vector<std::string>& args, std::string* output) const {
  std::vector<std::string> argv = {"pkcs11-tool", "--module", kSoftHsmModule, "--token-label", m_label,
                                   "--login",     "--pin",    m_pin};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv, output);
}

}  // namespace hwca::test
