// Shamir k-of-n secret sharing over GF(2^8) (the AES field, x^8 + x^4 + x^3 + x + 1), byte by byte, as
// in HashiCorp Vault's shamir package. Coefficients come from OpenSSL's RAND_bytes; share x-coordinates
// are 1..n. Secrets live in SecretBytes: mlock'ed pages excluded from core dumps, wiped with
// OPENSSL_cleanse before they are unlocked and freed.
//
// Share file (JSON, one per custodian):
//   {"format":"hwca-shamir-share-v1","set":"<16 random bytes, hex>","label":"user PIN of token hwca-root",
//    "index":3,"threshold":3,"shares":5,"value":"<hex>","secret_check":"<hex>","checksum":"<hex>"}
//   set           the same for every share of one split: shares of different splits are refused
//   secret_check  first 8 bytes of SHA-256("hwca-shamir-secret-v1" | set | secret): the assembled secret is
//                 checked against it (it identifies a share that was altered with a matching checksum)
//   checksum      first 8 bytes of SHA-256 over the canonical encoding of every other field: a corrupted
//                 share file is named before anything is combined
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hwca::core {

// GF(2^8) arithmetic, without branches or tables that depend on the values.
std::uint8_t gf256_mul(std::uint8_t a, std::uint8_t b);
std::uint8_t gf256_inv(std::uint8_t a);  // gf256_inv(0) == 0

// A secret in locked memory. Move-only; wiped on destruction.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size);
  SecretBytes(const void* data, size_t size);
  ~SecretBytes();
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  unsigned char* data() noexcept { return m_data; }
  const unsigned char* data() const noexcept { return m_data; }
  size_t size() const noexcept { return m_size; }
  bool empty() const noexcept { return m_size == 0; }
  bool locked() const noexcept { return m_locked; }
  std::string_view view() const noexcept { return {reinterpret_cast<const char*>(m_data), m_size}; }
  bool operator==(const SecretBytes& other) const noexcept;

 private:
  void release() noexcept;
  unsigned char* m_data = nullptr;
  size_t m_size = 0;
  size_t m_mapped = 0;
  bool m_locked = false;
};

// A fresh random printable secret: `length` characters from [A-Za-z0-9] (5.95 bits each; 32 characters
// carry 190 bits), drawn from RAND_bytes by rejection sampling.
SecretBytes random_ascii_secret(size_t length);

struct Share {
  std::string set_id;        // hex
  std::string label;
  int index = 0;             // x-coordinate, 1..255
  int threshold = 0;
  int count = 0;
  std::string value;         // raw bytes, one per secret byte
  std::string secret_check;  // hex
};

// Splits `secret` into `count` shares, any `threshold` of which rebuild it. 2 <= threshold <= count <= 255.
std::vector<Share> shamir_split(const SecretBytes& secret, int threshold, int count, const std::string& label);
// The same with given coefficients (for known-answer tests): coefficients[i] holds threshold-1 bytes for
// secret byte i (a1, a2, ...). Returns each share's value (share x = index 1..count).
std::vector<std::string> shamir_split_with_coefficients(std::string_view secret, int threshold, int count,
                                                        const std::vector<std::string>& coefficients);
// Lagrange interpolation at 0 over the given (x, value) pairs (no checks; for known-answer tests).
SecretBytes shamir_interpolate(const std::vector<std::pair<int, std::string>>& points);

// Rebuilds the secret. Error(BadInput) when the shares are of different sets, repeat an index, are fewer
// than the threshold ("2 of 3 shares given: 1 more needed") or do not rebuild the recorded secret.
SecretBytes shamir_combine(const std::vector<Share>& shares);

std::string share_to_json(const Share& share);
// Parses and checks one share file's content; `name` (the file name) appears in every error:
// "share file shares/3 is corrupted (checksum mismatch)".
Share share_from_json(std::string_view text, const std::string& name);
// Reads share files and combines them; every error names the file at fault.
SecretBytes combine_share_files(const std::vector<std::string>& paths);

}  // namespace hwca::core
