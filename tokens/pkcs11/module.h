// One loaded PKCS#11 module: the dlopen handle, its function list, our own sessions (one logged-in
// session per token, kept open so the login lasts) and libp11's context for the same module.
//
// Lifetime: C_Initialize happens once, in the constructor, through our own function list. libp11
// (PKCS11_CTX_load) is loaded lazily on the first open() and tolerates CKR_CRYPTOKI_ALREADY_INITIALIZED;
// it shares the module instance (same dlopen handle) and so the login state. libp11's
// PKCS11_CTX_unload calls C_Finalize itself, so the destructor lets libp11 finalize when it was loaded and
// calls C_Finalize itself otherwise: exactly one C_Finalize, before dlclose, and before OpenSSL's own
// cleanup at exit (the Registry, created in main, destroys the backend; every Signer holds a
// shared_ptr<Module>, so a module outlives its signers).
//
// libp11's slot lists are never released before the end: releasing one calls C_CloseAllSessions, which
// would log every session of the token out. PKCS11_update_slots is not used: in libp11 0.4.12 its second
// call crashes (NULL dereference). A token that appears later (init_token) gets a new slot list instead.
#pragma once

#include "core/base/ossl.h"
#include "tokens/pin.h"
#include "tokens/pkcs11/ck.h"

#include <libp11.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace hwca::tokens::pkcs11 {

struct TokenInfo {
  CK_SLOT_ID slot = 0;
  std::string label;
  std::string manufacturer;
  std::string model;
  std::string serial;
  CK_FLAGS flags = 0;
  bool initialized() const { return (flags & CKF_TOKEN_INITIALIZED) != 0; }
  // The label, or "slot N" for a token without one.
  std::string display() const;
};

class Module {
 public:
  // dlopen + C_GetFunctionList + C_Initialize(CKF_OS_LOCKING_OK).
  // Error(NotFound, "PKCS#11 module /x.so: cannot load (...)") when it cannot be loaded.
  explicit Module(std::string path);
  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& path() const { return m_path; }
  CK_FUNCTION_LIST* fn() const { return m_fn; }
  // Guards our own sessions and libp11's slot list. Backend operations hold it; signing does not.
  std::recursive_mutex& mutex() { return m_mutex; }

  // Every slot with a token present.
  std::vector<TokenInfo> tokens();
  TokenInfo token_info(CK_SLOT_ID slot);

  // Our read-write session on the token's slot, logged in as the user (the PIN is resolved from
  // `pins` only when a login is needed). Checks the PIN flags first and never retries a failed login.
  CK_SESSION_HANDLE user_session(const TokenInfo& token, const PinSources& pins);
  // A fresh read-write session, not kept (for C_InitToken's follow-up as SO). Caller closes it.
  CK_SESSION_HANDLE open_session(CK_SLOT_ID slot);
  // True when nothing is open: no session of ours and libp11 not loaded.
  bool idle() const;
  // C_Finalize + C_Initialize, to refresh the slot list after C_InitToken; only when idle().
  void reinitialize();

  // The libp11 EVP_PKEY for the private key with this label and id on the slot.
  EVP_PKEY_ptr libp11_private_key(CK_SLOT_ID slot, const std::optional<std::string>& label, const std::string& id);

 private:
  void load_libp11();

  std::string m_path;
  void* m_handle = nullptr;
  CK_FUNCTION_LIST* m_fn = nullptr;
  bool m_initialized = false;
  std::recursive_mutex m_mutex;
  std::map<CK_SLOT_ID, CK_SESSION_HANDLE> m_sessions;
  PKCS11_CTX* m_ctx = nullptr;
  std::vector<std::pair<PKCS11_SLOT*, unsigned int>> m_slot_lists;  // newest last
};

// Object search and attribute reading over one session.
std::vector<CK_OBJECT_HANDLE> find_objects(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session,
                                           std::vector<CK_ATTRIBUTE> templ, const std::string& context);
// The attribute's bytes; nullopt when the token will not reveal it (sensitive, invalid, unavailable).
std::optional<std::string> get_attribute(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE obj,
                                         CK_ATTRIBUTE_TYPE type);
std::optional<bool> get_bool_attribute(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE obj,
                                       CK_ATTRIBUTE_TYPE type);
std::optional<CK_ULONG> get_ulong_attribute(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE obj,
                                            CK_ATTRIBUTE_TYPE type);

// A blank-padded fixed-size PKCS#11 string field, trimmed.
std::string padded_field(const unsigned char* data, size_t len);

}  // namespace hwca::tokens::pkcs11
