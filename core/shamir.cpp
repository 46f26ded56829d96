#include "core/shamir.h"

#include "core/base/error.h"
#include "core/base/ossl.h"
#include "core/base/process.h"

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstring>
#include <map>
#include <set>
#include <sys/mman.h>
#include <unistd.h>

namespace hwca::core {

namespace {

void random_bytes(unsigned char* out, size_t n) {
  if (n == 0) return;
  if (RAND_bytes(out, static_cast<int>(n)) != 1) throw_openssl(ErrorKind::Internal, "RAND_bytes");
}

std::string hex_of(std::string_view bytes) { return to_hex(bytes); }

std::string unhex(const std::string& hex, const std::string& what) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) throw Error(ErrorKind::BadInput, what);
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) throw Error(ErrorKind::BadInput, what);
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

void put_field(std::string& out, std::string_view field) {
  unsigned long long n = field.size();
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xffu));
  out.append(field);
}

std::string share_checksum(const Share& s) {
  std::string enc;
  put_field(enc, "hwca-shamir-share-v1");
  put_field(enc, s.set_id);
  put_field(enc, s.label);
  put_field(enc, std::to_string(s.index));
  put_field(enc, std::to_string(s.threshold));
  put_field(enc, std::to_string(s.count));
  put_field(enc, hex_of(s.value));
  put_field(enc, s.secret_check);
  return sha256_hex(enc).substr(0, 16);
}

std::string secret_check_of(const std::string& set_id, const SecretBytes& secret) {
  std::string enc;
  put_field(enc, "hwca-shamir-secret-v1");
  put_field(enc, set_id);
  put_field(enc, secret.view());
  std::string h = sha256_hex(enc).substr(0, 16);
  OPENSSL_cleanse(enc.data(), enc.size());
  return h;
}

// p(x) = coeffs[0] + coeffs[1] x + ... (Horner).
std::uint8_t eval(const unsigned char* coeffs, int degree, std::uint8_t x) {
  std::uint8_t y = coeffs[degree];
  for (int i = degree - 1; i >= 0; --i) y = static_cast<std::uint8_t>(gf256_mul(y, x) ^ coeffs[i]);
  return y;
}

}  // namespace

std::uint8_t gf256_mul(std::uint8_t a, std::uint8_t b) {
  unsigned p = 0;
  unsigned aa = a, bb = b;
  for (int i = 0; i < 8; ++i) {
    p ^= (0u - (bb & 1u)) & aa;                 // add a when the low bit of b is set
    unsigned carry = 0u - ((aa >> 7) & 1u);     // all ones when a's top bit is set
    aa = ((aa << 1) ^ (0x1bu & carry)) & 0xffu;  // a *= x, reduced by x^8 + x^4 + x^3 + x + 1
    bb >>= 1;
  }
  return static_cast<std::uint8_t>(p);
}

std::uint8_t gf256_inv(std::uint8_t a) {
  // a^254 = a^-1 in GF(2^8) (and 0 for 0): square-and-multiply over the fixed exponent 11111110b.
  std::uint8_t result = 1;
  std::uint8_t base = a;
  for (int bit = 0; bit < 8; ++bit) {
    if ((254 >> bit) & 1) result = gf256_mul(result, base);
    base = gf256_mul(base, base);
  }
  return result;
}

// --- SecretBytes -------------------------------------------------------------------------------

SecretBytes::SecretBytes(size_t size) : m_size(size) {
  if (size == 0) return;
  protect_secrets_in_memory();
  long page = ::sysconf(_SC_PAGESIZE);
  size_t psize = page > 0 ? static_cast<size_t>(page) : 4096;
  m_mapped = (size + psize - 1) / psize * psize;
  void* p = ::mmap(nullptr, m_mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error(ErrorKind::Internal, "cannot allocate memory for a secret");
  m_data = static_cast<unsigned char*>(p);
  m_locked = ::mlock(p, m_mapped) == 0;  // best effort: RLIMIT_MEMLOCK may refuse (see SECURITY.md)
#ifdef MADV_DONTDUMP
  ::madvise(p, m_mapped, MADV_DONTDUMP);
#endif
  std::memset(m_data, 0, m_mapped);
}

SecretBytes::SecretBytes(const void* data, size_t size) : SecretBytes(size) {
  if (size) std::memcpy(m_data, data, size);
}

SecretBytes::~SecretBytes() { release(); }

void SecretBytes::release() noexcept {
  if (m_data) {
    OPENSSL_cleanse(m_data, m_mapped);
    if (m_locked) ::munlock(m_data, m_mapped);
    ::munmap(m_data, m_mapped);
  }
  m_data = nullptr;
  m_size = m_mapped = 0;
  m_locked = false;
}

SecretBytes::SecretBytes(SecretBytes&& o) noexcept
    : m_data(o.m_data), m_size(o.m_size), m_mapped(o.m_mapped), m_locked(o.m_locked) {
  o.m_data = nullptr;
  o.m_size = o.m_mapped = 0;
  o.m_locked = false;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    release();
    m_data = o.m_data;
    m_size = o.m_size;
    m_mapped = o.m_mapped;
    m_locked = o.m_locked;
    o.m_data = nullptr;
    o.m_size = o.m_mapped = 0;
    o.m_locked = false;
  }
  return *this;
}

bool SecretBytes::operator==(const SecretBytes& o) const noexcept {
  return m_size == o.m_size && (m_size == 0 || CRYPTO_memcmp(m_data, o.m_data, m_size) == 0);
}

SecretBytes random_ascii_secret(size_t length) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  constexpr unsigned kSize = sizeof kAlphabet - 1;  // 62
  constexpr unsigned kLimit = 256 - 256 % kSize;     // 248: bytes at or above are drawn again
  SecretBytes out(length);
  SecretBytes pool(64);
  size_t filled = 0;
  while (filled < length) {
    random_bytes(pool.data(), pool.size());
    for (size_t i = 0; i < pool.size() && filled < length; ++i)
      if (pool.data()[i] < kLimit) out.data()[filled++] = static_cast<unsigned char>(kAlphabet[pool.data()[i] % kSize]);
  }
  return out;
}

// --- split / combine ---------------------------------------------------------------------------

std::vector<std::string> shamir_split_with_coefficients(std::string_view secret, int threshold, int count,
                                                        const std::vector<std::string>& coefficients) {
  std::vector<std::string> values(static_cast<size_t>(count), std::string(secret.size(), '\0'));
  SecretBytes poly(static_cast<size_t>(threshold));
  for (size_t i = 0; i < secret.size(); ++i) {
    poly.data()[0] = static_cast<unsigned char>(secret[i]);
    for (int j = 1; j < threshold; ++j) poly.data()[j] = static_cast<unsigned char>(coefficients[i][static_cast<size_t>(j - 1)]);
    for (int x = 1; x <= count; ++x)
      values[static_cast<size_t>(x - 1)][i] = static_cast<char>(eval(poly.data(), threshold - 1, static_cast<std::uint8_t>(x)));
  }
  return values;
}

std::vector<Share> shamir_split(const SecretBytes& secret, int threshold, int count, const std::string& label) {
  if (secret.empty()) throw Error(ErrorKind::BadInput, "cannot split an empty secret");
  if (threshold < 2 || count < threshold || count > 255)
    throw Error(ErrorKind::Usage, "Shamir sharing needs 2 <= threshold <= shares <= 255 (got " + std::to_string(threshold) +
                                      " of " + std::to_string(count) + ")");
  std::string set(16, '\0');
  random_bytes(reinterpret_cast<unsigned char*>(set.data()), set.size());
  std::string set_id = hex_of(set);
  std::string check = secret_check_of(set_id, secret);

  // Random coefficients a1..a(k-1) for each secret byte, in locked memory; the top one is never zero, so
  // every polynomial has degree exactly k-1.
  size_t per = static_cast<size_t>(threshold - 1);
  SecretBytes coeffs(secret.size() * per);
  random_bytes(coeffs.data(), coeffs.size());
  for (size_t i = 0; i < secret.size(); ++i) {
    unsigned char& top = coeffs.data()[i * per + per - 1];
    while (top == 0) random_bytes(&top, 1);
  }
  std::vector<Share> shares;
  SecretBytes poly(static_cast<size_t>(threshold));
  std::vector<std::string> values(static_cast<size_t>(count), std::string(secret.size(), '\0'));
  for (size_t i = 0; i < secret.size(); ++i) {
    poly.data()[0] = secret.data()[i];
    std::memcpy(poly.data() + 1, coeffs.data() + i * per, per);
    for (int x = 1; x <= count; ++x)
      values[static_cast<size_t>(x - 1)][i] = static_cast<char>(eval(poly.data(), threshold - 1, static_cast<std::uint8_t>(x)));
  }
  for (int x = 1; x <= count; ++x) {
    Share s;
    s.set_id = set_id;
    s.label = label;
    s.index = x;
    s.threshold = threshold;
    s.count = count;
    s.value = std::move(values[static_cast<size_t>(x - 1)]);
    s.secret_check = check;
    shares.push_back(std::move(s));
  }
  return shares;
}

SecretBytes shamir_interpolate(const std::vector<std::pair<int, std::string>>& points) {
  size_t len = points.empty() ? 0 : points.front().second.size();
  SecretBytes out(len);
  for (size_t i = 0; i < points.size(); ++i) {
    // Lagrange basis at 0: prod_{j != i} x_j / (x_j - x_i); subtraction is XOR in GF(2^8).
    std::uint8_t xi = static_cast<std::uint8_t>(points[i].first);
    std::uint8_t basis = 1;
    for (size_t j = 0; j < points.size(); ++j) {
      if (j == i) continue;
      std::uint8_t xj = static_cast<std::uint8_t>(points[j].first);
      basis = gf256_mul(basis, gf256_mul(xj, gf256_inv(static_cast<std::uint8_t>(xj ^ xi))));
    }
    for (size_t b = 0; b < len; ++b)
      out.data()[b] ^= gf256_mul(static_cast<std::uint8_t>(points[i].second[b]), basis);
  }
  return out;
}

SecretBytes shamir_combine(const std::vector<Share>& shares) {
  if (shares.empty()) throw Error(ErrorKind::Usage, "no shares given");
  const Share& first = shares.front();
  std::set<int> seen;
  for (const auto& s : shares) {
    if (s.set_id != first.set_id || s.threshold != first.threshold || s.count != first.count)
      throw Error(ErrorKind::BadInput, "share " + std::to_string(s.index) + " belongs to another secret than share " +
                                           std::to_string(first.index) + " (set " + s.set_id.substr(0, 8) + " vs " +
                                           first.set_id.substr(0, 8) + ")");
    if (s.value.size() != first.value.size())
      throw Error(ErrorKind::BadInput, "share " + std::to_string(s.index) + " has another length than share " +
                                           std::to_string(first.index));
    if (!seen.insert(s.index).second)
      throw Error(ErrorKind::BadInput, "share " + std::to_string(s.index) + " is given twice");
  }
  int have = static_cast<int>(seen.size());
  if (have < first.threshold) {
    int missing = first.threshold - have;
    throw Error(ErrorKind::BadInput, std::to_string(have) + " of " + std::to_string(first.threshold) +
                                         " shares given for " + (first.label.empty() ? "the secret" : first.label) + ": " +
                                         std::to_string(missing) + " more share" + (missing == 1 ? "" : "s") + " needed");
  }
  std::vector<std::pair<int, std::string>> points;
  for (const auto& s : shares) {
    if (static_cast<int>(points.size()) == first.threshold) break;
    points.emplace_back(s.index, s.value);
  }
  SecretBytes secret = shamir_interpolate(points);
  if (secret_check_of(first.set_id, secret) != first.secret_check)
    throw Error(ErrorKind::BadInput, "the shares do not rebuild the secret they were made from: one of shares " + [&] {
      std::string list;
      for (const auto& p : points) list += (list.empty() ? "" : ", ") + std::to_string(p.first);
      return list;
    }() + " was altered");
  return secret;
}

std::string share_to_json(const Share& s) {
  nlohmann::ordered_json j{{"format", "hwca-shamir-share-v1"},
                           {"set", s.set_id},
                           {"label", s.label},
                           {"index", s.index},
                           {"threshold", s.threshold},
                           {"shares", s.count},
                           {"value", hex_of(s.value)},
                           {"secret_check", s.secret_check},
                           {"checksum", share_checksum(s)}};
  return j.dump(2) + "\n";
}

Share share_from_json(std::string_view text, const std::string& name) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  std::string prefix = "share file " + name;
  if (j.is_discarded() || !j.is_object()) throw Error(ErrorKind::BadInput, prefix + " is corrupted (not a share file)");
  Share s;
  std::string checksum;
  try {
    if (j.at("format").get<std::string>() != "hwca-shamir-share-v1")
      throw Error(ErrorKind::BadInput, prefix + " has an unknown format");
    s.set_id = j.at("set").get<std::string>();
    s.label = j.at("label").get<std::string>();
    // Whole numbers in range only: a huge or fractional JSON number must not reach get<int>().
    auto small_int = [&](const char* field) {
      const nlohmann::json& v = j.at(field);
      if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > 255)
        throw Error(ErrorKind::BadInput, prefix + " is corrupted (" + field + " is not a whole number from 0 to 255)");
      return static_cast<int>(v.get<long long>());
    };
    s.index = small_int("index");
    s.threshold = small_int("threshold");
    s.count = small_int("shares");
    s.value = unhex(j.at("value").get<std::string>(), prefix + " is corrupted (value is not hex)");
    s.secret_check = j.at("secret_check").get<std::string>();
    checksum = j.at("checksum").get<std::string>();
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorKind::BadInput, prefix + " is corrupted (a field is missing or of the wrong type)");
  }
  if (share_checksum(s) != checksum) throw Error(ErrorKind::BadInput, prefix + " is corrupted (checksum mismatch)");
  if (s.index < 1 || s.index > 255 || s.threshold < 2 || s.count < s.threshold || s.count > 255 || s.index > s.count ||
      s.value.empty())
    throw Error(ErrorKind::BadInput, prefix + " is corrupted (impossible index or threshold)");
  return s;
}

SecretBytes combine_share_files(const std::vector<std::string>& paths) {
  std::vector<Share> shares;
  std::map<int, std::string> file_of;
  for (const auto& p : paths) {
    std::string text = read_file(p);
    Share s = share_from_json(text, p);
    OPENSSL_cleanse(text.data(), text.size());
    if (!shares.empty()) {
      const Share& first = shares.front();
      if (s.set_id != first.set_id)
        throw Error(ErrorKind::BadInput, "share file " + p + " belongs to another secret than " + paths.front() +
                                             " (" + (s.label == first.label ? "an older or newer split" : s.label) + ")");
      if (file_of.count(s.index))
        throw Error(ErrorKind::BadInput, "share files " + file_of[s.index] + " and " + p + " are the same share (index " +
                                             std::to_string(s.index) + ")");
    }
    file_of[s.index] = p;
    shares.push_back(std::move(s));
  }
  try {
    return shamir_combine(shares);
  } catch (...) {
    for (auto& s : shares) OPENSSL_cleanse(s.value.data(), s.value.size());
    throw;
  }
}

}  // namespace hwca::core
