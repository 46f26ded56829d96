// Duplicate mapping keys in the YAML files hwca reads (cluster files, ceremony files, kubeconfigs).
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

namespace hwca::core {

// Throws Error(BadInput) "<what>:<line>: the key "K" appears twice in one mapping" when any mapping under
// `root` names a key twice. YAML readers disagree on such a file: yaml-cpp, and so hwca's lookups, take
// the first; kubectl's reader refuses it; a JSON reader takes the last. A ceremony or cluster file that
// says two things is refused rather than guessed at. Each mapping and sequence is examined once, however
// many aliases name it, so aliases cannot make this pass exponential or endless; no recursion.
void refuse_duplicate_keys(const YAML::Node& root, const std::string& what);

}  // namespace hwca::core
