#include "tokens/file/file_backend.h"

#include "core/base/error.h"
#include "tokens/pin.h"

#include <openssl/pem.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hwca::tokens {

namespace {

std::string folder_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

EVP_PKEY_ptr public_only(EVP_PKEY* key) {
  std::string der = public_key_der(key);
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  EVP_PKEY_ptr pub(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!pub) throw_openssl(ErrorKind::Internal, "d2i_PUBKEY");
  return pub;
}

class FileSigner final : public Signer {
 public:
  FileSigner(EVP_PKEY_ptr key, std::string uri)
      : m_key(std::move(key)), m_public(public_only(m_key.get())), m_uri(std::move(uri)) {}
  EVP_PKEY* pkey() const override { return m_key.get(); }
  EVP_PKEY* public_key() const override { return m_public.get(); }
  std::string uri() const override { return m_uri; }

 private:
  EVP_PKEY_ptr m_key;
  EVP_PKEY_ptr m_public;
  std::string m_uri;
};

EVP_PKEY_ptr load_key(const std::string& path) {
  std::string pem = read_file(path);
  EVP_PKEY_ptr key = private_key_from_pem(pem, path);
  cleanse(pem);
  return key;
}

class FileBackend final : public KeyBackend, public KeyImporter {
 public:
  std::string scheme() const override { return "file"; }

  std::unique_ptr<Signer> generate(const std::string& uri, const GenerateOptions& options) override {
    std::string path = file_uri_path(uri);
    if (path_exists(path)) throw Error(ErrorKind::Conflict, path + " already exists; hwca never overwrites keys");
    EVP_PKEY_ptr key = generate_software_key(options.spec);
    std::string pem = private_key_to_traditional_pem(key.get());
    try {
      write_new_private_file(path, pem);
    } catch (...) {
      cleanse(pem);
      throw;
    }
    cleanse(pem);
    return std::make_unique<FileSigner>(std::move(key), uri);
  }

  std::unique_ptr<Signer> open(const std::string& uri) override {
    return std::make_unique<FileSigner>(load_key(file_uri_path(uri)), uri);
  }

  bool exists(const std::string& uri) override {
    std::string path = file_uri_path(uri);
    if (!path_exists(path)) return false;
    load_key(path);  // a file that is there but not a key is an error, not "absent"
    return true;
  }

  KeyDescription describe(const std::string& uri) override {
    std::string path = file_uri_path(uri);
    EVP_PKEY_ptr key = load_key(path);
    KeyDescription d;
    d.uri = uri;
    d.backend = "file";
    d.algorithm = KeySpec::of(key.get()).name();
    d.hardware = false;
    d.public_key = public_only(key.get());
    struct stat st {};
    std::string mode = "unknown";
    if (::stat(path.c_str(), &st) == 0) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      mode = buf;
    }
    d.attributes = {{"path", path},          {"mode", mode},
                    {"local", "false"},      {"sensitive", "false"},
                    {"always-sensitive", "false"}, {"never-extractable", "false"},
                    {"extractable", "true"}, {"key-value-readable", "true"}};
    return d;
  }

  std::unique_ptr<Signer> import_key(const std::string& uri, EVP_PKEY* key) override {
    if (!key) throw Error(ErrorKind::BadInput, "no key to import");
    std::string path = file_uri_path(uri);
    KeySpec::of(key);  // RSA or EC only
    std::string pem = private_key_to_traditional_pem(key);
    try {
      write_new_private_file(path, pem);
    } catch (...) {
      cleanse(pem);
      throw;
    }
    cleanse(pem);
    return open(uri);
  }
};

}  // namespace

std::string file_uri_path(const std::string& uri) {
  std::string path;
  if (uri.rfind("file://", 0) == 0) {
    path = uri.substr(7);
    if (path.rfind("localhost/", 0) == 0) path = path.substr(9);
    if (path.empty() || path.front() != '/')
      throw Error(ErrorKind::BadInput, "invalid file: key URI: file:// must be followed by an absolute path");
  } else if (uri.rfind("file:", 0) == 0) {
    path = uri.substr(5);
  } else {
    throw Error(ErrorKind::BadInput, "invalid file: key URI: it must start with 'file:'");
  }
  if (path.empty()) throw Error(ErrorKind::BadInput, "invalid file: key URI: no path");
  if (path.find('\0') != std::string::npos || path.find('\n') != std::string::npos)
    throw Error(ErrorKind::BadInput, "invalid file: key URI: control character in the path");
  if (path.back() == '/') throw Error(ErrorKind::BadInput, "invalid file: key URI: " + path + " is a folder");
  return path;
}

// A 0600 temporary next to `path` holding `data`, written and fsynced; its name is returned. Errors name
// the temporary when `name_temporary`, else the final path.
std::string write_synced_temporary(const std::string& path, const std::string& data, bool name_temporary) {
  std::string folder = folder_of(path);
  std::string tmpl = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmpl.data());  // mode 0600
  if (fd < 0) throw Error(ErrorKind::Io, "cannot create a file in " + folder + ": " + std::strerror(errno));
  const std::string shown = name_temporary ? tmpl : path;
  auto fail = [&](const std::string& what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw Error(ErrorKind::Io, what + " " + shown + ": " + std::strerror(err));
  };
  if (::fchmod(fd, 0600) != 0) fail("cannot set the mode of");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("cannot write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot fsync");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw Error(ErrorKind::Io, "cannot write " + shown + ": " + std::strerror(err));
  }
  return tmpl;
}

void write_new_private_file(const std::string& path, const std::string& data) {
  if (path_exists(path)) throw Error(ErrorKind::Conflict, path + " already exists; hwca never overwrites keys");
  std::string folder = folder_of(path);
  std::string tmpl = write_synced_temporary(path, data, false);
  // link() refuses to replace an existing name: no window in which another writer's key is overwritten.
  if (::link(tmpl.c_str(), path.c_str()) != 0) {
    int err = errno;
    if (err == EEXIST) {
      ::unlink(tmpl.c_str());
      throw Error(ErrorKind::Conflict, path + " already exists; hwca never overwrites keys");
    }
    if (err == EPERM || err == EOPNOTSUPP || err == ENOSYS) {
      // A file system without hard links: fall back to rename (the check above makes a race unlikely).
      if (path_exists(path)) {
        ::unlink(tmpl.c_str());
        throw Error(ErrorKind::Conflict, path + " already exists; hwca never overwrites keys");
      }
      if (::rename(tmpl.c_str(), path.c_str()) != 0) {
        err = errno;
        ::unlink(tmpl.c_str());
        throw Error(ErrorKind::Io, "cannot create " + path + ": " + std::strerror(err));
      }
    } else {
      ::unlink(tmpl.c_str());
      throw Error(ErrorKind::Io, "cannot create " + path + ": " + std::strerror(err));
    }
  } else {
    ::unlink(tmpl.c_str());
  }
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

bool replace_private_file(const std::string& path, const std::string& data) {
  int old_fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (old_fd < 0) {
    int err = errno;
    if (err == ENOENT) throw Error(ErrorKind::NotFound, path + " does not exist");
    throw Error(ErrorKind::Io, "cannot open " + path + ": " + std::strerror(err));
  }
  struct OldFile {
    int fd;
    ~OldFile() { ::close(fd); }
  } old{old_fd};
  std::string folder = folder_of(path);
  std::string tmpl = write_synced_temporary(path, data, true);
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw Error(ErrorKind::Io, "cannot replace " + path + ": " + std::strerror(err));
  }
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0 || ::fsync(dir) != 0) {
    int err = errno;
    if (dir >= 0) ::close(dir);
    throw Error(ErrorKind::Io, "replaced " + path + " but could not fsync " + folder + ": " + std::strerror(err));
  }
  ::close(dir);
  // The new content is durable under the name: now the old bytes, unless another name still uses them.
  struct stat st {};
  if (::fstat(old.fd, &st) != 0 || st.st_nlink != 0 || st.st_size <= 0) return false;
  std::string zeros(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < zeros.size()) {
    ssize_t n = ::pwrite(old.fd, zeros.data() + done, zeros.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return ::fsync(old.fd) == 0;
}

std::unique_ptr<KeyBackend> make_file_backend() { return std::make_unique<FileBackend>(); }

}  // namespace hwca::tokens
