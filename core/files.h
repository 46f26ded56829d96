// Output files: written atomically (temporary file in the same folder, fsync, rename, folder fsync),
// replacing an existing file of that name as cfssljson does.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <unordered_map>
#include <vector>

namespace hwca::core {

// Error(NotFound) when the folder does not exist, Error(Io) on any write failure; on failure the
// temporary file is removed and `path` is untouched.
void write_file_atomic(const std::string& path, std::string_view data, mode_t mode);

// Many files made atomic and durable with batched durability: add() writes each file's temporary
// (".NAME.tmp.XXXXXX" in its folder, with its exact mode, not synced); commit() makes every temporary
// durable with one syncfs(2) per file system, then renames each onto its final name (in the order
// added), then fsyncs each touched folder once (or, past 16 folders, syncs each file system once more). No final name ever shows a partial file: each is
// either what it was or the complete new content. On any failure (add or commit) every temporary not
// yet renamed is removed and Error(NotFound/Io) is thrown; the destructor removes the temporaries of a
// batch that was never committed.
class AtomicBatch {
 public:
  AtomicBatch() = default;
  ~AtomicBatch();
  AtomicBatch(const AtomicBatch&) = delete;
  AtomicBatch& operator=(const AtomicBatch&) = delete;

  void add(const std::string& path, std::string_view data, mode_t mode);
  // Returns the number of files renamed into place; the batch is then empty and can be reused.
  size_t commit();
  size_t size() const { return m_entries.size(); }

 private:
  struct Entry {
    std::string tmp, path;
    size_t folder;  // index into m_folders
  };
  void discard() noexcept;
  // One syncfs per file system among the folders `which` selects; false with errno set on failure.
  bool sync_file_systems(const std::vector<bool>& which, std::string& failed_folder) const;
  std::vector<Entry> m_entries;
  std::vector<std::string> m_folders;  // each distinct folder once, checked to exist
  std::vector<dev_t> m_folder_dev;     // the file system of each folder
  std::unordered_map<std::string, size_t> m_folder_index;
};

// A process killed between writing a temporary and renaming it (SIGKILL, power loss) leaves the
// temporary behind; it never shows under a final name. This removes, in `folder`, the temporaries of
// the files named in `names` (".NAME.tmp.XXXXXX", as write_file_atomic and AtomicBatch make them) and
// returns how many. Only for a caller that holds the folder's FolderLock (or otherwise knows that no
// other process is writing those names there). A missing folder holds none; Error(Io) when the folder
// cannot be read or a temporary cannot be removed.
size_t remove_stale_temporaries(const std::string& folder, const std::set<std::string>& names);

// An exclusive flock(2) on a folder, held until destroyed (a killed process releases it). Error(Conflict)
// naming `what` when another process holds it; Error(Io/NotFound) when the folder cannot be opened.
class FolderLock {
 public:
  FolderLock(const std::string& folder, const std::string& what);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int m_fd = -1;
};

// Checks that `path`'s folder exists and is a folder, so that a command can refuse before it signs.
void check_output_path(const std::string& path);

// cfssljson -bare NAME: NAME.pem (0664), NAME-key.pem (0600), NAME.csr (0644). Empty parts are not
// written. Every folder is checked before any file is written.
struct BareFiles {
  std::string cert;
  std::string key;
  std::string csr;
};
void check_bare_output(const std::string& name);
// NAME.pem, NAME-key.pem (0600), NAME.csr, all or nothing (one AtomicBatch).
void write_bare(const std::string& name, const BareFiles& files);

}  // namespace hwca::core
