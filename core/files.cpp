#include "core/files.h"

#include "core/base/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sys/file.h>
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

// Writes `data` to a new temporary beside `path` (".NAME.tmp.XXXXXX", created with `mode` before any
// byte is written), optionally fsyncs it, and returns its name. On failure the temporary is removed
// and Error(Io) names `path`.
std::string write_temporary(const std::string& path, std::string_view data, mode_t mode, bool sync) {
  std::string folder = folder_of(path);
  std::string tmpl = folder + "/." + base_of(path) + ".tmp.XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  Fd fd(::mkostemp(name.data(), O_CLOEXEC));
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
  if (sync && ::fsync(fd.get()) != 0) fail("fsync");
  if (::close(fd.release()) != 0) fail("close");
  return tmp;
}

// check_output_path, returning what stat(2) says of the folder.
struct stat check_output_folder(const std::string& path) {
  if (path.empty()) throw Error(ErrorKind::BadInput, "empty output file name");
  if (path.back() == '/') throw Error(ErrorKind::BadInput, "output file name " + path + " names a folder");
  std::string folder = folder_of(path);
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) throw Error(ErrorKind::NotFound, "output folder " + folder + " does not exist");
    throw Error(ErrorKind::Io, "output folder " + folder + ": " + sys_error());
  }
  if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::NotFound, "output folder " + folder + " does not exist (it is not a folder)");
  struct stat fst {};
  if (::stat(path.c_str(), &fst) == 0 && S_ISDIR(fst.st_mode))
    throw Error(ErrorKind::BadInput, "output file " + path + " is a folder");
  return st;
}
}  // namespace

void check_output_path(const std::string& path) { check_output_folder(path); }

void write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  check_output_path(path);
  std::string folder = folder_of(path);
  std::string tmp = write_temporary(path, data, mode, /*sync=*/true);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string msg = "writing " + path + ": rename: " + sys_error();
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::Io, msg);
  }
  // Make the rename durable.
  Fd dir(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() >= 0) ::fsync(dir.get());
}

namespace {
constexpr size_t kFolderFsyncs = 16;  // more touched folders than this: one syncfs instead
}  // namespace

AtomicBatch::~AtomicBatch() { discard(); }

void AtomicBatch::discard() noexcept {
  for (const auto& e : m_entries) ::unlink(e.tmp.c_str());
  m_entries.clear();
  m_folders.clear();
  m_folder_dev.clear();
  m_folder_index.clear();
}

void AtomicBatch::add(const std::string& path, std::string_view data, mode_t mode) {
  try {
    std::string folder = folder_of(path);
    auto known = m_folder_index.find(folder);
    size_t index = 0;
    if (known == m_folder_index.end()) {
      struct stat fst = check_output_folder(path);
      index = m_folders.size();
      m_folders.push_back(folder);
      m_folder_dev.push_back(fst.st_dev);
      m_folder_index.emplace(folder, index);
    } else {
      index = known->second;
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        throw Error(ErrorKind::BadInput, "output file " + path + " is a folder");
    }
    std::string tmp = write_temporary(path, data, mode, /*sync=*/false);  // made durable by commit()
    m_entries.push_back({std::move(tmp), path, index});
  } catch (...) {
    discard();
    throw;
  }
}

bool AtomicBatch::sync_file_systems(const std::vector<bool>& which, std::string& failed_folder) const {
  std::vector<dev_t> synced;
  for (size_t i = 0; i < m_folders.size(); ++i) {
    if (!which[i]) continue;
    bool done = false;
    for (dev_t d : synced) done = done || d == m_folder_dev[i];
    if (done) continue;
    Fd dir(::open(m_folders[i].c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0 || ::syncfs(dir.get()) != 0) {
      failed_folder = m_folders[i];
      return false;
    }
    synced.push_back(m_folder_dev[i]);
  }
  return true;
}

size_t AtomicBatch::commit() {
  if (m_entries.empty()) {
    discard();
    return 0;
  }
  // 1. Every temporary durable: one syncfs per file system the batch touches.
  {
    std::string folder;
    if (!sync_file_systems(std::vector<bool>(m_folders.size(), true), folder)) {
      std::string msg = "syncing " + folder + ": " + sys_error();
      discard();
      throw Error(ErrorKind::Io, msg);
    }
  }
  // 2. The renames, in the order added.
  std::vector<bool> touched(m_folders.size(), false);
  size_t renamed = 0;
  std::string failure;
  for (; renamed < m_entries.size(); ++renamed) {
    const Entry& e = m_entries[renamed];
    if (::rename(e.tmp.c_str(), e.path.c_str()) != 0) {
      failure = "writing " + e.path + ": rename: " + sys_error();
      break;
    }
    touched[e.folder] = true;
  }
  // 3. The renames durable: each touched folder fsynced once; when many folders were touched, one
  // syncfs per file system instead (it writes every dirty folder and inode of that file system, the new
  // folders' entries included), which costs far less than hundreds of folder fsyncs.
  std::string folder_failure;
  size_t touched_count = 0;
  for (bool t : touched) touched_count += t ? 1 : 0;
  if (touched_count > kFolderFsyncs) {
    std::string folder;
    if (!sync_file_systems(touched, folder)) folder_failure = "syncing " + folder + ": " + sys_error();
  } else {
    for (size_t i = 0; i < m_folders.size(); ++i) {
      if (!touched[i]) continue;
      Fd dir(::open(m_folders[i].c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if ((dir.get() < 0 || ::fsync(dir.get()) != 0) && folder_failure.empty())
        folder_failure = "syncing the folder " + m_folders[i] + ": " + sys_error();
    }
  }
  m_entries.erase(m_entries.begin(), m_entries.begin() + static_cast<std::ptrdiff_t>(renamed));
  discard();  // the temporaries left after a failed rename
  if (!failure.empty()) throw Error(ErrorKind::Io, failure);
  if (!folder_failure.empty()) throw Error(ErrorKind::Io, folder_failure);
  return renamed;
}

size_t remove_stale_temporaries(const std::string& folder, const std::set<std::string>& names) {
  if (names.empty()) return 0;
  DIR* dir = ::opendir(folder.c_str());
  if (!dir) {
    if (errno == ENOENT) return 0;
    throw Error(ErrorKind::Io, "cannot read the folder " + folder + ": " + sys_error());
  }
  // The pattern write_temporary uses: "." + NAME + ".tmp." + six characters (mkostemp's XXXXXX).
  constexpr std::string_view kTmp = ".tmp.";
  std::vector<std::string> stale;
  errno = 0;
  while (const dirent* entry = ::readdir(dir)) {
    std::string_view name(entry->d_name);
    if (name.size() < 1 + 1 + kTmp.size() + 6 || name[0] != '.') continue;
    size_t at = name.size() - 6 - kTmp.size();
    if (name.substr(at, kTmp.size()) != kTmp) continue;
    if (names.count(std::string(name.substr(1, at - 1)))) stale.emplace_back(name);
  }
  int read_errno = errno;
  ::closedir(dir);
  if (read_errno != 0) {
    errno = read_errno;
    throw Error(ErrorKind::Io, "cannot read the folder " + folder + ": " + sys_error());
  }
  for (const auto& name : stale) {
    std::string path = folder + "/" + name;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      throw Error(ErrorKind::Io, "cannot remove the stale temporary " + path + ": " + sys_error());
  }
  return stale.size();
}

FolderLock::FolderLock(const std::string& folder, const std::string& what) {
  m_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (m_fd < 0)
    throw Error(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Io, "cannot open the folder " + folder + ": " + sys_error());
  while (::flock(m_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    ::close(m_fd);
    m_fd = -1;
    if (err == EWOULDBLOCK) throw Error(ErrorKind::Conflict, what);
    errno = err;
    throw Error(ErrorKind::Io, "cannot lock the folder " + folder + ": " + sys_error());
  }
}

FolderLock::~FolderLock() {
  if (m_fd >= 0) ::close(m_fd);  // releases the lock
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
  // All or nothing: the three temporaries are written (and synced) before any is renamed into place,
  // so a full disk or a crash never leaves a key without its certificate.
  mode_t mask = process_umask();
  AtomicBatch batch;
  if (!files.key.empty()) batch.add(name + "-key.pem", files.key, 0600 & ~mask);
  if (!files.cert.empty()) batch.add(name + ".pem", files.cert, 0664 & ~mask);
  if (!files.csr.empty()) batch.add(name + ".csr", files.csr, 0644 & ~mask);
  batch.commit();
}

}  // namespace hwca::core
