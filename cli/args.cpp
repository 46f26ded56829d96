#include "cli/args.h"

namespace hwca::cli {

std::vector<std::string> normalize_go_flags(int argc, const char* const* argv) {
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(argc));
  bool rest_positional = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i == 0 || rest_positional) {
      out.push_back(std::move(arg));
      continue;
    }
    if (arg == "--") {
      rest_positional = true;
      out.push_back(std::move(arg));
      continue;
    }
    // A negative number or duration ("-1h", "-0.5") is a value, not a flag: Go flag names never start
    // with a digit or a dot.
    const bool negative_value = arg.size() > 1 && arg[0] == '-' && ((arg[1] >= '0' && arg[1] <= '9') || arg[1] == '.');
    bool single_dash_word = arg.size() > 2 && arg[0] == '-' && arg[1] != '-' && !negative_value;
    if (single_dash_word) arg = "-" + arg;
    // Go's "-flag=" sets an empty value; CLI11 would take the next argument instead. Pass the empty
    // value as its own argument.
    if (arg.size() > 3 && arg.rfind("--", 0) == 0 && arg.back() == '=' && arg.find('=') == arg.size() - 1) {
      arg.pop_back();
      out.push_back(std::move(arg));
      out.emplace_back();
      continue;
    }
    out.push_back(std::move(arg));
  }
  return out;
}

}  // namespace hwca::cli
