#include "tokens/tpm2/provider.h"

#include "core/base/error.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cstring>
#include <deque>
#include <map>
#include <mutex>

namespace hwca::tokens::tpm2 {

namespace {

constexpr const char* kProviderName = "hwca-tpm2";
constexpr const char* kKeyParam = "hwca-tpm2-device-key";  // octet string: a std::shared_ptr<DeviceKey>*

// ---------------------------------------------------------------------------------------------
// Errors. A failure inside a provider callback can only reach the caller through OpenSSL's error
// queue, and hwca prints the queue with ERR_error_string_n, which shows the library and reason
// strings but not the extra data. So every distinct message becomes a reason string of our own
// library (a few distinct messages per process: the strings are kept for the process lifetime).

void raise_error(const std::string& message) {
  static std::mutex mutex;
  static int lib = 0;
  static std::map<std::string, int> reasons;
  static std::deque<std::string> texts;
  static std::deque<ERR_STRING_DATA> tables;  // each entry followed by a {0, nullptr} terminator
  constexpr int kMaxReasons = 1000;
  std::lock_guard lock(mutex);
  auto load = [&](unsigned long code, const std::string& text) {
    texts.push_back(text);
    tables.push_back(ERR_STRING_DATA{code, texts.back().c_str()});
    ERR_STRING_DATA* entry = &tables.back();
    tables.push_back(ERR_STRING_DATA{0, nullptr});
    ERR_load_strings(lib, entry);
  };
  if (lib == 0) {
    lib = ERR_get_next_error_library();
    load(ERR_PACK(lib, 0, 0), "hwca tpm2");
    load(ERR_PACK(lib, 0, 1), "TPM operation failed");
  }
  int reason = 1;
  if (auto it = reasons.find(message); it != reasons.end()) {
    reason = it->second;
  } else if (static_cast<int>(reasons.size()) < kMaxReasons) {
    reason = static_cast<int>(reasons.size()) + 2;
    reasons[message] = reason;
    load(ERR_PACK(lib, 0, reason), message);
  }
  ERR_new();
  ERR_set_debug(OPENSSL_FILE, OPENSSL_LINE, "hwca_tpm2");
  ERR_set_error(lib, reason, nullptr);
}

template <typename F>
int guarded(F&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    raise_error(e.what());
  } catch (const std::exception& e) {
    raise_error(std::string("internal error: ") + e.what());
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Key management: a key object holds a shared reference to the DeviceKey.

struct KeyData {
  std::shared_ptr<DeviceKey> key;
};

void* km_new(void*) { return new (std::nothrow) KeyData; }
void km_free(void* keydata) { delete static_cast<KeyData*>(keydata); }

int km_has(const void* keydata, int) {
  const auto* k = static_cast<const KeyData*>(keydata);
  return k && k->key ? 1 : 0;
}

int km_import(void* keydata, int, const OSSL_PARAM params[]) {
  auto* k = static_cast<KeyData*>(keydata);
  const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, kKeyParam);
  if (!k || !p || p->data_type != OSSL_PARAM_OCTET_STRING || p->data_size != sizeof(void*)) return 0;
  void* ptr = nullptr;
  std::memcpy(&ptr, p->data, sizeof ptr);
  k->key = *static_cast<std::shared_ptr<DeviceKey>*>(ptr);
  return 1;
}

const OSSL_PARAM* km_import_types(int) {
  static const OSSL_PARAM types[] = {OSSL_PARAM_octet_string(kKeyParam, nullptr, 0), OSSL_PARAM_END};
  return types;
}

// Only the public half leaves: OpenSSL uses it to encode the public key and to compare keys.
int km_export(void* keydata, int selection, OSSL_CALLBACK* cb, void* cbarg) {
  auto* k = static_cast<KeyData*>(keydata);
  if (!k || !k->key) return 0;
  if ((selection & (OSSL_KEYMGMT_SELECT_PUBLIC_KEY | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS)) == 0) return 0;
  OSSL_PARAM* params = nullptr;
  if (EVP_PKEY_todata(k->key->public_key(), EVP_PKEY_PUBLIC_KEY, &params) != 1) return 0;
  int ok = cb(params, cbarg);
  OSSL_PARAM_free(params);
  return ok;
}

const OSSL_PARAM* km_export_types_ec(int) {
  static const OSSL_PARAM types[] = {
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_END,
  };
  return types;
}

const OSSL_PARAM* km_export_types_rsa(int) {
  static const OSSL_PARAM types[] = {
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
      OSSL_PARAM_END,
  };
  return types;
}

const char* digest_name_for(const KeySpec& spec) {
  if (spec.type == KeySpec::Type::Ec) return spec.bits >= 521 ? "SHA512" : spec.bits >= 384 ? "SHA384" : "SHA256";
  return spec.bits >= 4096 ? "SHA512" : spec.bits >= 3072 ? "SHA384" : "SHA256";
}

int km_get_params(void* keydata, OSSL_PARAM params[]) {
  auto* k = static_cast<KeyData*>(keydata);
  if (!k || !k->key) return 0;
  // Everything public (bits, security bits, maximum signature size, group, point, modulus) is what the
  // software public key says; only the default digest is ours.
  if (EVP_PKEY_get_params(k->key->public_key(), params) != 1) return 0;
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST))
    if (OSSL_PARAM_set_utf8_string(p, digest_name_for(k->key->spec())) != 1) return 0;
  return 1;
}

const OSSL_PARAM* km_gettable_params(void*) {
  static const OSSL_PARAM types[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
      OSSL_PARAM_END,
  };
  return types;
}

const char* km_query_ec(int) { return "HWCA-TPM2-ECDSA"; }
const char* km_query_rsa(int) { return "HWCA-TPM2-RSA"; }

#define HWCA_FN(f) reinterpret_cast<void (*)(void)>(f)

const OSSL_DISPATCH kKeymgmtEc[] = {
    {OSSL_FUNC_KEYMGMT_NEW, HWCA_FN(km_new)},
    {OSSL_FUNC_KEYMGMT_FREE, HWCA_FN(km_free)},
    {OSSL_FUNC_KEYMGMT_HAS, HWCA_FN(km_has)},
    {OSSL_FUNC_KEYMGMT_IMPORT, HWCA_FN(km_import)},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, HWCA_FN(km_import_types)},
    {OSSL_FUNC_KEYMGMT_EXPORT, HWCA_FN(km_export)},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, HWCA_FN(km_export_types_ec)},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, HWCA_FN(km_get_params)},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, HWCA_FN(km_gettable_params)},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, HWCA_FN(km_query_ec)},
    {0, nullptr},
};

const OSSL_DISPATCH kKeymgmtRsa[] = {
    {OSSL_FUNC_KEYMGMT_NEW, HWCA_FN(km_new)},
    {OSSL_FUNC_KEYMGMT_FREE, HWCA_FN(km_free)},
    {OSSL_FUNC_KEYMGMT_HAS, HWCA_FN(km_has)},
    {OSSL_FUNC_KEYMGMT_IMPORT, HWCA_FN(km_import)},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, HWCA_FN(km_import_types)},
    {OSSL_FUNC_KEYMGMT_EXPORT, HWCA_FN(km_export)},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, HWCA_FN(km_export_types_rsa)},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, HWCA_FN(km_get_params)},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, HWCA_FN(km_gettable_params)},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, HWCA_FN(km_query_rsa)},
    {0, nullptr},
};

// ---------------------------------------------------------------------------------------------
// Signatures: OpenSSL's digest (hashed here, in software), the TPM's signature.

struct SigCtx {
  std::shared_ptr<DeviceKey> key;
  EVP_MD* md = nullptr;
  EVP_MD_CTX* mdctx = nullptr;
  ~SigCtx() {
    EVP_MD_CTX_free(mdctx);
    EVP_MD_free(md);
  }
};

void* sig_newctx(void*, const char*) { return new (std::nothrow) SigCtx; }
void sig_freectx(void* ctx) { delete static_cast<SigCtx*>(ctx); }

void* sig_dupctx(void* ctx) {
  auto* src = static_cast<SigCtx*>(ctx);
  auto* dst = new (std::nothrow) SigCtx;
  if (!dst) return nullptr;
  dst->key = src->key;
  if (src->md) {
    if (EVP_MD_up_ref(src->md) != 1) {
      delete dst;
      return nullptr;
    }
    dst->md = src->md;
  }
  if (src->mdctx) {
    dst->mdctx = EVP_MD_CTX_new();
    if (!dst->mdctx || EVP_MD_CTX_copy_ex(dst->mdctx, src->mdctx) != 1) {
      delete dst;
      return nullptr;
    }
  }
  return dst;
}

bool set_md(SigCtx* c, const char* name) {
  EVP_MD* md = EVP_MD_fetch(nullptr, name, nullptr);
  if (!md) return false;
  int nid = EVP_MD_get_type(md);
  if (nid != NID_sha256 && nid != NID_sha384 && nid != NID_sha512) {
    EVP_MD_free(md);
    raise_error(std::string("the TPM backend signs with SHA-256, SHA-384 or SHA-512, not ") + name);
    return false;
  }
  EVP_MD_free(c->md);
  c->md = md;
  return true;
}

bool take_key(SigCtx* c, void* provkey) {
  if (provkey) {
    auto* k = static_cast<KeyData*>(provkey);
    if (!k->key) return false;
    c->key = k->key;
  }
  return c->key != nullptr;
}

int sig_digest_sign_init(void* ctx, const char* mdname, void* provkey, const OSSL_PARAM[]) {
  auto* c = static_cast<SigCtx*>(ctx);
  if (!take_key(c, provkey)) return 0;
  if (!set_md(c, mdname && *mdname ? mdname : digest_name_for(c->key->spec()))) return 0;
  if (!c->mdctx) c->mdctx = EVP_MD_CTX_new();
  if (!c->mdctx || EVP_DigestInit_ex(c->mdctx, c->md, nullptr) != 1) return 0;
  return 1;
}

int sig_digest_sign_update(void* ctx, const unsigned char* data, size_t len) {
  auto* c = static_cast<SigCtx*>(ctx);
  return c->mdctx && EVP_DigestUpdate(c->mdctx, data, len) == 1 ? 1 : 0;
}

size_t max_signature_size(const SigCtx* c) {
  int size = EVP_PKEY_get_size(c->key->public_key());
  return size > 0 ? static_cast<size_t>(size) : 0;
}

int finish(SigCtx* c, const std::string& digest, unsigned char* sig, size_t* siglen, size_t sigsize) {
  return guarded([&] {
    std::string out = c->key->sign_digest(c->md, digest);
    if (out.size() > sigsize) throw Error(ErrorKind::Internal, "the signature buffer is too small");
    std::memcpy(sig, out.data(), out.size());
    *siglen = out.size();
    return 1;
  });
}

int sig_digest_sign_final(void* ctx, unsigned char* sig, size_t* siglen, size_t sigsize) {
  auto* c = static_cast<SigCtx*>(ctx);
  if (!c->key || !c->mdctx || !c->md) return 0;
  if (!sig) {
    *siglen = max_signature_size(c);
    return *siglen > 0 ? 1 : 0;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (EVP_DigestFinal_ex(c->mdctx, md, &mdlen) != 1) return 0;
  return finish(c, std::string(reinterpret_cast<char*>(md), mdlen), sig, siglen, sigsize);
}

int sig_sign_init(void* ctx, void* provkey, const OSSL_PARAM[]) {
  auto* c = static_cast<SigCtx*>(ctx);
  return take_key(c, provkey) ? 1 : 0;
}

// EVP_PKEY_sign: `tbs` is already a digest; its length says which one unless the caller set it.
int sig_sign(void* ctx, unsigned char* sig, size_t* siglen, size_t sigsize, const unsigned char* tbs, size_t tbslen) {
  auto* c = static_cast<SigCtx*>(ctx);
  if (!c->key) return 0;
  if (!sig) {
    *siglen = max_signature_size(c);
    return *siglen > 0 ? 1 : 0;
  }
  if (!c->md) {
    const char* name = tbslen == 32 ? "SHA256" : tbslen == 48 ? "SHA384" : tbslen == 64 ? "SHA512" : nullptr;
    if (!name || !set_md(c, name)) return 0;
  }
  if (static_cast<size_t>(EVP_MD_get_size(c->md)) != tbslen) return 0;
  return finish(c, std::string(reinterpret_cast<const char*>(tbs), tbslen), sig, siglen, sigsize);
}

int sig_get_ctx_params(void* ctx, OSSL_PARAM params[]) {
  auto* c = static_cast<SigCtx*>(ctx);
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) {
    if (!c->key || !c->md) return 0;
    bool rsa = c->key->spec().type == KeySpec::Type::Rsa;
    int sig_nid = NID_undef;
    if (OBJ_find_sigid_by_algs(&sig_nid, EVP_MD_get_type(c->md), rsa ? EVP_PKEY_RSA : EVP_PKEY_EC) != 1) return 0;
    std::unique_ptr<X509_ALGOR, OsslDeleter<&X509_ALGOR_free>> alg(X509_ALGOR_new());
    // RFC 4055: sha*WithRSAEncryption carries NULL parameters; RFC 5758: ecdsa-with-SHA* carries none.
    if (!alg || X509_ALGOR_set0(alg.get(), OBJ_nid2obj(sig_nid), rsa ? V_ASN1_NULL : V_ASN1_UNDEF, nullptr) != 1)
      return 0;
    unsigned char* der = nullptr;
    int len = i2d_X509_ALGOR(alg.get(), &der);
    if (len <= 0) return 0;
    int ok = OSSL_PARAM_set_octet_string(p, der, static_cast<size_t>(len));
    OPENSSL_free(der);
    if (ok != 1) return 0;
  }
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) {
    if (!c->md || OSSL_PARAM_set_utf8_string(p, EVP_MD_get0_name(c->md)) != 1) return 0;
  }
  return 1;
}

const OSSL_PARAM* sig_gettable_ctx_params(void*, void*) {
  static const OSSL_PARAM types[] = {
      OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_END,
  };
  return types;
}

int sig_set_ctx_params(void* ctx, const OSSL_PARAM params[]) {
  auto* c = static_cast<SigCtx*>(ctx);
  if (!params) return 1;
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) {
    const char* name = nullptr;
    if (OSSL_PARAM_get_utf8_string_ptr(p, &name) != 1 || !set_md(c, name)) return 0;
  }
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) {
    // Only PKCS#1 v1.5 (the TPM's RSASSA).
    int mode = 0;
    const char* name = nullptr;
    if (OSSL_PARAM_get_int(p, &mode) == 1) {
      if (mode != RSA_PKCS1_PADDING) return 0;
    } else if (OSSL_PARAM_get_utf8_string_ptr(p, &name) == 1) {
      if (std::strcmp(name, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) != 0) return 0;
    } else {
      return 0;
    }
  }
  return 1;
}

const OSSL_PARAM* sig_settable_ctx_params(void*, void*) {
  static const OSSL_PARAM types[] = {
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_END,
  };
  return types;
}

const OSSL_DISPATCH kSignature[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, HWCA_FN(sig_newctx)},
    {OSSL_FUNC_SIGNATURE_FREECTX, HWCA_FN(sig_freectx)},
    {OSSL_FUNC_SIGNATURE_DUPCTX, HWCA_FN(sig_dupctx)},
    {OSSL_FUNC_SIGNATURE_SIGN_INIT, HWCA_FN(sig_sign_init)},
    {OSSL_FUNC_SIGNATURE_SIGN, HWCA_FN(sig_sign)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, HWCA_FN(sig_digest_sign_init)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, HWCA_FN(sig_digest_sign_update)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, HWCA_FN(sig_digest_sign_final)},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, HWCA_FN(sig_get_ctx_params)},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, HWCA_FN(sig_gettable_ctx_params)},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, HWCA_FN(sig_set_ctx_params)},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, HWCA_FN(sig_settable_ctx_params)},
    {0, nullptr},
};

// ---------------------------------------------------------------------------------------------
// The provider itself.

const OSSL_ALGORITHM kKeymgmtAlgorithms[] = {
    {"EC:id-ecPublicKey:1.2.840.10045.2.1", "provider=hwca-tpm2", kKeymgmtEc, "TPM 2.0 EC key"},
    {"RSA:rsaEncryption:1.2.840.113549.1.1.1", "provider=hwca-tpm2", kKeymgmtRsa, "TPM 2.0 RSA key"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM kSignatureAlgorithms[] = {
    {"HWCA-TPM2-ECDSA", "provider=hwca-tpm2", kSignature, "ECDSA in a TPM 2.0"},
    {"HWCA-TPM2-RSA", "provider=hwca-tpm2", kSignature, "RSASSA-PKCS1-v1_5 in a TPM 2.0"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM* prov_query(void*, int operation_id, int* no_cache) {
  *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT: return kKeymgmtAlgorithms;
    case OSSL_OP_SIGNATURE: return kSignatureAlgorithms;
    default: return nullptr;
  }
}

void prov_teardown(void*) {}

const OSSL_DISPATCH kProvider[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, HWCA_FN(prov_query)},
    {OSSL_FUNC_PROVIDER_TEARDOWN, HWCA_FN(prov_teardown)},
    {0, nullptr},
};

int provider_init(const OSSL_CORE_HANDLE*, const OSSL_DISPATCH*, const OSSL_DISPATCH** out, void** provctx) {
  static int context_tag = 0;
  *out = kProvider;
  *provctx = &context_tag;
  return 1;
}

#undef HWCA_FN

}  // namespace

Provider::Provider() {
  m_libctx = OSSL_LIB_CTX_new();
  if (!m_libctx) throw_openssl(ErrorKind::Internal, "OSSL_LIB_CTX_new");
  if (OSSL_PROVIDER_add_builtin(m_libctx, kProviderName, &provider_init) != 1 ||
      !(m_ours = OSSL_PROVIDER_load(m_libctx, kProviderName)) ||
      // The default provider in the same context encodes our keys' public halves (i2d_PUBKEY).
      !(m_default = OSSL_PROVIDER_load(m_libctx, "default"))) {
    std::string detail = drain_openssl_errors();
    if (m_ours) OSSL_PROVIDER_unload(m_ours);
    OSSL_LIB_CTX_free(m_libctx);
    throw Error(ErrorKind::Internal, "cannot set up the hwca-tpm2 OpenSSL provider: " + detail);
  }
}

Provider::~Provider() {
  OSSL_PROVIDER_unload(m_default);
  OSSL_PROVIDER_unload(m_ours);
  OSSL_LIB_CTX_free(m_libctx);
}

EVP_PKEY_ptr Provider::make_pkey(std::shared_ptr<DeviceKey> key) {
  const char* type = key->spec().type == KeySpec::Type::Rsa ? "RSA" : "EC";
  EVP_PKEY_CTX_ptr ctx(EVP_PKEY_CTX_new_from_name(m_libctx, type, "provider=hwca-tpm2"));
  void* ref = &key;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(kKeyParam, &ref, sizeof ref),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 || EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params) != 1)
    throw_openssl(ErrorKind::Internal, "making an OpenSSL key for the TPM key");
  return EVP_PKEY_ptr(raw);
}

}  // namespace hwca::tokens::tpm2
