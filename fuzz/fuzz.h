// Shared by the libFuzzer targets in fuzz/targets/. The contract every parser is held to: for any
// bytes, it returns or throws hwca::Error; anything else (a crash, a sanitizer report, another
// exception type, a hang, a broken round trip checked with HWCA_FUZZ_CHECK) is a finding.
#pragma once

#include "core/base/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hwca::fuzz {

inline std::string bytes(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// Runs `fn`; an hwca::Error is the expected answer to bad input. Returns true when `fn` succeeded.
template <typename Fn>
bool accepts(Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return true;
  } catch (const hwca::Error&) {
    return false;
  }
}

// Splits `text` at every "\n--\n" line (targets that take several inputs: a separator the
// dictionaries know).
inline std::vector<std::string> split_parts(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t pos = text.find("\n--\n", start);
    if (pos == std::string::npos) {
      parts.push_back(text.substr(start));
      return parts;
    }
    parts.push_back(text.substr(start, pos - start));
    start = pos + 4;
  }
}

}  // namespace hwca::fuzz

// A property that must hold for every input the parser accepted (round trips): aborts, so libFuzzer
// saves the input.
#define HWCA_FUZZ_CHECK(cond)                                                            \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: HWCA_FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
