// Go-style flags on top of CLI11. cfssl's command lines spell options the four ways Go's flag
// package accepts (-ca=x, -ca x, --ca=x, --ca x); CLI11 2.1 rejects multi-letter single-dash options,
// so argv is normalised before parsing: "-name..." becomes "--name...". A lone "-" (stdin) and
// everything after "--" stay as they are, as do one-letter options ("-h") and negative values ("-1h").
#pragma once

#include <string>
#include <vector>

namespace hwca::cli {

std::vector<std::string> normalize_go_flags(int argc, const char* const* argv);

}  // namespace hwca::cli
