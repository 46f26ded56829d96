#include "tokens/pkcs11/module.h"

#include "core/base/error.h"

#include <openssl/err.h>

#include <cstring>
#include <dlfcn.h>

namespace hwca::tokens::pkcs11 {

std::string padded_field(const unsigned char* data, size_t len) {
  std::string s(reinterpret_cast<const char*>(data), len);
  auto end = s.find_last_not_of(" \0", std::string::npos, 2);
  return end == std::string::npos ? std::string() : s.substr(0, end + 1);
}

std::string TokenInfo::display() const { return label.empty() ? "slot " + std::to_string(slot) : label; }

Module::Module(std::string path) : m_path(std::move(path)) {
  // RTLD_NODELETE: the module's code stays mapped after dlclose, so exit handlers or destructors it
  // registered never jump into unmapped memory, and leak reports can still name it.
  m_handle = ::dlopen(m_path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (!m_handle) {
    const char* why = ::dlerror();
    std::string reason = why ? why : "unknown error";
    // dlerror repeats the path first: "/x.so: cannot open shared object file: ..."
    if (reason.rfind(m_path + ": ", 0) == 0) reason = reason.substr(m_path.size() + 2);
    throw Error(ErrorKind::NotFound, "PKCS#11 module " + m_path + ": cannot load (" + reason + ")");
  }
  using GetFunctionList = CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR);
  void* sym = ::dlsym(m_handle, "C_GetFunctionList");
  if (!sym) {
    ::dlclose(m_handle);
    throw Error(ErrorKind::BadInput, "PKCS#11 module " + m_path + ": no C_GetFunctionList (not a PKCS#11 module)");
  }
  auto get_function_list = reinterpret_cast<GetFunctionList>(sym);
  CK_RV rv = get_function_list(&m_fn);
  if (rv != CKR_OK || !m_fn) {
    ::dlclose(m_handle);
    check_rv(rv == CKR_OK ? CKR_GENERAL_ERROR : rv, "C_GetFunctionList", "module " + m_path);
  }
  CK_C_INITIALIZE_ARGS args;
  std::memset(&args, 0, sizeof args);
  args.flags = CKF_OS_LOCKING_OK;
  rv = m_fn->C_Initialize(&args);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    ::dlclose(m_handle);
    check_rv(rv, "C_Initialize", "module " + m_path);
  }
  // Already initialised means someone else in this process owns the module: leave C_Finalize to them.
  m_initialized = rv == CKR_OK;
}

Module::~Module() {
  std::lock_guard lock(m_mutex);
  for (auto& [slot, session] : m_sessions) m_fn->C_CloseSession(session);
  m_sessions.clear();
  if (m_ctx) {
    // libp11 closes its sessions, then PKCS11_CTX_unload calls C_Finalize (it saw the module as initialised
    // because it tolerates CKR_CRYPTOKI_ALREADY_INITIALIZED) and drops its dlopen reference.
    for (auto it = m_slot_lists.rbegin(); it != m_slot_lists.rend(); ++it)
      PKCS11_release_all_slots(m_ctx, it->first, it->second);
    m_slot_lists.clear();
    if (m_initialized) {
      PKCS11_CTX_unload(m_ctx);
    } else {
      // The module was initialised by someone else: libp11 must not finalize it either. Leak the
      // context's module reference rather than finalize under another owner.
    }
    PKCS11_CTX_free(m_ctx);
    m_ctx = nullptr;
  } else if (m_initialized) {
    m_fn->C_Finalize(nullptr);
  }
  m_initialized = false;
  ::dlclose(m_handle);
  // libp11 and the module may leave errors on OpenSSL's queue; never let them leak into a later call.
  ERR_clear_error();
}

std::vector<TokenInfo> Module::tokens() {
  std::lock_guard lock(m_mutex);
  CK_ULONG count = 0;
  check_rv(m_fn->C_GetSlotList(CK_TRUE, nullptr, &count), "C_GetSlotList", "module " + m_path);
  std::vector<CK_SLOT_ID> slots(count);
  if (count > 0) check_rv(m_fn->C_GetSlotList(CK_TRUE, slots.data(), &count), "C_GetSlotList", "module " + m_path);
  slots.resize(count);
  std::vector<TokenInfo> out;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info;
    if (m_fn->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    TokenInfo t;
    t.slot = slot;
    t.label = padded_field(info.label, sizeof info.label);
    t.manufacturer = padded_field(info.manufacturerID, sizeof info.manufacturerID);
    t.model = padded_field(info.model, sizeof info.model);
    t.serial = padded_field(info.serialNumber, sizeof info.serialNumber);
    t.flags = info.flags;
    out.push_back(std::move(t));
  }
  return out;
}

TokenInfo Module::token_info(CK_SLOT_ID slot) {
  for (auto& t : tokens())
    if (t.slot == slot) return t;
  throw Error(ErrorKind::NotFound, "no token in slot " + std::to_string(slot) + " of module " + m_path);
}

CK_SESSION_HANDLE Module::open_session(CK_SLOT_ID slot) {
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  check_rv(m_fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session),
           "C_OpenSession", "slot " + std::to_string(slot));
  return session;
}

CK_SESSION_HANDLE Module::user_session(const TokenInfo& token, const PinSources& pins) {
  std::lock_guard lock(m_mutex);
  if (auto it = m_sessions.find(token.slot); it != m_sessions.end()) {
    CK_SESSION_INFO info;
    if (m_fn->C_GetSessionInfo(it->second, &info) == CKR_OK &&
        (info.state == CKS_RW_USER_FUNCTIONS || info.state == CKS_RO_USER_FUNCTIONS ||
         (token.flags & CKF_LOGIN_REQUIRED) == 0))
      return it->second;
    // The session died (token removed, logged out elsewhere): start again.
    m_fn->C_CloseSession(it->second);
    m_sessions.erase(it);
  }
  CK_SESSION_HANDLE session = open_session(token.slot);
  CK_SESSION_INFO info;
  CK_RV rv = m_fn->C_GetSessionInfo(session, &info);
  bool logged_in = rv == CKR_OK && (info.state == CKS_RW_USER_FUNCTIONS || info.state == CKS_RO_USER_FUNCTIONS);
  if (!logged_in) {
    // Fresh flags: the PIN counters change with every failed attempt, by us or anyone else.
    CK_TOKEN_INFO ti;
    rv = m_fn->C_GetTokenInfo(token.slot, &ti);
    if (rv != CKR_OK) {
      m_fn->C_CloseSession(session);
      check_rv(rv, "C_GetTokenInfo", "token " + token.display());
    }
    if (ti.flags & CKF_LOGIN_REQUIRED) {
      if (auto refusal = pin_flags_refusal(ti.flags, token.display())) {
        m_fn->C_CloseSession(session);
        throw Error(ErrorKind::Token, *refusal);
      }
      PinSources sources = pins;
      sources.token = token.display();
      SecretString pin;
      try {
        pin = resolve_pin(sources);
      } catch (...) {
        m_fn->C_CloseSession(session);
        throw;
      }
      rv = m_fn->C_Login(session, CKU_USER,
                         reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(pin.c_str())),
                         static_cast<CK_ULONG>(pin.size()));
      pin.clear();
      if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        // Never retried: a second wrong attempt brings the token closer to locking.
        m_fn->C_CloseSession(session);
        check_rv(rv, "C_Login", "token " + token.display());
      }
    }
  }
  m_sessions[token.slot] = session;
  return session;
}

bool Module::idle() const { return m_sessions.empty() && m_ctx == nullptr; }

void Module::reinitialize() {
  std::lock_guard lock(m_mutex);
  if (!idle() || !m_initialized) return;
  m_fn->C_Finalize(nullptr);
  CK_C_INITIALIZE_ARGS args;
  std::memset(&args, 0, sizeof args);
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = m_fn->C_Initialize(&args);
  if (rv != CKR_OK) {
    m_initialized = false;
    check_rv(rv, "C_Initialize", "module " + m_path);
  }
}

void Module::load_libp11() {
  if (m_ctx) return;
  PKCS11_CTX* ctx = PKCS11_CTX_new();
  if (!ctx) throw Error(ErrorKind::Internal, "PKCS11_CTX_new failed");
  if (PKCS11_CTX_load(ctx, m_path.c_str()) != 0) {
    std::string detail = drain_openssl_errors();
    PKCS11_CTX_free(ctx);
    throw Error(ErrorKind::Token, "libp11 cannot load PKCS#11 module " + m_path + (detail.empty() ? "" : ": " + detail));
  }
  m_ctx = ctx;
}

EVP_PKEY_ptr Module::libp11_private_key(CK_SLOT_ID slot, const std::optional<std::string>& label,
                                        const std::string& id) {
  std::lock_guard lock(m_mutex);
  load_libp11();
  auto find_slot = [&]() -> PKCS11_SLOT* {
    for (auto it = m_slot_lists.rbegin(); it != m_slot_lists.rend(); ++it)
      for (unsigned int i = 0; i < it->second; ++i)
        if (it->first[i].token && PKCS11_get_slotid_from_slot(&it->first[i]) == slot) return &it->first[i];
    return nullptr;
  };
  PKCS11_SLOT* found = find_slot();
  if (!found) {
    // First use, or a token that appeared after the last enumeration: list the slots again (kept until
    // the end, see module.h).
    PKCS11_SLOT* slots = nullptr;
    unsigned int nslots = 0;
    if (PKCS11_enumerate_slots(m_ctx, &slots, &nslots) != 0)
      throw Error(ErrorKind::Token, "libp11: cannot list the slots of " + m_path + ": " + drain_openssl_errors());
    m_slot_lists.emplace_back(slots, nslots);
    found = find_slot();
  }
  if (!found) throw Error(ErrorKind::NotFound, "libp11 does not see slot " + std::to_string(slot) + " of " + m_path);
  PKCS11_KEY* keys = nullptr;
  unsigned int nkeys = 0;
  if (PKCS11_enumerate_keys(found->token, &keys, &nkeys) != 0)
    throw Error(ErrorKind::Token, "libp11: cannot list the keys of slot " + std::to_string(slot) + ": " +
                                      drain_openssl_errors());
  PKCS11_KEY* match = nullptr;
  int matches = 0;
  for (unsigned int i = 0; i < nkeys; ++i) {
    PKCS11_KEY& k = keys[i];
    if (!k.isPrivate) continue;
    std::string kid = k.id ? std::string(reinterpret_cast<const char*>(k.id), k.id_len) : std::string();
    if (kid != id) continue;
    if (label) {
      if (!k.label || *label != k.label) continue;
    } else if (k.label && *k.label) {
      continue;
    }
    match = &k;
    ++matches;
  }
  if (matches != 1)
    throw Error(ErrorKind::Internal, "libp11 finds " + std::to_string(matches) + " keys where the token has one (slot " +
                                         std::to_string(slot) + ")");
  EVP_PKEY* pkey = PKCS11_get_private_key(match);
  if (!pkey) throw Error(ErrorKind::Token, "libp11: PKCS11_get_private_key failed: " + drain_openssl_errors());
  return EVP_PKEY_ptr(pkey);
}

std::vector<CK_OBJECT_HANDLE> find_objects(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session,
                                           std::vector<CK_ATTRIBUTE> templ, const std::string& context) {
  check_rv(fn->C_FindObjectsInit(session, templ.data(), static_cast<CK_ULONG>(templ.size())), "C_FindObjectsInit",
           context);
  std::vector<CK_OBJECT_HANDLE> out;
  CK_RV rv = CKR_OK;
  while (true) {
    CK_OBJECT_HANDLE batch[32];
    CK_ULONG n = 0;
    rv = fn->C_FindObjects(session, batch, 32, &n);
    if (rv != CKR_OK || n == 0) break;
    out.insert(out.end(), batch, batch + n);
  }
  fn->C_FindObjectsFinal(session);
  check_rv(rv, "C_FindObjects", context);
  return out;
}

std::optional<std::string> get_attribute(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE obj,
                                         CK_ATTRIBUTE_TYPE type) {
  CK_ATTRIBUTE attr{type, nullptr, 0};
  if (fn->C_GetAttributeValue(session, obj, &attr, 1) != CKR_OK) return std::nullopt;
  if (attr.ulValueLen == CK_UNAVAILABLE_INFORMATION) return std::nullopt;
  std::string value(attr.ulValueLen, '\0');
  attr.pValue = value.data();
  if (fn->C_GetAttributeValue(session, obj, &attr, 1) != CKR_OK) return std::nullopt;
  value.resize(attr.ulValueLen);
  return value;
}

std::optional<bool> get_bool_attribute(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE obj,
                                       CK_ATTRIBUTE_TYPE type) {
  CK_BBOOL value = CK_FALSE;
  CK_ATTRIBUTE attr{type, &value, sizeof value};
  if (fn->C_GetAttributeValue(session, obj, &attr, 1) != CKR_OK || attr.ulValueLen != sizeof value)
    return std::nullopt;
  return value == CK_TRUE;
}

std::optional<CK_ULONG> get_ulong_attribute(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE obj,
                                            CK_ATTRIBUTE_TYPE type) {
  CK_ULONG value = 0;
  CK_ATTRIBUTE attr{type, &value, sizeof value};
  if (fn->C_GetAttributeValue(session, obj, &attr, 1) != CKR_OK || attr.ulValueLen != sizeof value)
    return std::nullopt;
  return value;
}

}  // namespace hwca::tokens::pkcs11
