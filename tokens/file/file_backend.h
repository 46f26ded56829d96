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

}  // namespace hwca::tokens
