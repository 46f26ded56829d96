// Shamir k-of-n sharing over GF(2^8): field known answers (FIPS-197), split/combine known answers (computed
// with an independent log/exp-table implementation), every subset, and share files.
#include "core_helpers.h"

#include "core/shamir.h"

#include <fstream>
#include <set>

using hwca::Error;
using hwca::ErrorKind;
using hwca::test::error_of;
using hwca::test::TempDir;
using namespace hwca::core;

namespace {

std::string unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

std::string str(const SecretBytes& s) { return std::string(s.view()); }

}  // namespace

TEST_CASE("GF(2^8): FIPS-197 known answers", "[core][shamir]") {
  CHECK(gf256_mul(0x57, 0x83) == 0xc1);  // FIPS-197 section 4.2
  CHECK(gf256_mul(0x57, 0x13) == 0xfe);  // FIPS-197 section 4.2.1
  CHECK(gf256_mul(0x57, 0x02) == 0xae);  // xtime
  CHECK(gf256_mul(0x57, 0x04) == 0x47);
  CHECK(gf256_mul(0x57, 0x08) == 0x8e);
  CHECK(gf256_mul(0x57, 0x10) == 0x07);
  CHECK(gf256_mul(3, 7) == 9);
  CHECK(gf256_mul(0, 0x53) == 0);
  CHECK(gf256_mul(0x53, 1) == 0x53);
  CHECK(gf256_inv(0x53) == 0xca);  // the AES S-box derivation's example inverse
  CHECK(gf256_inv(1) == 1);
  CHECK(gf256_inv(0) == 0);
  for (int a = 1; a < 256; ++a) {
    auto x = static_cast<std::uint8_t>(a);
    REQUIRE(gf256_mul(x, gf256_inv(x)) == 1);
    for (int b = 0; b < 256; b += 17) REQUIRE(gf256_mul(x, static_cast<std::uint8_t>(b)) == gf256_mul(static_cast<std::uint8_t>(b), x));
  }
}

TEST_CASE("Shamir: known-answer split and interpolation", "[core][shamir]") {
  // Secret "hwca", threshold 3, polynomial coefficients (a1, a2) per byte fixed.
  std::vector<std::string> coeffs = {unhex("0102"), unhex("1020"), unhex("abcd"), unhex("ff01")};
  auto values = shamir_split_with_coefficients("hwca", 3, 5, coeffs);
  REQUIRE(values.size() == 5);
  CHECK(hwca::to_hex(values[0]) == "6b47059f");
  CHECK(hwca::to_hex(values[1]) == "62d73780");
  CHECK(hwca::to_hex(values[2]) == "61e7517e");
  CHECK(hwca::to_hex(values[3]) == "4c019da0");
  CHECK(hwca::to_hex(values[4]) == "4f31fb5e");
  CHECK(str(shamir_interpolate({{1, values[0]}, {3, values[2]}, {5, values[4]}})) == "hwca");
  CHECK(str(shamir_interpolate({{4, values[3]}, {2, values[1]}, {1, values[0]}})) == "hwca");
  CHECK(str(shamir_interpolate({{1, values[0]}, {2, values[1]}})) != "hwca");
}

TEST_CASE("Shamir: every 3-of-5 subset rebuilds the secret, no 2-subset does", "[core][shamir]") {
  SecretBytes secret = random_ascii_secret(32);
  CHECK(secret.size() == 32);
  for (char c : secret.view()) CHECK(std::isalnum(static_cast<unsigned char>(c)));
  auto shares = shamir_split(secret, 3, 5, "user PIN of token t");
  REQUIRE(shares.size() == 5);
  for (const auto& s : shares) {
    CHECK(s.threshold == 3);
    CHECK(s.count == 5);
    CHECK(s.set_id == shares[0].set_id);
    CHECK(s.value.size() == 32);
  }
  int subsets = 0;
  for (int a = 0; a < 5; ++a)
    for (int b = a + 1; b < 5; ++b) {
      Error e = error_of([&] { shamir_combine({shares[static_cast<size_t>(a)], shares[static_cast<size_t>(b)]}); });
      CHECK(std::string(e.what()) == "2 of 3 shares given for user PIN of token t: 1 more share needed");
      for (int c = b + 1; c < 5; ++c) {
        SecretBytes got = shamir_combine({shares[static_cast<size_t>(c)], shares[static_cast<size_t>(a)], shares[static_cast<size_t>(b)]});
        CHECK(got == secret);
        ++subsets;
      }
    }
  CHECK(subsets == 10);
  CHECK(shamir_combine(shares) == secret);
  // Two splits of the same secret are unrelated: mixing them is refused.
  auto other = shamir_split(secret, 3, 5, "user PIN of token t");
  CHECK(other[0].set_id != shares[0].set_id);
  CHECK(error_of([&] { shamir_combine({shares[0], shares[1], other[2]}); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([&] { shamir_combine({shares[0], shares[1], shares[1]}); }).kind() == ErrorKind::BadInput);
  CHECK(error_of([&] { shamir_split(secret, 1, 5, ""); }).kind() == ErrorKind::Usage);
  CHECK(error_of([&] { shamir_split(secret, 4, 3, ""); }).kind() == ErrorKind::Usage);
}

TEST_CASE("Shamir: share files name the corrupted or foreign share", "[core][shamir]") {
  TempDir dir;
  SecretBytes secret = random_ascii_secret(24);
  auto shares = shamir_split(secret, 2, 3, "SO PIN of token t");
  std::vector<std::string> paths;
  for (const auto& s : shares) {
    paths.push_back(dir / std::to_string(s.index));
    std::ofstream(paths.back()) << share_to_json(s);
  }
  CHECK(combine_share_files({paths[0], paths[2]}) == secret);
  CHECK(std::string(error_of([&] { combine_share_files({paths[1]}); }).what()) ==
        "1 of 2 shares given for SO PIN of token t: 1 more share needed");

  // One hex digit of the value changed: the checksum names the file.
  std::string text = hwca::read_file(paths[1]);
  auto pos = text.find("\"value\": \"") + 10;
  text[pos] = text[pos] == '0' ? '1' : '0';
  std::string corrupt = dir / "corrupt";
  std::ofstream(corrupt) << text;
  Error e = error_of([&] { combine_share_files({paths[0], corrupt}); });
  CHECK(std::string(e.what()) == "share file " + corrupt + " is corrupted (checksum mismatch)");
  // Not JSON at all.
  std::string garbage = dir / "garbage";
  std::ofstream(garbage) << "not a share";
  CHECK(std::string(error_of([&] { combine_share_files({garbage, paths[0]}); }).what()) ==
        "share file " + garbage + " is corrupted (not a share file)");
  // A share from another split.
  auto foreign = shamir_split(secret, 2, 3, "SO PIN of token t");
  std::string foreign_path = dir / "foreign";
  std::ofstream(foreign_path) << share_to_json(foreign[1]);
  CHECK(std::string(error_of([&] { combine_share_files({paths[0], foreign_path}); }).what())
            .find("share file " + foreign_path + " belongs to another secret") == 0);
  // The same share twice.
  CHECK(std::string(error_of([&] { combine_share_files({paths[0], paths[0]}); }).what()).find("are the same share") !=
        std::string::npos);
  // A share altered with a recomputed checksum: caught by the secret check.
  Share altered = shares[2];
  altered.value[0] = static_cast<char>(altered.value[0] ^ 1);
  std::string altered_path = dir / "altered";
  std::ofstream(altered_path) << share_to_json(altered);
  CHECK(std::string(error_of([&] { combine_share_files({paths[0], altered_path}); }).what())
            .find("do not rebuild the secret") != std::string::npos);
}

TEST_CASE("SecretBytes: locked, moved, wiped", "[core][shamir]") {
  SecretBytes a("secret", 6);
  CHECK(a.locked());
  CHECK(a.view() == "secret");
  SecretBytes b = std::move(a);
  CHECK(a.empty());
  CHECK(b.view() == "secret");
  SecretBytes c(1000);
  std::set<std::string> pins;
  for (int i = 0; i < 20; ++i) pins.insert(std::string(random_ascii_secret(32).view()));
  CHECK(pins.size() == 20);
}
