// Output files: written atomically (temporary file in the same folder, fsync, rename, folder fsync),
// replacing an existing file of that name as cfssljson does.
#pragma once

#include <string>
#include <string_view>
#include <sys/types.h>

namespace hwca::core {

// Error(NotFound) when the folder does not exist, Error(Io) on any write failure; on failure the
// temporary file is removed and `path` is untouched.
void write_file_atomic(const std::string& path, std::string_view data, mode_t mode);

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
void write_bare(const std::string& name, const BareFiles& files);

}  // namespace hwca::core
