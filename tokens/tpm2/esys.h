// A thin C++ layer over tpm2-tss ESAPI: a connection (TCTI + ESYS context) with a lock and one reconnect,
// objects that are always flushed (transient) or closed (persistent), the few TPM commands the backend
// uses, and conversions between TPM public areas and OpenSSL keys. Every failure is an hwca::Error that
// names the failing call and carries its TSS2_RC: "Esys_Sign failed: 0x0000098e (tpm:session(1):...)".
#pragma once

#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/base/ossl.h"
#include "core/base/signing_run.h"

#include <tss2/tss2_esys.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace hwca::tokens::tpm2 {

inline constexpr std::uint32_t kOwnerHierarchy = 0x40000001;  // TPM2_RH_OWNER: "a transient primary"
inline constexpr std::uint32_t kSrkHandle = 0x81000001;       // the conventional persistent storage key

// "0x0000098e (tpm:session(1):the authorization HMAC check failed and DA counter incremented)"
std::string rc_text(TSS2_RC rc);
// Error(kind, "<call> failed: <rc_text>[ (<context>)]") with call and code set.
[[noreturn]] void throw_rc(ErrorKind kind, const char* call, TSS2_RC rc, const std::string& context = {});
// True for failures of the link to the TPM (TCTI layer, I/O, no connection): worth one reconnect.
bool is_connection_error(TSS2_RC rc);
// True when ESAPI refused a call because an earlier one on the same context ended half-way (a link that
// broke mid-command leaves the context in its internal-error state): the command was not sent, and only
// a new context helps.
bool is_unusable_context(TSS2_RC rc);
// True for TPM_RC_AUTH_FAIL / TPM_RC_BAD_AUTH (any session index).
bool is_auth_failure(TSS2_RC rc);
// The TPM response code without the handle/session/parameter index (format-one codes).
TSS2_RC rc_base(TSS2_RC rc);

// One TPM reached through one TCTI. Everything goes through run(), which holds the lock for the whole
// operation: ESAPI contexts are not thread-safe, and swtpm without a resource manager has only three
// transient slots, so an operation loads what it needs and flushes it before the next one starts.
// Inside a SigningRun (core/base/signing_run.h) the thread keeps the lock from its first operation to
// the end of the run: a batch's signatures go to the TPM back to back, without a hand-over per signature.
class Connection final : private SigningRun::Device {
 public:
  explicit Connection(std::string tcti);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  const std::string& tcti() const { return m_tcti; }

  // Runs fn(ESYS_CONTEXT*) with the lock held, connecting first when needed. When the operation fails
  // because the link to the TPM broke (swtpm restarted) or the context is unusable, the context is dropped;
  // when `retry` is true, the connection is then made again and fn runs once more. Not for operations that
  // are unsafe to repeat.
  template <typename F>
  auto run(F&& fn, bool retry) -> decltype(fn(static_cast<ESYS_CONTEXT*>(nullptr))) {
    Hold hold(*this);
    for (int attempt = 0;; ++attempt) {
      ESYS_CONTEXT* ctx = context();  // its own error names the TPM and the TCTI
      try {
        return fn(ctx);
      } catch (const Error& e) {
        if (!context_lost(e)) throw;
        disconnect();
        if (!retry || attempt > 0) throw_context_lost(e);
      }
    }
  }

  // Inside run() only. The ESYS_TR of the persistent key at `handle`, opened (TPM2_ReadPublic) the first
  // time and kept for as long as this connection lives: a persistent key takes no transient slot, so
  // keeping it open saves a TPM command per signature. Dropped with the connection (a restarted swtpm
  // means a new context) and by forget_persistent().
  ESYS_TR persistent(ESYS_CONTEXT* ctx, std::uint32_t handle, const std::string& what);
  // Inside run() only: forget every cached persistent handle (before a key is evicted, moved or made
  // persistent, so that no ESYS_TR outlives the key it named).
  void forget_persistent() noexcept;

 private:
  ESYS_CONTEXT* context();
  void disconnect() noexcept;
  // The link broke, or the context is unusable (is_connection_error, is_unusable_context).
  static bool context_lost(const Error& e);
  // `e`, saying that the link to this TPM broke (or that the context was left half-way).
  [[noreturn]] void throw_context_lost(const Error& e) const;

  // The lock for one run(): taken unless this thread already keeps it for a SigningRun; at the end,
  // kept for the thread's open SigningRun if there is one, else given back.
  class Hold {
   public:
    explicit Hold(Connection& c);
    ~Hold();
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    Connection& m_connection;
    bool m_kept_already;
  };
  void release_after_run() noexcept override;

  std::mutex m_mutex;
  std::atomic<std::thread::id> m_keeper{};  // the thread that keeps m_mutex for its SigningRun, if any
  std::string m_tcti;
  TSS2_TCTI_CONTEXT* m_tcti_ctx = nullptr;
  ESYS_CONTEXT* m_esys = nullptr;
  std::map<std::uint32_t, ESYS_TR> m_persistent;  // handle -> ESYS_TR in m_esys
};

// An ESYS_TR this code owns: a transient object is flushed, a persistent one closed, when it goes out
// of scope (errors ignored: the link may be the thing that failed).
class Object {
 public:
  enum class Kind { Transient, Persistent };
  Object() = default;
  Object(ESYS_CONTEXT* ctx, ESYS_TR tr, Kind kind) : m_ctx(ctx), m_tr(tr), m_kind(kind) {}
  Object(Object&& o) noexcept : m_ctx(o.m_ctx), m_tr(std::exchange(o.m_tr, ESYS_TR_NONE)), m_kind(o.m_kind) {}
  Object& operator=(Object&& o) noexcept;
  Object(const Object&) = delete;
  Object& operator=(const Object&) = delete;
  ~Object() { reset(); }
  ESYS_TR tr() const { return m_tr; }
  // Gives up ownership: the caller closes or flushes the handle.
  ESYS_TR release() noexcept { return std::exchange(m_tr, ESYS_TR_NONE); }
  void reset() noexcept;

 private:
  ESYS_CONTEXT* m_ctx = nullptr;
  ESYS_TR m_tr = ESYS_TR_NONE;
  Kind m_kind = Kind::Transient;
};

struct KeyBlob {
  TPM2B_PUBLIC pub{};
  TPM2B_PRIVATE priv{};
};

// Whether a persistent handle is occupied (TPM2_GetCapability, TPM_CAP_HANDLES).
bool persistent_exists(ESYS_CONTEXT* ctx, std::uint32_t handle);
// Esys_TR_FromTPMPublic; Error(NotFound) when nothing is at the handle.
Object open_persistent(ESYS_CONTEXT* ctx, std::uint32_t handle, const std::string& what);
// The storage parent tpm2-openssl and tpm2-tss-engine use: kSrkHandle when it is present, else the
// owner hierarchy (a primary made from tpm2-openssl's ECC template each time it is needed).
std::uint32_t default_parent(ESYS_CONTEXT* ctx);
// Loads (kOwnerHierarchy: creates) the parent for keys recorded with `parent`.
Object storage_parent(ESYS_CONTEXT* ctx, std::uint32_t parent);

// The public template of a hwca signing key: fixedTPM | fixedParent | sensitiveDataOrigin |
// userWithAuth | sign, no decrypt, no restricted, scheme NULL (chosen per signature), nameAlg SHA-256.
TPM2B_PUBLIC signing_key_template(const KeySpec& spec);
// Esys_TestParms: Error(BadInput, "the TPM does not support <spec> ...") when it says no.
void require_supported(ESYS_CONTEXT* ctx, const KeySpec& spec);
// Esys_Create under `parent` with `auth` as the key's userAuth.
KeyBlob create_key(ESYS_CONTEXT* ctx, const Object& parent, const TPM2B_PUBLIC& tmpl, const std::string& auth);
// Esys_Load; a blob this TPM cannot load (made by another TPM, or under another parent) is BadInput.
Object load_key(ESYS_CONTEXT* ctx, const Object& parent, const KeyBlob& blob, const std::string& what);
// Esys_EvictControl into `handle` (owner hierarchy); Conflict when the handle got taken.
void make_persistent(ESYS_CONTEXT* ctx, const Object& key, std::uint32_t handle);
// Esys_EvictControl on a persistent object: frees its handle, which destroys that copy of the key. `key`
// (opened with open_persistent) is closed.
void evict_persistent(ESYS_CONTEXT* ctx, Object& key, std::uint32_t handle);
// The storage parents a key may have been made under, the likeliest first: default_parent(), then the
// other one (a key made before a storage key was put at kSrkHandle, or after it was removed).
std::vector<std::uint32_t> parent_candidates(ESYS_CONTEXT* ctx);
// Esys_ObjectChangeAuth: a new private part of `key` (loaded or persistent, its current auth value set)
// that carries `new_auth`, for loading under `parent`. The TPM does not change the key it holds: a
// persistent key keeps its old auth value, and an older blob still loads with the old one.
// Error(Token) naming the wrong auth value (not retried: it counts towards the dictionary-attack lockout);
// Error(BadInput) with call "Esys_ObjectChangeAuth" and code TPM_RC_TYPE when `parent` is not the key's
// parent (see is_wrong_parent).
TPM2B_PRIVATE change_auth(ESYS_CONTEXT* ctx, const Object& key, const Object& parent, const std::string& new_auth,
                          const std::string& what);
bool is_wrong_parent(const Error& e);
// Esys_ReadPublic: the public area as the TPM reports it.
TPM2B_PUBLIC read_public(ESYS_CONTEXT* ctx, const Object& key);
// Esys_TR_SetAuth.
void set_auth(ESYS_CONTEXT* ctx, ESYS_TR key, const std::string& auth);
inline void set_auth(ESYS_CONTEXT* ctx, const Object& key, const std::string& auth) { set_auth(ctx, key.tr(), auth); }
// Esys_Sign of a digest made with `md` (SHA-256/384/512), ECDSA or RSASSA (PKCS#1 v1.5) by the key's
// type; returns the signature as OpenSSL expects it (DER ECDSA-Sig-Value, or the raw RSA block).
std::string sign_digest(ESYS_CONTEXT* ctx, ESYS_TR key, const TPMT_PUBLIC& pub, const EVP_MD* md,
                        const std::string& digest, const std::string& what);
inline std::string sign_digest(ESYS_CONTEXT* ctx, const Object& key, const TPMT_PUBLIC& pub, const EVP_MD* md,
                               const std::string& digest, const std::string& what) {
  return sign_digest(ctx, key.tr(), pub, md, digest, what);
}

// The public half of a TPM key as a software key; Error(BadInput) for types and sizes hwca does not use.
EVP_PKEY_ptr public_key_of(const TPMT_PUBLIC& pub);
KeySpec spec_of(const TPMT_PUBLIC& pub);

// Marshalling (Tss2_MU).
std::string marshal_public(const TPM2B_PUBLIC& pub);
std::string marshal_private(const TPM2B_PRIVATE& priv);
TPM2B_PUBLIC unmarshal_public(const std::string& bytes, const std::string& what);
TPM2B_PRIVATE unmarshal_private(const std::string& bytes, const std::string& what);

}  // namespace hwca::tokens::tpm2
