#include "tokens/tpm2/esys.h"

#include "tokens/tpm2/uri.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <cstdio>
#include <cstring>

namespace hwca::tokens::tpm2 {

namespace {

constexpr TPMA_OBJECT kSigningKeyAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                              TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                              TPMA_OBJECT_SIGN_ENCRYPT;

// tpm2-openssl's (and tpm2-tss-engine's) primary storage key template: a blob made under any other
// primary does not load (TPM_RC_INTEGRITY), so this must stay byte for byte what they use.
TPM2B_PUBLIC primary_ecc_template() {
  TPM2B_PUBLIC t{};
  TPMT_PUBLIC& p = t.publicArea;
  p.type = TPM2_ALG_ECC;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_NODA |
                       TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN;
  p.authPolicy.size = 0;
  p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
  p.parameters.eccDetail.symmetric.keyBits.aes = 128;
  p.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  p.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  p.unique.ecc.x.size = 0;
  p.unique.ecc.y.size = 0;
  return t;
}

TPM2_ECC_CURVE curve_for(int bits) {
  switch (bits) {
    case 256: return TPM2_ECC_NIST_P256;
    case 384: return TPM2_ECC_NIST_P384;
    case 521: return TPM2_ECC_NIST_P521;
    default: throw Error(ErrorKind::BadInput, "unsupported EC curve size " + std::to_string(bits));
  }
}

template <typename T>
struct EsysFree {
  T* p = nullptr;
  ~EsysFree() { Esys_Free(p); }
};

std::string as_bytes(const void* data, size_t len) { return std::string(static_cast<const char*>(data), len); }

}  // namespace

std::string rc_text(TSS2_RC rc) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", rc);
  const char* text = Tss2_RC_Decode(rc);
  return std::string(buf) + " (" + (text ? text : "unknown") + ")";
}

void throw_rc(ErrorKind kind, const char* call, TSS2_RC rc, const std::string& context) {
  std::string message = std::string(call) + " failed: " + rc_text(rc);
  if (!context.empty()) message += ": " + context;
  const char* text = Tss2_RC_Decode(rc);
  throw Error(kind, message, call, rc, text ? text : "");
}

bool is_connection_error(TSS2_RC rc) {
  TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
  if (layer == TSS2_TCTI_RC_LAYER) return true;
  if (layer == TSS2_TPM_RC_LAYER) return false;
  TSS2_RC base = rc & 0xffffu;
  return base == TSS2_BASE_RC_NO_CONNECTION || base == TSS2_BASE_RC_IO_ERROR || base == TSS2_BASE_RC_TRY_AGAIN;
}

bool is_unusable_context(TSS2_RC rc) {
  return (rc & TSS2_RC_LAYER_MASK) == TSS2_ESAPI_RC_LAYER && (rc & 0xffffu) == TSS2_BASE_RC_BAD_SEQUENCE;
}

TSS2_RC rc_base(TSS2_RC rc) {
  if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER) return rc;
  if (rc & TPM2_RC_FMT1) return rc & (TPM2_RC_FMT1 | 0x3fu);
  return rc;
}

bool is_auth_failure(TSS2_RC rc) {
  TSS2_RC base = rc_base(rc);
  return base == TPM2_RC_AUTH_FAIL || base == TPM2_RC_BAD_AUTH;
}

// ---------------------------------------------------------------------------------------------

Connection::Connection(std::string tcti) : m_tcti(std::move(tcti)) {}

Connection::~Connection() { disconnect(); }

Connection::Hold::Hold(Connection& c)
    : m_connection(c), m_kept_already(c.m_keeper.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
  if (!m_kept_already) c.m_mutex.lock();
}

Connection::Hold::~Hold() {
  if (m_kept_already) return;
  if (SigningRun::keep(m_connection))
    m_connection.m_keeper.store(std::this_thread::get_id(), std::memory_order_relaxed);
  else
    m_connection.m_mutex.unlock();
}

void Connection::release_after_run() noexcept {
  m_keeper.store(std::thread::id(), std::memory_order_relaxed);
  m_mutex.unlock();
}

bool Connection::context_lost(const Error& e) {
  const auto rc = static_cast<TSS2_RC>(e.backend_code());
  return !e.call().empty() && (is_connection_error(rc) || is_unusable_context(rc));
}

void Connection::throw_context_lost(const Error& e) const {
  const auto rc = static_cast<TSS2_RC>(e.backend_code());
  const std::string why = is_connection_error(rc) ? "the link to the TPM through TCTI '" + m_tcti + "' broke"
                                                  : "an earlier command on the connection to the TPM through TCTI '" +
                                                        m_tcti + "' ended half-way";
  throw Error(e.kind(), std::string(e.what()) + " (" + why + ")", e.call(), e.backend_code(), e.code_name());
}

ESYS_CONTEXT* Connection::context() {
  if (m_esys) return m_esys;
  TSS2_RC rc = Tss2_TctiLdr_Initialize(m_tcti.c_str(), &m_tcti_ctx);
  if (rc != TSS2_RC_SUCCESS) {
    m_tcti_ctx = nullptr;
    throw_rc(ErrorKind::Token, "Tss2_TctiLdr_Initialize", rc, "cannot reach the TPM through TCTI '" + m_tcti + "'");
  }
  rc = Esys_Initialize(&m_esys, m_tcti_ctx, nullptr);
  if (rc != TSS2_RC_SUCCESS) {
    m_esys = nullptr;
    Tss2_TctiLdr_Finalize(&m_tcti_ctx);
    throw_rc(ErrorKind::Token, "Esys_Initialize", rc, "TCTI '" + m_tcti + "'");
  }
  return m_esys;
}

ESYS_TR Connection::persistent(ESYS_CONTEXT* ctx, std::uint32_t handle, const std::string& what) {
  auto it = m_persistent.find(handle);
  if (it != m_persistent.end()) {
    // ESAPI hands out one ESYS_TR per TPM handle, so another Object for this handle that was closed
    // since (key checks, custody) closed ours too. Checking is local, no TPM command.
    TPM2_HANDLE now = 0;
    if (Esys_TR_GetTpmHandle(ctx, it->second, &now) == TSS2_RC_SUCCESS && now == handle) return it->second;
    m_persistent.erase(it);
  }
  Object opened = open_persistent(ctx, handle, what);
  ESYS_TR tr = opened.release();
  m_persistent.emplace(handle, tr);
  return tr;
}

void Connection::forget_persistent() noexcept {
  for (auto& [handle, tr] : m_persistent)
    if (m_esys) Esys_TR_Close(m_esys, &tr);
  m_persistent.clear();
}

void Connection::disconnect() noexcept {
  forget_persistent();
  if (m_esys) Esys_Finalize(&m_esys);
  if (m_tcti_ctx) Tss2_TctiLdr_Finalize(&m_tcti_ctx);
  m_esys = nullptr;
  m_tcti_ctx = nullptr;
}

Object& Object::operator=(Object&& o) noexcept {
  if (this != &o) {
    reset();
    m_ctx = o.m_ctx;
    m_tr = std::exchange(o.m_tr, ESYS_TR_NONE);
    m_kind = o.m_kind;
  }
  return *this;
}

void Object::reset() noexcept {
  if (m_tr == ESYS_TR_NONE || !m_ctx) return;
  if (m_kind == Kind::Transient)
    Esys_FlushContext(m_ctx, m_tr);
  else
    Esys_TR_Close(m_ctx, &m_tr);
  m_tr = ESYS_TR_NONE;
}

// ---------------------------------------------------------------------------------------------

bool persistent_exists(ESYS_CONTEXT* ctx, std::uint32_t handle) {
  TPMI_YES_NO more = TPM2_NO;
  EsysFree<TPMS_CAPABILITY_DATA> data;
  TSS2_RC rc = Esys_GetCapability(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, handle, 1, &more,
                                  &data.p);
  if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Token, "Esys_GetCapability", rc, "listing persistent handles");
  return data.p && data.p->data.handles.count > 0 && data.p->data.handles.handle[0] == handle;
}

Object open_persistent(ESYS_CONTEXT* ctx, std::uint32_t handle, const std::string& what) {
  ESYS_TR tr = ESYS_TR_NONE;
  TSS2_RC rc = Esys_TR_FromTPMPublic(ctx, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr);
  if (rc != TSS2_RC_SUCCESS) {
    if (rc_base(rc) == TPM2_RC_HANDLE)
      throw Error(ErrorKind::NotFound,
                  "no key at TPM handle " + handle_hex(handle) +
                      (what.rfind("TPM handle", 0) == 0 ? std::string() : " (" + what + ")"),
                  "Esys_TR_FromTPMPublic", rc, Tss2_RC_Decode(rc));
    throw_rc(ErrorKind::Token, "Esys_TR_FromTPMPublic", rc, what);
  }
  return Object(ctx, tr, Object::Kind::Persistent);
}

std::uint32_t default_parent(ESYS_CONTEXT* ctx) {
  return persistent_exists(ctx, kSrkHandle) ? kSrkHandle : kOwnerHierarchy;
}

Object storage_parent(ESYS_CONTEXT* ctx, std::uint32_t parent) {
  if (parent >= 0x81000000u && parent <= 0x81ffffffu)
    return open_persistent(ctx, parent, "the storage parent");
  if (parent != kOwnerHierarchy)
    throw Error(ErrorKind::BadInput, "unsupported parent " + handle_hex(parent) +
                                         " (hwca loads keys under the owner hierarchy or a persistent storage key)");
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC tmpl = primary_ecc_template();
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  ESYS_TR tr = ESYS_TR_NONE;
  TSS2_RC rc = Esys_CreatePrimary(ctx, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
                                  &tmpl, &outside, &pcrs, &tr, nullptr, nullptr, nullptr, nullptr);
  if (rc != TSS2_RC_SUCCESS) {
    if (is_auth_failure(rc))
      throw_rc(ErrorKind::Token, "Esys_CreatePrimary", rc,
               "the owner hierarchy has an auth value; hwca needs it empty, or a storage key at 0x81000001");
    throw_rc(ErrorKind::Token, "Esys_CreatePrimary", rc, "creating the owner storage primary key");
  }
  return Object(ctx, tr, Object::Kind::Transient);
}

TPM2B_PUBLIC signing_key_template(const KeySpec& spec) {
  TPM2B_PUBLIC t{};
  TPMT_PUBLIC& p = t.publicArea;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = kSigningKeyAttributes;
  p.authPolicy.size = 0;
  if (spec.type == KeySpec::Type::Rsa) {
    p.type = TPM2_ALG_RSA;
    p.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
    p.parameters.rsaDetail.keyBits = static_cast<TPMI_RSA_KEY_BITS>(spec.bits);
    p.parameters.rsaDetail.exponent = 0;  // 65537
    p.unique.rsa.size = 0;
  } else {
    p.type = TPM2_ALG_ECC;
    p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    p.parameters.eccDetail.curveID = curve_for(spec.bits);
    p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    p.unique.ecc.x.size = 0;
    p.unique.ecc.y.size = 0;
  }
  return t;
}

void require_supported(ESYS_CONTEXT* ctx, const KeySpec& spec) {
  TPM2B_PUBLIC t = signing_key_template(spec);
  TPMT_PUBLIC_PARMS parms{};
  parms.type = t.publicArea.type;
  parms.parameters = t.publicArea.parameters;
  TSS2_RC rc = Esys_TestParms(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &parms);
  if (rc == TSS2_RC_SUCCESS) return;
  if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER)
    throw Error(ErrorKind::BadInput,
                "the TPM does not support " + spec.name() + " keys (Esys_TestParms: " + rc_text(rc) +
                    "); use one it supports, e.g. ecdsa-p256 or rsa-2048",
                "Esys_TestParms", rc, Tss2_RC_Decode(rc));
  throw_rc(ErrorKind::Token, "Esys_TestParms", rc, "checking whether the TPM supports " + spec.name());
}

KeyBlob create_key(ESYS_CONTEXT* ctx, const Object& parent, const TPM2B_PUBLIC& tmpl, const std::string& auth) {
  TPM2B_SENSITIVE_CREATE sensitive{};
  if (auth.size() > sizeof(sensitive.sensitive.userAuth.buffer))
    throw Error(ErrorKind::BadInput, "the auth value is too long for a TPM key");
  sensitive.sensitive.userAuth.size = static_cast<UINT16>(auth.size());
  std::memcpy(sensitive.sensitive.userAuth.buffer, auth.data(), auth.size());
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  EsysFree<TPM2B_PRIVATE> priv;
  EsysFree<TPM2B_PUBLIC> pub;
  TSS2_RC rc = Esys_Create(ctx, parent.tr(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &tmpl, &outside,
                           &pcrs, &priv.p, &pub.p, nullptr, nullptr, nullptr);
  OPENSSL_cleanse(&sensitive, sizeof sensitive);
  if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Token, "Esys_Create", rc, "creating the key");
  KeyBlob blob;
  blob.pub = *pub.p;
  blob.priv = *priv.p;
  return blob;
}

Object load_key(ESYS_CONTEXT* ctx, const Object& parent, const KeyBlob& blob, const std::string& what) {
  ESYS_TR tr = ESYS_TR_NONE;
  TSS2_RC rc = Esys_Load(ctx, parent.tr(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &blob.priv, &blob.pub, &tr);
  if (rc != TSS2_RC_SUCCESS) {
    if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && !is_connection_error(rc)) {
      TSS2_RC base = rc_base(rc);
      if (base == TPM2_RC_INTEGRITY || base == TPM2_RC_SIZE || base == TPM2_RC_VALUE || base == TPM2_RC_KEY ||
          base == TPM2_RC_BINDING)
        throw_rc(ErrorKind::BadInput, "Esys_Load", rc,
                 "this TPM cannot load " + what + " (it was made by another TPM, or under another parent)");
    }
    throw_rc(ErrorKind::Token, "Esys_Load", rc, "loading " + what);
  }
  return Object(ctx, tr, Object::Kind::Transient);
}

void make_persistent(ESYS_CONTEXT* ctx, const Object& key, std::uint32_t handle) {
  ESYS_TR persistent = ESYS_TR_NONE;
  TSS2_RC rc = Esys_EvictControl(ctx, ESYS_TR_RH_OWNER, key.tr(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, handle,
                                 &persistent);
  if (rc != TSS2_RC_SUCCESS) {
    if (rc_base(rc) == TPM2_RC_NV_DEFINED)
      throw Error(ErrorKind::Conflict,
                  "TPM handle " + handle_hex(handle) + " is already occupied; hwca never overwrites keys (free it with `tpm2_evictcontrol -C o -c " +
                      handle_hex(handle) + "` if that key is no longer needed)",
                  "Esys_EvictControl", rc, Tss2_RC_Decode(rc));
    throw_rc(ErrorKind::Token, "Esys_EvictControl", rc, "making the key persistent at " + handle_hex(handle));
  }
  Esys_TR_Close(ctx, &persistent);
}

void evict_persistent(ESYS_CONTEXT* ctx, Object& key, std::uint32_t handle) {
  ESYS_TR none = ESYS_TR_NONE;
  TSS2_RC rc = Esys_EvictControl(ctx, ESYS_TR_RH_OWNER, key.tr(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, handle, &none);
  if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Token, "Esys_EvictControl", rc, "freeing TPM handle " + handle_hex(handle));
  if (none != ESYS_TR_NONE) Esys_TR_Close(ctx, &none);
  key.reset();
}

std::vector<std::uint32_t> parent_candidates(ESYS_CONTEXT* ctx) {
  if (persistent_exists(ctx, kSrkHandle)) return {kSrkHandle, kOwnerHierarchy};
  return {kOwnerHierarchy};
}

TPM2B_PRIVATE change_auth(ESYS_CONTEXT* ctx, const Object& key, const Object& parent, const std::string& new_auth,
                          const std::string& what) {
  TPM2B_AUTH value{};
  if (new_auth.empty() || new_auth.size() > sizeof(value.buffer))
    throw Error(ErrorKind::BadInput, "the new auth value must be 1 to " + std::to_string(sizeof(value.buffer)) + " bytes");
  value.size = static_cast<UINT16>(new_auth.size());
  std::memcpy(value.buffer, new_auth.data(), new_auth.size());
  EsysFree<TPM2B_PRIVATE> priv;
  TSS2_RC rc = Esys_ObjectChangeAuth(ctx, key.tr(), parent.tr(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &value, &priv.p);
  OPENSSL_cleanse(&value, sizeof value);
  if (rc != TSS2_RC_SUCCESS) {
    if (is_auth_failure(rc))
      throw_rc(ErrorKind::Token, "Esys_ObjectChangeAuth", rc,
               "wrong auth value for " + what + " (not retried: the TPM counts failures towards its dictionary-attack lockout)");
    if (rc_base(rc) == TPM2_RC_LOCKOUT)
      throw_rc(ErrorKind::Token, "Esys_ObjectChangeAuth", rc, "the TPM is in dictionary-attack lockout; wait, or reset it with the lockout auth");
    if (rc_base(rc) == TPM2_RC_TYPE)
      throw_rc(ErrorKind::BadInput, "Esys_ObjectChangeAuth", rc, "this storage parent is not the parent of " + what);
    throw_rc(ErrorKind::Token, "Esys_ObjectChangeAuth", rc, "changing the auth value of " + what);
  }
  TPM2B_PRIVATE out = *priv.p;
  OPENSSL_cleanse(priv.p, sizeof *priv.p);
  return out;
}

bool is_wrong_parent(const Error& e) {
  return e.call() == "Esys_ObjectChangeAuth" && rc_base(static_cast<TSS2_RC>(e.backend_code())) == TPM2_RC_TYPE;
}

TPM2B_PUBLIC read_public(ESYS_CONTEXT* ctx, const Object& key) {
  EsysFree<TPM2B_PUBLIC> pub;
  EsysFree<TPM2B_NAME> name;
  EsysFree<TPM2B_NAME> qualified;
  TSS2_RC rc = Esys_ReadPublic(ctx, key.tr(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub.p, &name.p, &qualified.p);
  if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Token, "Esys_ReadPublic", rc);
  return *pub.p;
}

void set_auth(ESYS_CONTEXT* ctx, ESYS_TR key, const std::string& auth) {
  TPM2B_AUTH value{};
  if (auth.size() > sizeof(value.buffer)) throw Error(ErrorKind::BadInput, "the auth value is too long for a TPM key");
  value.size = static_cast<UINT16>(auth.size());
  std::memcpy(value.buffer, auth.data(), auth.size());
  TSS2_RC rc = Esys_TR_SetAuth(ctx, key, &value);
  OPENSSL_cleanse(&value, sizeof value);
  if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Token, "Esys_TR_SetAuth", rc);
}

std::string sign_digest(ESYS_CONTEXT* ctx, ESYS_TR key, const TPMT_PUBLIC& pub, const EVP_MD* md,
                        const std::string& digest, const std::string& what) {
  TPMI_ALG_HASH hash = TPM2_ALG_NULL;
  switch (EVP_MD_get_type(md)) {
    case NID_sha256: hash = TPM2_ALG_SHA256; break;
    case NID_sha384: hash = TPM2_ALG_SHA384; break;
    case NID_sha512: hash = TPM2_ALG_SHA512; break;
    default:
      throw Error(ErrorKind::BadInput, std::string("the TPM backend signs with SHA-256, SHA-384 or SHA-512, not ") +
                                           EVP_MD_get0_name(md));
  }
  TPM2B_DIGEST d{};
  if (digest.size() > sizeof d.buffer) throw Error(ErrorKind::Internal, "digest too long");
  d.size = static_cast<UINT16>(digest.size());
  std::memcpy(d.buffer, digest.data(), digest.size());
  TPMT_SIG_SCHEME scheme{};
  if (pub.type == TPM2_ALG_ECC) {
    scheme.scheme = TPM2_ALG_ECDSA;
    scheme.details.ecdsa.hashAlg = hash;
  } else {
    scheme.scheme = TPM2_ALG_RSASSA;
    scheme.details.rsassa.hashAlg = hash;
  }
  TPMT_TK_HASHCHECK validation{};
  validation.tag = TPM2_ST_HASHCHECK;
  validation.hierarchy = TPM2_RH_NULL;
  validation.digest.size = 0;
  EsysFree<TPMT_SIGNATURE> sig;
  TSS2_RC rc = Esys_Sign(ctx, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &d, &scheme, &validation, &sig.p);
  if (rc != TSS2_RC_SUCCESS) {
    if (is_auth_failure(rc))
      throw_rc(ErrorKind::Token, "Esys_Sign", rc,
               "wrong auth value for " + what +
                   " (not retried: the TPM counts failures towards its dictionary-attack lockout)");
    if (rc_base(rc) == TPM2_RC_LOCKOUT)
      throw_rc(ErrorKind::Token, "Esys_Sign", rc, "the TPM is in dictionary-attack lockout; wait, or reset it with the lockout auth");
    throw_rc(ErrorKind::Token, "Esys_Sign", rc, "signing with " + what);
  }
  if (pub.type == TPM2_ALG_ECC) {
    const TPMS_SIGNATURE_ECC& ecc = sig.p->signature.ecdsa;
    BIGNUM_ptr r(BN_bin2bn(ecc.signatureR.buffer, ecc.signatureR.size, nullptr));
    BIGNUM_ptr s(BN_bin2bn(ecc.signatureS.buffer, ecc.signatureS.size, nullptr));
    std::unique_ptr<ECDSA_SIG, OsslDeleter<&ECDSA_SIG_free>> es(ECDSA_SIG_new());
    if (!r || !s || !es || ECDSA_SIG_set0(es.get(), r.get(), s.get()) != 1)
      throw_openssl(ErrorKind::Internal, "ECDSA_SIG_set0");
    r.release();
    s.release();
    unsigned char* der = nullptr;
    int len = i2d_ECDSA_SIG(es.get(), &der);
    if (len <= 0) throw_openssl(ErrorKind::Internal, "i2d_ECDSA_SIG");
    std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
    return out;
  }
  const TPM2B_PUBLIC_KEY_RSA& block = sig.p->signature.rsassa.sig;
  return as_bytes(block.buffer, block.size);
}

// ---------------------------------------------------------------------------------------------

KeySpec spec_of(const TPMT_PUBLIC& pub) {
  if (pub.type == TPM2_ALG_RSA) {
    int bits = pub.parameters.rsaDetail.keyBits;
    if (bits < 2048) throw Error(ErrorKind::BadInput, "the TPM key is RSA-" + std::to_string(bits) + ", too weak for hwca");
    return {KeySpec::Type::Rsa, bits};
  }
  if (pub.type == TPM2_ALG_ECC) {
    switch (pub.parameters.eccDetail.curveID) {
      case TPM2_ECC_NIST_P256: return {KeySpec::Type::Ec, 256};
      case TPM2_ECC_NIST_P384: return {KeySpec::Type::Ec, 384};
      case TPM2_ECC_NIST_P521: return {KeySpec::Type::Ec, 521};
      default: throw Error(ErrorKind::BadInput, "the TPM key uses an EC curve hwca does not support");
    }
  }
  throw Error(ErrorKind::BadInput, "the TPM key is neither RSA nor ECC");
}

EVP_PKEY_ptr public_key_of(const TPMT_PUBLIC& pub) {
  KeySpec spec = spec_of(pub);
  EVP_PKEY* raw = nullptr;
  if (spec.type == KeySpec::Type::Rsa) {
    const TPM2B_PUBLIC_KEY_RSA& n = pub.unique.rsa;
    std::uint32_t exponent = pub.parameters.rsaDetail.exponent ? pub.parameters.rsaDetail.exponent : 65537u;
    BIGNUM_ptr bn_n(BN_bin2bn(n.buffer, n.size, nullptr));
    BIGNUM_ptr bn_e(BN_new());
    if (!bn_n || !bn_e || BN_set_word(bn_e.get(), exponent) != 1) throw_openssl(ErrorKind::Internal, "BN_bin2bn");
    std::unique_ptr<OSSL_PARAM_BLD, OsslDeleter<&OSSL_PARAM_BLD_free>> bld(OSSL_PARAM_BLD_new());
    if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1)
      throw_openssl(ErrorKind::Internal, "OSSL_PARAM_BLD");
    std::unique_ptr<OSSL_PARAM, OsslDeleter<&OSSL_PARAM_free>> params(OSSL_PARAM_BLD_to_param(bld.get()));
    EVP_PKEY_CTX_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
      throw_openssl(ErrorKind::Token, "rebuilding the RSA public key from the TPM");
    return EVP_PKEY_ptr(raw);
  }
  const size_t field = static_cast<size_t>((spec.bits + 7) / 8);
  const TPMS_ECC_POINT& point = pub.unique.ecc;
  if (point.x.size > field || point.y.size > field)
    throw Error(ErrorKind::BadInput, "the TPM key's EC point does not fit its curve");
  std::string encoded(1 + 2 * field, '\0');
  encoded[0] = 0x04;
  std::memcpy(encoded.data() + 1 + (field - point.x.size), point.x.buffer, point.x.size);
  std::memcpy(encoded.data() + 1 + field + (field - point.y.size), point.y.buffer, point.y.size);
  std::string group = spec.curve_name();
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, encoded.data(), encoded.size()),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY_CTX_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 || EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params) != 1)
    throw_openssl(ErrorKind::Token, "rebuilding the EC public key from the TPM");
  return EVP_PKEY_ptr(raw);
}

std::string marshal_public(const TPM2B_PUBLIC& pub) {
  std::string buf(sizeof(TPM2B_PUBLIC) + 16, '\0');
  size_t off = 0;
  TSS2_RC rc = Tss2_MU_TPM2B_PUBLIC_Marshal(&pub, reinterpret_cast<uint8_t*>(buf.data()), buf.size(), &off);
  if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Internal, "Tss2_MU_TPM2B_PUBLIC_Marshal", rc);
  buf.resize(off);
  return buf;
}

std::string marshal_private(const TPM2B_PRIVATE& priv) {
  std::string buf(sizeof(TPM2B_PRIVATE) + 16, '\0');
  size_t off = 0;
  TSS2_RC rc = Tss2_MU_TPM2B_PRIVATE_Marshal(&priv, reinterpret_cast<uint8_t*>(buf.data()), buf.size(), &off);
  if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Internal, "Tss2_MU_TPM2B_PRIVATE_Marshal", rc);
  buf.resize(off);
  return buf;
}

TPM2B_PUBLIC unmarshal_public(const std::string& bytes, const std::string& what) {
  TPM2B_PUBLIC pub{};
  size_t off = 0;
  TSS2_RC rc = Tss2_MU_TPM2B_PUBLIC_Unmarshal(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &off, &pub);
  if (rc != TSS2_RC_SUCCESS || off != bytes.size())
    throw Error(ErrorKind::BadInput, what + ": the public key part is not a TPM2B_PUBLIC");
  return pub;
}

TPM2B_PRIVATE unmarshal_private(const std::string& bytes, const std::string& what) {
  TPM2B_PRIVATE priv{};
  size_t off = 0;
  TSS2_RC rc = Tss2_MU_TPM2B_PRIVATE_Unmarshal(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &off, &priv);
  if (rc != TSS2_RC_SUCCESS || off != bytes.size())
    throw Error(ErrorKind::BadInput, what + ": the private key part is not a TPM2B_PRIVATE");
  return priv;
}

}  // namespace hwca::tokens::tpm2
