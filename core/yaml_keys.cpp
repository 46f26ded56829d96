#include "core/yaml_keys.h"

#include "core/base/error.h"

#include <set>
#include <utility>
#include <vector>

namespace hwca::core {

void refuse_duplicate_keys(const YAML::Node& root, const std::string& what) {
  // Aliases share nodes: a container is known by where it starts and what it is.
  std::set<std::pair<int, YAML::NodeType::value>> seen;
  std::vector<YAML::Node> todo{root};
  while (!todo.empty()) {
    YAML::Node n = todo.back();
    todo.pop_back();
    if (!n.IsMap() && !n.IsSequence()) continue;
    if (n.Mark().pos >= 0 && !seen.emplace(n.Mark().pos, n.Type()).second) continue;
    if (n.IsSequence()) {
      for (const auto& item : n) todo.push_back(item);
      continue;
    }
    std::set<std::string> keys;
    for (const auto& kv : n) {
      if (kv.first.IsScalar() && !keys.insert(kv.first.Scalar()).second) {
        const int line = kv.first.Mark().line;
        throw Error(ErrorKind::BadInput, what + (line >= 0 ? ":" + std::to_string(line + 1) : std::string()) +
                                             ": the key \"" + kv.first.Scalar() + "\" appears twice in one mapping");
      }
      todo.push_back(kv.first);
      todo.push_back(kv.second);
    }
  }
}

}  // namespace hwca::core
