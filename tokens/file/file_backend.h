// The file: key backend: software keys in unencrypted PEM files (leaf keys, tests, importing an existing
// cfssl ca-key.pem into a token). URIs: file:/path/key.pem, file:///path/key.pem or file:relative.pem.
// Whether a file key may be a CA key is cli/'s decision, not this backend's.
#pragma once

#include "tokens/backend.h"

#include <memory>
#include <string>

namespace hwca::tokens {

std::unique_ptr<KeyBackend> make_file_backend();

// The path a file: URI names. Error(BadInput) for anything else.
std::string file_uri_path(const std::string& uri);

// Writes `data` to `path` atomically with mode 0600: a temporary file in the same folder, fsync, then a
// hard link to the final name (which fails rather than overwrite), fsync of the folder.
// Error(Conflict) when `path` exists.
void write_new_private_file(const std::string& path, const std::string& data);

// Replaces the existing key file `path` with `data` (mode 0600) so that at every moment the name holds
// either the whole old content or the whole new one: a temporary file in the same folder, fsync, rename
// over `path`, fsync of the folder. Only then, when no other name links to the old file, its bytes are
// overwritten with zeros through a descriptor opened before the rename (best effort: a copy-on-write or
// journalling file system, an SSD's remapping, backups and snapshots may keep them). Returns true when
// the old bytes were overwritten. Error(NotFound) when `path` does not exist; on any error before the
// rename, `path` is untouched.
bool replace_private_file(const std::string& path, const std::string& data);

}  // namespace hwca::tokens
