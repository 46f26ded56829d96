#include "core/files.h"

#include "core/base/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace hwca::core {

namespace {

std::string folder_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string sys_error() { return std::strerror(errno); }

// The process umask, read without changing it (umask(2) would race with other threads).
mode_t process_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0) {
      try {
        return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
      } catch (...) {
        break;
      }
    }
  }
  return 022;
}

class Fd {
 public:
  explicit Fd(int fd) : m_fd(fd) {}
  ~Fd() {
    if (m_fd >= 0) ::close(m_fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return m_fd; }
  int release() {
    int fd = m_fd;
    m_fd = -1;
    return fd;
  }

 private:
  int m_fd;
};

}  // namespace

void check_output_path(const std::string& path) {
  if (path.empty()) throw Error(ErrorKind::BadInput, "empty output file name");
  if (path.back() == '/') throw Error(ErrorKind::BadInput, "output file name " + path + " names a folder");
  std::string folder = folder_of(path);
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) throw Error(ErrorKind::NotFound, "output folder " + folder + " does not exist");
    throw Error(ErrorKind::Io, "output folder " + folder + ": " + sys_error());
  }
  if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::NotFound, "output folder " + folder + " does not exist (it is not a folder)");
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw Error(ErrorKind::BadInput, "output file " + path + " is a folder");
}

void write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  check_output_path(path);
  std::string folder = folder_of(path);
  std::string tmpl = folder + "/." + base_of(path) + ".tmp.XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  Fd fd(::mkstemp(name.data()));
  if (fd.get() < 0) throw Error(ErrorKind::Io, "cannot create a temporary file in " + folder + ": " + sys_error());
  std::string tmp(name.data());
  auto fail = [&](const std::string& what) {
    std::string msg = "writing " + path + ": " + what + ": " + sys_error();
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::Io, msg);
  };
  if (::fchmod(fd.get(), mode) != 0) fail("fchmod");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("fsync");
  if (::close(fd.release()) != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  // Make the rename durable.
  Fd dir(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() >= 0) ::fsync(dir.get());
}

void check_bare_output(const std::string& name) {
  if (name.empty()) throw Error(ErrorKind::BadInput, "empty output name for -bare");
  check_output_path(name + ".pem");
  check_output_path(name + "-key.pem");
  check_output_path(name + ".csr");
}

void write_bare(const std::string& name, const BareFiles& files) {
  check_bare_output(name);
  // cfssljson's modes, reduced by the umask as Go's ioutil.WriteFile does.
  mode_t mask = process_umask();
  if (!files.key.empty()) write_file_atomic(name + "-key.pem", files.key, 0600 & ~mask);
  if (!files.cert.empty()) write_file_atomic(name + ".pem", files.cert, 0664 & ~mask);
  if (!files.csr.empty()) write_file_atomic(name + ".csr", files.csr, 0644 & ~mask);
}

}  // namespace hwca::core
