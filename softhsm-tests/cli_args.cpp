// Go-style flag spellings reach CLI11 as double-dash options.
#include "cli/args.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace {

std::vector<std::string> norm(std::vector<std::string> in) {
  std::vector<const char*> argv;
  argv.push_back("hwca");
  for (const auto& s : in) argv.push_back(s.c_str());
  auto out = hwca::cli::normalize_go_flags(static_cast<int>(argv.size()), argv.data());
  out.erase(out.begin());
  return out;
}

}  // namespace

TEST_CASE("Go's four spellings become double-dash options", "[cli]") {
  CHECK(norm({"-ca=x"}) == std::vector<std::string>{"--ca=x"});
  CHECK(norm({"-ca", "x"}) == std::vector<std::string>{"--ca", "x"});
  CHECK(norm({"--ca=x"}) == std::vector<std::string>{"--ca=x"});
  CHECK(norm({"--ca", "x"}) == std::vector<std::string>{"--ca", "x"});
  CHECK(norm({"-ca-key=pkcs11:token=a;object=b?x=1&y=2"}) ==
        std::vector<std::string>{"--ca-key=pkcs11:token=a;object=b?x=1&y=2"});
}

TEST_CASE("stdin, one-letter options, boolean flags and -- are kept", "[cli]") {
  CHECK(norm({"gencert", "-initca", "-"}) == std::vector<std::string>{"gencert", "--initca", "-"});
  CHECK(norm({"-h"}) == std::vector<std::string>{"-h"});
  CHECK(norm({"--", "-ca=x"}) == std::vector<std::string>{"--", "-ca=x"});
  // An empty Go value stays empty instead of swallowing the next argument.
  CHECK(norm({"-hostname=", "-"}) == std::vector<std::string>{"--hostname", "", "-"});
  CHECK(norm({"--hostname=", "x.json"}) == std::vector<std::string>{"--hostname", "", "x.json"});
  CHECK(norm({"-hostname=a=b"}) == std::vector<std::string>{"--hostname=a=b"});
  CHECK(norm({}) .empty());
}

TEST_CASE("negative numbers and durations stay values", "[cli]") {
  CHECK(norm({"--ttl", "-1h"}) == std::vector<std::string>{"--ttl", "-1h"});
  CHECK(norm({"-ttl", "-1h"}) == std::vector<std::string>{"--ttl", "-1h"});
  CHECK(norm({"--signing-duration", "-0.5h"}) == std::vector<std::string>{"--signing-duration", "-0.5h"});
  CHECK(norm({"--shares", "-3"}) == std::vector<std::string>{"--shares", "-3"});
  CHECK(norm({"-.5"}) == std::vector<std::string>{"-.5"});
}
