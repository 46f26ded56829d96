#include "core/base/algorithm.h"

#include "core/base/error.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

#include <charconv>

namespace hwca {

namespace {
const char* kAccepted = "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096";
}

KeySpec KeySpec::parse(const std::string& name, bool allow_any_rsa) {
  if (name == "ecdsa-p256") return {Type::Ec, 256};
  if (name == "ecdsa-p384") return {Type::Ec, 384};
  if (name == "ecdsa-p521") return {Type::Ec, 521};
  if (name.rfind("rsa-", 0) == 0) {
    int bits = 0;
    const char* first = name.data() + 4;
    const char* last = name.data() + name.size();
    auto [ptr, ec] = std::from_chars(first, last, bits);
    if (ec == std::errc() && ptr == last) {
      if (bits == 2048 || bits == 3072 || bits == 4096) return {Type::Rsa, bits};
      if (allow_any_rsa && bits >= 2048 && bits <= 8192) return {Type::Rsa, bits};
    }
  }
  throw Error(ErrorKind::BadInput, "unknown key algorithm '" + name + "' (use one of " + kAccepted + ")");
}

KeySpec KeySpec::from_cfssl(const std::string& algo, int size) {
  if (algo == "rsa") {
    if (size < 2048)
      throw Error(ErrorKind::BadInput, "RSA key size " + std::to_string(size) + " is too weak (minimum 2048)");
    if (size > 8192)
      throw Error(ErrorKind::BadInput, "RSA key size " + std::to_string(size) + " is too large (maximum 8192)");
    return {Type::Rsa, size};
  }
  if (algo == "ecdsa") {
    if (size == 256 || size == 384 || size == 521) return {Type::Ec, size};
    throw Error(ErrorKind::BadInput, "invalid ecdsa key size " + std::to_string(size) + " (use 256, 384 or 521)");
  }
  throw Error(ErrorKind::BadInput, "unknown key algorithm '" + algo + "' (use rsa or ecdsa)");
}

KeySpec KeySpec::of(const EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "RSA")) return {Type::Rsa, EVP_PKEY_get_bits(key)};
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {0};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) == 1) {
      std::string g(group, len);
      if (g == "prime256v1" || g == "P-256") return {Type::Ec, 256};
      if (g == "secp384r1" || g == "P-384") return {Type::Ec, 384};
      if (g == "secp521r1" || g == "P-521") return {Type::Ec, 521};
      throw Error(ErrorKind::BadInput, "unsupported EC curve " + g);
    }
    // Keys with a legacy method (libp11) may not answer the provider query: fall back to bits.
    int bits = EVP_PKEY_get_bits(key);
    if (bits == 256 || bits == 384 || bits == 521) return {Type::Ec, bits};
    throw Error(ErrorKind::BadInput, "cannot determine the EC curve of the key");
  }
  throw Error(ErrorKind::BadInput, "unsupported key type (only RSA and ECDSA keys are supported)");
}

std::string KeySpec::name() const {
  return type == Type::Rsa ? "rsa-" + std::to_string(bits) : "ecdsa-p" + std::to_string(bits);
}

std::string KeySpec::curve_name() const { return "P-" + std::to_string(bits); }

int KeySpec::curve_nid() const {
  switch (bits) {
    case 256: return NID_X9_62_prime256v1;
    case 384: return NID_secp384r1;
    case 521: return NID_secp521r1;
    default: throw Error(ErrorKind::BadInput, "unsupported EC curve size " + std::to_string(bits));
  }
}

const EVP_MD* digest_for(const EVP_PKEY* key) {
  KeySpec spec = KeySpec::of(key);
  if (spec.type == KeySpec::Type::Rsa) {
    if (spec.bits >= 4096) return EVP_sha512();
    if (spec.bits >= 3072) return EVP_sha384();
    return EVP_sha256();
  }
  if (spec.bits == 384) return EVP_sha384();
  if (spec.bits == 521) return EVP_sha512();
  return EVP_sha256();
}

EVP_PKEY_ptr generate_software_key(const KeySpec& spec) {
  EVP_PKEY* raw = nullptr;
  if (spec.type == KeySpec::Type::Rsa) {
    raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(spec.bits));
  } else {
    // From the curve's parameters as a key, made once per thread and curve: EVP_PKEY_Q_keygen builds
    // the curve from its name for every key (P-256 here: 20 us per key against 11 us).
    const EVP_PKEY* params = per_thread_key(spec.bits, [&spec]() -> EVP_PKEY_ptr {
      const char* group = spec.bits == 256 ? "P-256" : spec.bits == 384 ? "P-384" : "P-521";
      EVP_PKEY_CTX_ptr pctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
      EVP_PKEY* made = nullptr;
      if (!pctx || EVP_PKEY_paramgen_init(pctx.get()) != 1 || EVP_PKEY_CTX_set_group_name(pctx.get(), group) != 1 ||
          EVP_PKEY_paramgen(pctx.get(), &made) != 1)
        throw_openssl(ErrorKind::Internal, "setting up " + spec.name() + " key generation");
      return EVP_PKEY_ptr(made);
    });
    EVP_PKEY_CTX_ptr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, const_cast<EVP_PKEY*>(params), nullptr));
    if (ctx && EVP_PKEY_keygen_init(ctx.get()) == 1 && EVP_PKEY_keygen(ctx.get(), &raw) != 1) raw = nullptr;
  }
  if (!raw) throw_openssl(ErrorKind::Internal, "generating a " + spec.name() + " key");
  return EVP_PKEY_ptr(raw);
}

}  // namespace hwca
