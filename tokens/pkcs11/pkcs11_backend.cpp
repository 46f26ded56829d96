#include "tokens/pkcs11/pkcs11_backend.h"

#include "core/base/error.h"
#include "tokens/pin.h"
#include "tokens/pkcs11/module.h"
#include "tokens/pkcs11/uri.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <mutex>

namespace hwca::tokens {

namespace {

using namespace hwca::tokens::pkcs11;

const std::string kP256 = std::string("\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10);
const std::string kP384 = std::string("\x06\x05\x2b\x81\x04\x00\x22", 7);
const std::string kP521 = std::string("\x06\x05\x2b\x81\x04\x00\x23", 7);

std::string ec_params_for(int bits) {
  switch (bits) {
    case 256: return kP256;
    case 384: return kP384;
    case 521: return kP521;
    default: throw Error(ErrorKind::BadInput, "unsupported EC curve size " + std::to_string(bits));
  }
}

const char* group_for_params(const std::string& params) {
  if (params == kP256) return "P-256";
  if (params == kP384) return "P-384";
  if (params == kP521) return "P-521";
  return nullptr;
}

// Process-wide: one Module per module file, shared by every backend instance in the process (a module
// may be C_Initialize'd only once per process).
std::shared_ptr<Module> acquire_module(const std::string& path) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<Module>> modules;
  std::string key = path;
  if (char* real = ::realpath(path.c_str(), nullptr)) {
    key = real;
    std::free(real);
  }
  std::lock_guard lock(mutex);
  if (auto it = modules.find(key); it != modules.end())
    if (auto existing = it->second.lock()) return existing;
  auto module = std::make_shared<Module>(path);
  modules[key] = module;
  return module;
}

// Attribute templates keep their values alive alongside the CK_ATTRIBUTE array.
class Template {
 public:
  Template() = default;
  Template(const Template&) = delete;
  Template& operator=(const Template&) = delete;
  ~Template() {
    for (auto& v : m_values) cleanse(v);
  }
  void add_bool(CK_ATTRIBUTE_TYPE type, bool value) {
    add_bytes(type, std::string(1, static_cast<char>(value ? CK_TRUE : CK_FALSE)));
  }
  void add_ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value) {
    add_bytes(type, std::string(reinterpret_cast<const char*>(&value), sizeof value));
  }
  void add_bytes(CK_ATTRIBUTE_TYPE type, std::string value) {
    m_values.push_back(std::move(value));
    m_types.push_back(type);
  }
  std::vector<CK_ATTRIBUTE> attrs() {
    std::vector<CK_ATTRIBUTE> out;
    // m_values does not change size any more: the pointers stay valid while `out` is used.
    for (size_t i = 0; i < m_values.size(); ++i)
      out.push_back(CK_ATTRIBUTE{m_types[i], m_values[i].empty() ? nullptr : m_values[i].data(),
                                 static_cast<CK_ULONG>(m_values[i].size())});
    return out;
  }

 private:
  std::vector<std::string> m_values;  // pointers are taken only in attrs(), after the last add
  std::vector<CK_ATTRIBUTE_TYPE> m_types;
};


class Pkcs11Signer final : public Signer {
 public:
  Pkcs11Signer(std::shared_ptr<Module> module, EVP_PKEY_ptr pkey, EVP_PKEY_ptr public_key, std::string uri)
      : m_module(std::move(module)), m_pkey(std::move(pkey)), m_public(std::move(public_key)), m_uri(std::move(uri)) {}
  ~Pkcs11Signer() override {
    // The libp11 key goes before the module it points into.
    m_pkey.reset();
    m_public.reset();
  }
  EVP_PKEY* pkey() const override { return m_pkey.get(); }
  EVP_PKEY* public_key() const override { return m_public.get(); }
  std::string uri() const override { return m_uri; }

 private:
  std::shared_ptr<Module> m_module;  // declared first: destroyed last
  EVP_PKEY_ptr m_pkey;
  EVP_PKEY_ptr m_public;
  std::string m_uri;
};

// What one URI resolves to: the module, the token, and (after login) our session on it.
struct Target {
  Pkcs11Uri uri;
  std::shared_ptr<Module> module;
  TokenInfo token;
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;

  std::string where() const { return "token " + token.display(); }
  CK_FUNCTION_LIST* fn() const { return module->fn(); }
};

struct KeyObject {
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  std::optional<std::string> label;
  std::string id;
  CK_KEY_TYPE key_type = CKK_RSA;
};

bool token_matches(const TokenInfo& t, const Pkcs11Uri& uri) {
  if (uri.token && t.label != *uri.token) return false;
  if (uri.serial && t.serial != *uri.serial) return false;
  if (uri.manufacturer && t.manufacturer != *uri.manufacturer) return false;
  if (uri.model && t.model != *uri.model) return false;
  if (uri.slot_id && t.slot != *uri.slot_id) return false;
  return true;
}

EVP_PKEY_ptr rsa_public_from(const std::string& modulus, const std::string& exponent) {
  BIGNUM_ptr n(BN_bin2bn(reinterpret_cast<const unsigned char*>(modulus.data()), static_cast<int>(modulus.size()), nullptr));
  BIGNUM_ptr e(BN_bin2bn(reinterpret_cast<const unsigned char*>(exponent.data()), static_cast<int>(exponent.size()), nullptr));
  if (!n || !e) throw_openssl(ErrorKind::Internal, "BN_bin2bn");
  std::unique_ptr<OSSL_PARAM_BLD, OsslDeleter<&OSSL_PARAM_BLD_free>> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1)
    throw_openssl(ErrorKind::Internal, "OSSL_PARAM_BLD");
  std::unique_ptr<OSSL_PARAM, OsslDeleter<&OSSL_PARAM_free>> params(OSSL_PARAM_BLD_to_param(bld.get()));
  EVP_PKEY_CTX_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    throw_openssl(ErrorKind::Token, "rebuilding the RSA public key from the token");
  return EVP_PKEY_ptr(raw);
}

EVP_PKEY_ptr ec_public_from(const std::string& ec_params, const std::string& ec_point) {
  const char* group = group_for_params(ec_params);
  if (!group) throw Error(ErrorKind::BadInput, "the key on the token uses an unsupported EC curve");
  // CKA_EC_POINT is a DER OCTET STRING holding the point; some tokens return the bare point.
  std::string point = ec_point;
  const auto* p = reinterpret_cast<const unsigned char*>(ec_point.data());
  ASN1_OCTET_STRING_ptr os(d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(ec_point.size())));
  if (os && p == reinterpret_cast<const unsigned char*>(ec_point.data()) + ec_point.size())
    point.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(os.get())), static_cast<size_t>(ASN1_STRING_length(os.get())));
  drain_openssl_errors();
  std::string group_name(group);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group_name.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY_CTX_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 || EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params) != 1)
    throw_openssl(ErrorKind::Token, "rebuilding the EC public key from the token");
  return EVP_PKEY_ptr(raw);
}

std::string bn_param(const EVP_PKEY* key, const char* name, size_t pad = 0) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1 || !raw)
    throw Error(ErrorKind::BadInput, std::string("the key has no ") + name + " component");
  std::unique_ptr<BIGNUM, OsslDeleter<&BN_clear_free>> bn(raw);
  size_t len = pad ? pad : static_cast<size_t>(BN_num_bytes(bn.get()));
  std::string out(len, '\0');
  if (BN_bn2binpad(bn.get(), reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(len)) < 0)
    throw_openssl(ErrorKind::Internal, "BN_bn2binpad");
  return out;
}

std::string der_octet_string(const std::string& bytes) {
  ASN1_OCTET_STRING_ptr os(ASN1_OCTET_STRING_new());
  if (!os || ASN1_OCTET_STRING_set(os.get(), reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size())) != 1)
    throw_openssl(ErrorKind::Internal, "ASN1_OCTET_STRING_set");
  unsigned char* der = nullptr;
  int len = i2d_ASN1_OCTET_STRING(os.get(), &der);
  if (len <= 0) throw_openssl(ErrorKind::Internal, "i2d_ASN1_OCTET_STRING");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

class Pkcs11Backend final : public KeyBackend, public KeyImporter, public TokenInitializer, public PinChanger {
 public:
  Pkcs11Backend() = default;
  ~Pkcs11Backend() override {
    std::lock_guard lock(m_mutex);
    m_modules.clear();
  }

  std::string scheme() const override { return "pkcs11"; }

  std::unique_ptr<Signer> generate(const std::string& uri_text, const GenerateOptions& options) override {
    Target t = resolve(uri_text, "generate");
    require_object(t.uri, "generating a key");
    login(t);
    std::lock_guard lock(t.module->mutex());
    refuse_existing(t);
    const KeySpec& spec = options.spec;
    std::string id = t.uri.id ? *t.uri.id : random_id();

    Template pub, prv;
    pub.add_ulong(CKA_CLASS, CKO_PUBLIC_KEY);
    pub.add_bool(CKA_TOKEN, true);
    pub.add_bool(CKA_PRIVATE, false);
    pub.add_bool(CKA_VERIFY, true);
    pub.add_bool(CKA_ENCRYPT, false);
    pub.add_bool(CKA_WRAP, false);
    pub.add_bytes(CKA_ID, id);
    prv.add_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
    prv.add_bool(CKA_TOKEN, true);
    prv.add_bool(CKA_PRIVATE, true);
    prv.add_bool(CKA_SENSITIVE, true);
    prv.add_bool(CKA_EXTRACTABLE, false);
    prv.add_bool(CKA_SIGN, true);
    prv.add_bool(CKA_UNWRAP, false);
    prv.add_bool(CKA_DERIVE, false);
    prv.add_bool(CKA_DECRYPT, false);
    prv.add_bytes(CKA_ID, id);
    if (t.uri.object) {
      pub.add_bytes(CKA_LABEL, *t.uri.object);
      prv.add_bytes(CKA_LABEL, *t.uri.object);
    }
    CK_MECHANISM mech{CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
    if (spec.type == KeySpec::Type::Rsa) {
      pub.add_ulong(CKA_MODULUS_BITS, static_cast<CK_ULONG>(spec.bits));
      pub.add_bytes(CKA_PUBLIC_EXPONENT, std::string("\x01\x00\x01", 3));
    } else {
      mech.mechanism = CKM_EC_KEY_PAIR_GEN;
      pub.add_bytes(CKA_EC_PARAMS, ec_params_for(spec.bits));
    }
    auto pub_attrs = pub.attrs();
    auto prv_attrs = prv.attrs();
    CK_OBJECT_HANDLE pub_handle = CK_INVALID_HANDLE, prv_handle = CK_INVALID_HANDLE;
    check_rv(t.fn()->C_GenerateKeyPair(t.session, &mech, pub_attrs.data(), static_cast<CK_ULONG>(pub_attrs.size()),
                                       prv_attrs.data(), static_cast<CK_ULONG>(prv_attrs.size()), &pub_handle,
                                       &prv_handle),
             "C_GenerateKeyPair", t.where());
    KeyObject key{prv_handle, t.uri.object, id, spec.type == KeySpec::Type::Rsa ? CKK_RSA : CKK_EC};
    return make_signer(t, key, uri_text, pub_handle);
  }

  std::unique_ptr<Signer> open(const std::string& uri_text) override {
    Target t = resolve(uri_text, "open");
    login(t);
    std::lock_guard lock(t.module->mutex());
    KeyObject key = find_one(t);
    return make_signer(t, key, uri_text);
  }

  bool exists(const std::string& uri_text) override {
    Target t = resolve(uri_text, "open");
    login(t);
    std::lock_guard lock(t.module->mutex());
    auto found = find_private(t);
    if (found.size() > 1) throw several(t, found.size());
    return found.size() == 1;
  }

  KeyDescription describe(const std::string& uri_text) override {
    Target t = resolve(uri_text, "describe");
    login(t);
    std::lock_guard lock(t.module->mutex());
    KeyObject key = find_one(t);
    KeyDescription d;
    d.uri = uri_text;
    d.backend = "pkcs11";
    d.hardware = true;
    d.public_key = public_key_of(t, key);
    d.algorithm = KeySpec::of(d.public_key.get()).name();
    auto yes_no = [&](CK_ATTRIBUTE_TYPE type) {
      auto v = get_bool_attribute(t.fn(), t.session, key.handle, type);
      return v ? (*v ? "true" : "false") : std::string("unavailable");
    };
    d.attributes.emplace_back("token", t.token.label);
    d.attributes.emplace_back("object", key.label.value_or(""));
    d.attributes.emplace_back("id", to_hex(key.id));
    d.attributes.emplace_back("local", yes_no(CKA_LOCAL));
    d.attributes.emplace_back("sensitive", yes_no(CKA_SENSITIVE));
    d.attributes.emplace_back("always-sensitive", yes_no(CKA_ALWAYS_SENSITIVE));
    d.attributes.emplace_back("never-extractable", yes_no(CKA_NEVER_EXTRACTABLE));
    d.attributes.emplace_back("extractable", yes_no(CKA_EXTRACTABLE));
    d.attributes.emplace_back("private", yes_no(CKA_PRIVATE));
    d.attributes.emplace_back("sign", yes_no(CKA_SIGN));
    d.attributes.emplace_back("decrypt", yes_no(CKA_DECRYPT));
    // Ask for the secret itself: a hardware key must answer CKR_ATTRIBUTE_SENSITIVE.
    CK_ATTRIBUTE probe{key.key_type == CKK_RSA ? CKA_PRIVATE_EXPONENT : CKA_VALUE, nullptr, 0};
    CK_RV rv = t.fn()->C_GetAttributeValue(t.session, key.handle, &probe, 1);
    bool readable = rv == CKR_OK && probe.ulValueLen != CK_UNAVAILABLE_INFORMATION;
    d.attributes.emplace_back("key-value-readable", readable ? "true" : "false");
    return d;
  }

  std::unique_ptr<Signer> import_key(const std::string& uri_text, EVP_PKEY* key) override {
    if (!key) throw Error(ErrorKind::BadInput, "no key to import");
    Target t = resolve(uri_text, "import");
    require_object(t.uri, "importing a key");
    KeySpec spec = KeySpec::of(key);
    if (spec.type == KeySpec::Type::Ec) ec_params_for(spec.bits);  // a supported curve
    login(t);
    std::lock_guard lock(t.module->mutex());
    refuse_existing(t);
    std::string id = t.uri.id ? *t.uri.id : random_id();

    Template prv, pub;
    prv.add_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
    prv.add_bool(CKA_TOKEN, true);
    prv.add_bool(CKA_PRIVATE, true);
    prv.add_bool(CKA_SENSITIVE, true);
    prv.add_bool(CKA_EXTRACTABLE, false);
    prv.add_bool(CKA_SIGN, true);
    prv.add_bool(CKA_DECRYPT, false);
    prv.add_bool(CKA_UNWRAP, false);
    prv.add_bool(CKA_DERIVE, false);
    prv.add_bytes(CKA_ID, id);
    pub.add_ulong(CKA_CLASS, CKO_PUBLIC_KEY);
    pub.add_bool(CKA_TOKEN, true);
    pub.add_bool(CKA_PRIVATE, false);
    pub.add_bool(CKA_VERIFY, true);
    pub.add_bytes(CKA_ID, id);
    if (t.uri.object) {
      prv.add_bytes(CKA_LABEL, *t.uri.object);
      pub.add_bytes(CKA_LABEL, *t.uri.object);
    }
    if (spec.type == KeySpec::Type::Rsa) {
      prv.add_ulong(CKA_KEY_TYPE, CKK_RSA);
      pub.add_ulong(CKA_KEY_TYPE, CKK_RSA);
      std::string n = bn_param(key, OSSL_PKEY_PARAM_RSA_N), e = bn_param(key, OSSL_PKEY_PARAM_RSA_E);
      prv.add_bytes(CKA_MODULUS, n);
      prv.add_bytes(CKA_PUBLIC_EXPONENT, e);
      prv.add_bytes(CKA_PRIVATE_EXPONENT, bn_param(key, OSSL_PKEY_PARAM_RSA_D));
      prv.add_bytes(CKA_PRIME_1, bn_param(key, OSSL_PKEY_PARAM_RSA_FACTOR1));
      prv.add_bytes(CKA_PRIME_2, bn_param(key, OSSL_PKEY_PARAM_RSA_FACTOR2));
      prv.add_bytes(CKA_EXPONENT_1, bn_param(key, OSSL_PKEY_PARAM_RSA_EXPONENT1));
      prv.add_bytes(CKA_EXPONENT_2, bn_param(key, OSSL_PKEY_PARAM_RSA_EXPONENT2));
      prv.add_bytes(CKA_COEFFICIENT, bn_param(key, OSSL_PKEY_PARAM_RSA_COEFFICIENT1));
      pub.add_bytes(CKA_MODULUS, n);
      pub.add_bytes(CKA_PUBLIC_EXPONENT, e);
    } else {
      prv.add_ulong(CKA_KEY_TYPE, CKK_EC);
      pub.add_ulong(CKA_KEY_TYPE, CKK_EC);
      std::string params = ec_params_for(spec.bits);
      prv.add_bytes(CKA_EC_PARAMS, params);
      prv.add_bytes(CKA_VALUE, bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, static_cast<size_t>((spec.bits + 7) / 8)));
      pub.add_bytes(CKA_EC_PARAMS, params);
      pub.add_bytes(CKA_EC_POINT, der_octet_string(encoded_point(key)));
    }
    auto prv_attrs = prv.attrs();
    auto pub_attrs = pub.attrs();
    CK_OBJECT_HANDLE prv_handle = CK_INVALID_HANDLE, pub_handle = CK_INVALID_HANDLE;
    check_rv(t.fn()->C_CreateObject(t.session, prv_attrs.data(), static_cast<CK_ULONG>(prv_attrs.size()), &prv_handle),
             "C_CreateObject", t.where());
    CK_RV rv = t.fn()->C_CreateObject(t.session, pub_attrs.data(), static_cast<CK_ULONG>(pub_attrs.size()), &pub_handle);
    if (rv != CKR_OK) {
      t.fn()->C_DestroyObject(t.session, prv_handle);  // no half-imported key
      check_rv(rv, "C_CreateObject", t.where());
    }
    KeyObject obj{prv_handle, t.uri.object, id, spec.type == KeySpec::Type::Rsa ? CKK_RSA : CKK_EC};
    return make_signer(t, obj, uri_text);
  }

  void init_token(const std::string& uri_text, const std::string& so_pin) override {
    Pkcs11Uri uri = parse_pkcs11_uri(uri_text);
    if (!uri.token) throw Error(ErrorKind::BadInput, "initialising a token needs token=LABEL in the URI");
    if (uri.token->size() > 32) throw Error(ErrorKind::BadInput, "a token label holds at most 32 bytes");
    if (so_pin.empty()) throw Error(ErrorKind::BadInput, "the SO PIN is empty");
    auto module = module_for(uri);
    std::lock_guard lock(module->mutex());
    // Resolve the user PIN first: nothing on the token changes when it is missing.
    SecretString user_pin = resolve_pin(pins_for(uri, *uri.token));
    std::optional<TokenInfo> free_slot;
    for (const auto& t : module->tokens()) {
      if (t.initialized() && t.label == *uri.token)
        throw Error(ErrorKind::Conflict, "a token labelled '" + t.label + "' already exists (slot " +
                                             std::to_string(t.slot) + "); hwca never re-initialises tokens");
      if (uri.slot_id && t.slot == *uri.slot_id) {
        if (t.initialized())
          throw Error(ErrorKind::Conflict, "the token in slot " + std::to_string(t.slot) +
                                               " is already initialised; hwca never re-initialises tokens");
        free_slot = t;
      } else if (!uri.slot_id && !t.initialized() && !free_slot) {
        free_slot = t;
      }
    }
    if (!free_slot) throw Error(ErrorKind::NotFound, "no uninitialised token slot in PKCS#11 module " + module->path());
    std::string label = *uri.token;
    label.resize(32, ' ');
    CK_FUNCTION_LIST* fn = module->fn();
    check_rv(fn->C_InitToken(free_slot->slot, reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(so_pin.data())),
                             static_cast<CK_ULONG>(so_pin.size()), reinterpret_cast<CK_UTF8CHAR_PTR>(label.data())),
             "C_InitToken", "slot " + std::to_string(free_slot->slot));
    CK_SLOT_ID slot = free_slot->slot;
    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    CK_RV rv = fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session);
    if (rv == CKR_SLOT_ID_INVALID || rv == CKR_TOKEN_NOT_PRESENT) {
      // Some modules (SoftHSM2) move the new token to another slot id: refresh the slot list.
      if (!module->idle())
        throw Error(ErrorKind::Token, "token " + *uri.token + " was initialised but its slot moved; run again to set the user PIN");
      module->reinitialize();
      slot = find_token(*module, uri).slot;
      session = module->open_session(slot);
    } else {
      check_rv(rv, "C_OpenSession", "slot " + std::to_string(slot));
    }
    auto pin_ptr = [](const std::string& s) { return reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(s.data())); };
    rv = fn->C_Login(session, CKU_SO, pin_ptr(so_pin), static_cast<CK_ULONG>(so_pin.size()));
    if (rv == CKR_OK) {
      rv = fn->C_InitPIN(session, pin_ptr(user_pin.str()), static_cast<CK_ULONG>(user_pin.size()));
      fn->C_Logout(session);
      fn->C_CloseSession(session);
      check_rv(rv, "C_InitPIN", "token " + *uri.token);
    } else {
      fn->C_CloseSession(session);
      check_rv(rv, "C_Login", "token " + *uri.token + ", as SO");
    }
    // SoftHSM2 renumbers the slot and offers a new free one only after C_Initialize: refresh when we can.
    if (module->idle()) module->reinitialize();
  }

  void change_pins(const std::string& uri_text, std::string_view new_user_pin, std::string_view so_pin,
                   std::string_view new_so_pin) override {
    if (new_user_pin.empty()) throw Error(ErrorKind::BadInput, "the new user PIN is empty");
    Pkcs11Uri uri = parse_pkcs11_uri(uri_text);
    auto module = module_for(uri);
    std::lock_guard lock(module->mutex());
    TokenInfo token = find_token(*module, uri);
    if (auto refusal = pin_flags_refusal(token.flags, token.display())) throw Error(ErrorKind::Token, *refusal);
    CK_FUNCTION_LIST* fn = module->fn();
    auto ptr = [](std::string_view s) { return reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(s.data())); };
    auto len = [](std::string_view s) { return static_cast<CK_ULONG>(s.size()); };
    SecretString old_pin = resolve_pin(pins_for(uri, token.display()));
    CK_SESSION_HANDLE session = module->open_session(token.slot);
    CK_RV rv = fn->C_Login(session, CKU_USER, ptr(old_pin.str()), len(old_pin.str()));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
      fn->C_CloseSession(session);
      check_rv(rv, "C_Login", "token " + token.display());
    }
    rv = fn->C_SetPIN(session, ptr(old_pin.str()), len(old_pin.str()), ptr(new_user_pin), len(new_user_pin));
    old_pin.clear();
    fn->C_Logout(session);
    if (rv != CKR_OK) {
      fn->C_CloseSession(session);
      check_rv(rv, "C_SetPIN", "token " + token.display() + ", user PIN");
    }
    if (!new_so_pin.empty()) {
      rv = fn->C_Login(session, CKU_SO, ptr(so_pin), len(so_pin));
      if (rv != CKR_OK) {
        fn->C_CloseSession(session);
        check_rv(rv, "C_Login", "token " + token.display() + ", as SO; the user PIN was already changed");
      }
      rv = fn->C_SetPIN(session, ptr(so_pin), len(so_pin), ptr(new_so_pin), len(new_so_pin));
      fn->C_Logout(session);
      if (rv != CKR_OK) {
        fn->C_CloseSession(session);
        check_rv(rv, "C_SetPIN", "token " + token.display() + ", SO PIN; the user PIN was already changed");
      }
    }
    fn->C_CloseSession(session);
  }

  void check_user_pin(const std::string& uri_text, std::string_view pin) override { check_pin(uri_text, pin, CKU_USER); }
  void check_so_pin(const std::string& uri_text, std::string_view pin) override { check_pin(uri_text, pin, CKU_SO); }

 private:
  void check_pin(const std::string& uri_text, std::string_view pin, CK_USER_TYPE who) {
    Pkcs11Uri uri = parse_pkcs11_uri(uri_text);
    auto module = module_for(uri);
    std::lock_guard lock(module->mutex());
    TokenInfo token = find_token(*module, uri);
    if (who == CKU_USER) {
      if (auto refusal = pin_flags_refusal(token.flags, token.display())) throw Error(ErrorKind::Token, *refusal);
    } else if (token.flags & (CKF_SO_PIN_LOCKED | CKF_SO_PIN_FINAL_TRY)) {
      throw Error(ErrorKind::Token, "the SO PIN of token " + token.display() + " is locked or has one attempt left; not trying it");
    }
    CK_FUNCTION_LIST* fn = module->fn();
    CK_SESSION_HANDLE session = module->open_session(token.slot);
    CK_RV rv = fn->C_Login(session, who, reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(pin.data())),
                           static_cast<CK_ULONG>(pin.size()));
    if (rv == CKR_OK) fn->C_Logout(session);
    fn->C_CloseSession(session);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
      check_rv(rv, "C_Login", "token " + token.display() + (who == CKU_SO ? ", as SO" : ""));
  }

  std::shared_ptr<Module> module_for(const Pkcs11Uri& uri) {
    std::string path = uri.module();
    std::lock_guard lock(m_mutex);
    if (auto it = m_modules.find(path); it != m_modules.end()) return it->second;
    auto module = acquire_module(path);
    m_modules[path] = module;
    return module;
  }

  static PinSources pins_for(const Pkcs11Uri& uri, const std::string& token) {
    PinSources p;
    p.pin_source = uri.pin_source;
    p.pin_value = uri.pin_value;
    // A pin-value that reaches a backend came from a config file: cli/ refuses it on the command line
    // (refuse_pin_value_on_command_line) before any URI gets here.
    p.allow_pin_value = true;
    p.token = token;
    return p;
  }

  static TokenInfo find_token(Module& module, const Pkcs11Uri& uri) {
    auto all = module.tokens();
    std::vector<TokenInfo> present, matches;
    for (auto& t : all) {
      if (!t.initialized()) continue;
      present.push_back(t);
      if (token_matches(t, uri)) matches.push_back(t);
    }
    auto names = [](const std::vector<TokenInfo>& list) {
      std::vector<std::string> sorted;
      for (const auto& t : list) sorted.push_back(t.display());
      std::sort(sorted.begin(), sorted.end());
      std::string out;
      for (const auto& n : sorted) out += (out.empty() ? "" : ", ") + n;
      return out.empty() ? std::string("none") : out;
    };
    if (matches.empty())
      throw Error(ErrorKind::NotFound, "no token matches " + uri.token_selector_text() + " (tokens present: " + names(present) + ")");
    if (matches.size() > 1) {
      std::string list;
      for (const auto& t : matches) list += (list.empty() ? "" : ", ") + t.display() + " [serial " + t.serial + "]";
      throw Error(ErrorKind::BadInput, std::to_string(matches.size()) + " tokens match " + uri.token_selector_text() +
                                           " (" + list + "); add token=... or serial=... to the URI");
    }
    return matches.front();
  }

  Target resolve(const std::string& uri_text, const char* what) {
    Target t;
    t.uri = parse_pkcs11_uri(uri_text);
    if (t.uri.type && *t.uri.type != Pkcs11Uri::ObjectType::Private)
      throw Error(ErrorKind::BadInput, std::string("hwca can only ") + what + " private keys: use type=private in the key URI");
    t.module = module_for(t.uri);
    t.token = find_token(*t.module, t.uri);
    return t;
  }

  static void require_object(const Pkcs11Uri& uri, const char* what) {
    if (!uri.object && !uri.id)
      throw Error(ErrorKind::BadInput, std::string(what) + " needs object=LABEL (or id=...) in the key URI");
  }

  static void login(Target& t) { t.session = t.module->user_session(t.token, pins_for(t.uri, t.token.display())); }

  static std::string random_id() {
    std::string id(16, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(id.data()), static_cast<int>(id.size())) != 1)
      throw_openssl(ErrorKind::Internal, "RAND_bytes");
    return id;
  }

  static std::vector<CK_OBJECT_HANDLE> find_keys(const Target& t, CK_OBJECT_CLASS cls,
                                                 const std::optional<std::string>& label,
                                                 const std::optional<std::string>& id) {
    std::vector<CK_ATTRIBUTE> templ;
    CK_OBJECT_CLASS klass = cls;
    templ.push_back(CK_ATTRIBUTE{CKA_CLASS, &klass, sizeof klass});
    std::string l = label.value_or(""), i = id.value_or("");
    if (label) templ.push_back(CK_ATTRIBUTE{CKA_LABEL, l.data(), static_cast<CK_ULONG>(l.size())});
    if (id) templ.push_back(CK_ATTRIBUTE{CKA_ID, i.data(), static_cast<CK_ULONG>(i.size())});
    return find_objects(t.fn(), t.session, templ, t.where());
  }

  static std::vector<CK_OBJECT_HANDLE> find_private(const Target& t) {
    return find_keys(t, CKO_PRIVATE_KEY, t.uri.object, t.uri.id);
  }

  static Error several(const Target& t, size_t count) {
    return Error(ErrorKind::BadInput, std::to_string(count) + " keys match " + t.uri.object_selector_text() + " on " +
                                          t.where() + "; add id=... to the URI");
  }

  static KeyObject find_one(const Target& t) {
    if (!t.uri.object && !t.uri.id)
      throw Error(ErrorKind::BadInput, "the key URI names no key: add object=LABEL (or id=...)");
    auto found = find_private(t);
    if (found.empty())
      throw Error(ErrorKind::NotFound, "no private key matches " + t.uri.object_selector_text() + " on " + t.where());
    if (found.size() > 1) throw several(t, found.size());
    KeyObject key;
    key.handle = found.front();
    key.label = get_attribute(t.fn(), t.session, key.handle, CKA_LABEL);
    key.id = get_attribute(t.fn(), t.session, key.handle, CKA_ID).value_or("");
    auto type = get_ulong_attribute(t.fn(), t.session, key.handle, CKA_KEY_TYPE);
    if (!type || (*type != CKK_RSA && *type != CKK_EC))
      throw Error(ErrorKind::BadInput, "the key " + t.uri.object_selector_text() + " on " + t.where() +
                                           " is neither RSA nor EC");
    key.key_type = *type;
    return key;
  }

  // The public half, rebuilt as a software key from the public key object (or, for RSA, from the
  // private key object's public attributes).
  // `known`: the public key object when the caller has it (just generated): no search.
  static EVP_PKEY_ptr public_key_of(const Target& t, const KeyObject& key, CK_OBJECT_HANDLE known = CK_INVALID_HANDLE) {
    std::vector<CK_OBJECT_HANDLE> candidates;
    if (known != CK_INVALID_HANDLE) candidates.push_back(known);
    if (candidates.empty()) candidates = find_keys(t, CKO_PUBLIC_KEY, key.label, key.id);
    if (candidates.empty()) candidates = find_keys(t, CKO_PUBLIC_KEY, std::nullopt, key.id);
    CK_FUNCTION_LIST* fn = t.fn();
    if (key.key_type == CKK_RSA) {
      CK_OBJECT_HANDLE src = candidates.empty() ? key.handle : candidates.front();
      auto n = get_attribute(fn, t.session, src, CKA_MODULUS);
      auto e = get_attribute(fn, t.session, src, CKA_PUBLIC_EXPONENT);
      if (!n || !e) throw Error(ErrorKind::Token, "cannot read the RSA public key of " + t.uri.object_selector_text() + " on " + t.where());
      return rsa_public_from(*n, *e);
    }
    if (candidates.empty())
      throw Error(ErrorKind::NotFound, "no public key object for " + t.uri.object_selector_text() + " on " + t.where());
    auto params = get_attribute(fn, t.session, candidates.front(), CKA_EC_PARAMS);
    auto point = get_attribute(fn, t.session, candidates.front(), CKA_EC_POINT);
    if (!params || !point) throw Error(ErrorKind::Token, "cannot read the EC public key of " + t.uri.object_selector_text() + " on " + t.where());
    return ec_public_from(*params, *point);
  }

  // One search per attribute for objects of any class (a token searches all its objects each time: with
  // SoftHSM2's file store every search reads every object file), then the matches' classes.
  static void refuse_existing(const Target& t) {
    auto any_key = [&](CK_ATTRIBUTE_TYPE type, const std::string& value) {
      std::string v = value;
      for (CK_OBJECT_HANDLE h : find_objects(t.fn(), t.session, {CK_ATTRIBUTE{type, v.data(), static_cast<CK_ULONG>(v.size())}},
                                             t.where())) {
        auto cls = get_ulong_attribute(t.fn(), t.session, h, CKA_CLASS);
        if (cls && (*cls == CKO_PRIVATE_KEY || *cls == CKO_PUBLIC_KEY)) return true;
      }
      return false;
    };
    if (t.uri.object && any_key(CKA_LABEL, *t.uri.object))
      throw Error(ErrorKind::Conflict, "a key labelled '" + *t.uri.object + "' already exists on " + t.where() +
                                           "; hwca never overwrites keys");
    if (t.uri.id && any_key(CKA_ID, *t.uri.id))
      throw Error(ErrorKind::Conflict, "a key with id=" + to_hex(*t.uri.id) + " already exists on " + t.where() +
                                           "; hwca never overwrites keys");
  }

  static std::string encoded_point(EVP_PKEY* key) {
    size_t len = 0;
    if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0, &len) != 1)
      throw_openssl(ErrorKind::BadInput, "reading the EC public point");
    std::string out(len, '\0');
    if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, reinterpret_cast<unsigned char*>(out.data()), len,
                                        &len) != 1)
      throw_openssl(ErrorKind::BadInput, "reading the EC public point");
    out.resize(len);
    return out;
  }

  std::unique_ptr<Signer> make_signer(const Target& t, const KeyObject& key, const std::string& uri_text,
                                      CK_OBJECT_HANDLE public_handle = CK_INVALID_HANDLE) {
    EVP_PKEY_ptr public_key = public_key_of(t, key, public_handle);
    EVP_PKEY_ptr pkey = t.module->libp11_private_key(t.token.slot, key.label, key.id);
    return std::make_unique<Pkcs11Signer>(t.module, std::move(pkey), std::move(public_key), uri_text);
  }

  std::mutex m_mutex;
  std::map<std::string, std::shared_ptr<Module>> m_modules;
};

}  // namespace

std::unique_ptr<KeyBackend> make_pkcs11_backend() { return std::make_unique<Pkcs11Backend>(); }

}  // namespace hwca::tokens
