#include "tokens/pin.h"

#include "core/base/error.h"
#include "core/base/ossl.h"
#include "core/base/process.h"

#include <openssl/crypto.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

namespace hwca::tokens {

void cleanse(std::string& s) noexcept {
  if (s.capacity() > 0) {
    s.resize(s.capacity());
    OPENSSL_cleanse(s.data(), s.size());
  }
  s.clear();
}

SecretString::SecretString(std::string value) : m_value(value) {
  // `value` is a by-value copy: wipe it rather than letting it die with the PIN in it.
  cleanse(value);
  protect_secrets_in_memory();  // from the first PIN on: no core dump, not dumpable
}

SecretString::~SecretString() { cleanse(m_value); }

SecretString::SecretString(SecretString&& other) noexcept : m_value(other.m_value) { other.clear(); }

SecretString& SecretString::operator=(SecretString&& other) noexcept {
  if (this != &other) {
    cleanse(m_value);
    m_value = other.m_value;
    other.clear();
  }
  return *this;
}

void SecretString::clear() noexcept { cleanse(m_value); }

SecretString read_pin_source(const std::string& pin_source) {
  std::string path = pin_source;
  if (path.rfind("file://", 0) == 0) {
    path = path.substr(7);
    if (path.rfind("localhost/", 0) == 0) path = path.substr(9);
    if (path.empty() || path.front() != '/') throw Error(ErrorKind::BadInput, "pin-source: a file:// URI needs an absolute path");
  } else if (path.rfind("file:", 0) == 0) {
    path = path.substr(5);
  } else {
    auto colon = path.find(':');
    auto slash = path.find('/');
    if (colon != std::string::npos && (slash == std::string::npos || colon < slash))
      throw Error(ErrorKind::BadInput, "pin-source '" + path.substr(0, colon) +
                                           ":' is not supported (use pin-source=file:/path)");
  }
  if (path.empty()) throw Error(ErrorKind::BadInput, "pin-source names no file");
  std::string data = read_file(path);
  if (!data.empty() && data.back() == '\n') data.pop_back();
  if (data.empty()) {
    cleanse(data);
    throw Error(ErrorKind::BadInput, "PIN file " + path + " is empty");
  }
  if (data.find('\n') != std::string::npos || data.find('\0') != std::string::npos) {
    cleanse(data);
    throw Error(ErrorKind::BadInput, "PIN file " + path + " holds more than one line");
  }
  SecretString pin(data);
  cleanse(data);
  return pin;
}

namespace {

// The override's storage: one locked page (a PIN longer than a page is refused).
struct PinOverride {
  std::mutex mutex;
  unsigned char* page = nullptr;
  size_t mapped = 0;
  size_t size = 0;
  bool locked = false;
  ~PinOverride() { wipe(); }
  void wipe() noexcept {
    if (page) {
      OPENSSL_cleanse(page, mapped);
      if (locked) ::munlock(page, mapped);
      ::munmap(page, mapped);
    }
    page = nullptr;
    mapped = size = 0;
    locked = false;
  }
};

PinOverride& pin_override() {
  static PinOverride o;
  return o;
}

SecretString prompt_on_tty(const std::string& token) {
  int fd = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorKind::Io, std::string("cannot open /dev/tty to ask for the PIN: ") + std::strerror(errno));
  struct termios saved {};
  bool restore = ::tcgetattr(fd, &saved) == 0;
  if (restore) {
    struct termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= static_cast<tcflag_t>(ECHONL);
    ::tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  std::string prompt = "PIN for token " + token + ": ";
  ssize_t ignored = ::write(fd, prompt.data(), prompt.size());
  (void)ignored;
  std::string line;
  char c = 0;
  bool got_newline = false;
  while (true) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (c == '\n' || c == '\r') {
      got_newline = true;
      break;
    }
    line += c;
  }
  c = 0;
  if (restore) ::tcsetattr(fd, TCSAFLUSH, &saved);
  ::close(fd);
  if (!got_newline && line.empty()) throw Error(ErrorKind::BadInput, "no PIN entered");
  if (line.empty()) throw Error(ErrorKind::BadInput, "empty PIN entered");
  SecretString pin(line);
  cleanse(line);
  return pin;
}

}  // namespace

void set_pin_override(const void* data, size_t size) {
  long ps = ::sysconf(_SC_PAGESIZE);
  size_t page = ps > 0 ? static_cast<size_t>(ps) : 4096;
  if (size == 0) throw Error(ErrorKind::BadInput, "the assembled PIN is empty");
  if (size >= page) throw Error(ErrorKind::BadInput, "the assembled PIN is too long");
  auto& o = pin_override();
  std::lock_guard lock(o.mutex);
  o.wipe();
  void* p = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error(ErrorKind::Internal, "cannot allocate memory for the PIN");
  o.page = static_cast<unsigned char*>(p);
  o.mapped = page;
  o.locked = ::mlock(p, page) == 0;
#ifdef MADV_DONTDUMP
  ::madvise(p, page, MADV_DONTDUMP);
#endif
  std::memcpy(o.page, data, size);
  o.size = size;
}

void clear_pin_override() noexcept {
  auto& o = pin_override();
  std::lock_guard lock(o.mutex);
  o.wipe();
}

bool has_pin_override() noexcept {
  auto& o = pin_override();
  std::lock_guard lock(o.mutex);
  return o.page != nullptr;
}

std::optional<SecretString> pin_override_copy() {
  auto& o = pin_override();
  std::lock_guard lock(o.mutex);
  if (!o.page) return std::nullopt;
  std::string copy(reinterpret_cast<const char*>(o.page), o.size);
  SecretString pin(copy);
  cleanse(copy);
  return pin;
}

SecretString resolve_pin(const PinSources& sources) {
  if (auto pin = pin_override_copy()) return std::move(*pin);
  if (sources.pin_source) return read_pin_source(*sources.pin_source);
  if (sources.pin_value && sources.allow_pin_value) return SecretString(*sources.pin_value);
  if (sources.pin_value)
    throw Error(ErrorKind::Usage, "pin-value would put the PIN in the process list; use pin-source=file:... or HWCA_PIN");
  if (const char* env = std::getenv("HWCA_PIN"); env && *env) return SecretString(std::string(env));
  if (::isatty(STDIN_FILENO)) return prompt_on_tty(sources.token.empty() ? "(unnamed)" : sources.token);
  throw Error(ErrorKind::BadInput, "no PIN: give pin-source=file:... in the key URI, set HWCA_PIN, or run on a terminal");
}

}  // namespace hwca::tokens
