// The token's own limit: raw C_Sign signatures per second through the module's function list, one
// session per thread, the same mechanisms libp11 uses for hwca (CKM_ECDSA over a digest,
// CKM_RSA_PKCS over a DigestInfo). This is the reference every hwca figure is divided by.
//
//   raw_sign MODULE TOKEN-LABEL KEY-LABEL PIN-FILE THREADS SECONDS
// prints: {"threads":T,"signatures":N,"seconds":S,"per_second":R}
#include <p11-kit-1/p11-kit/pkcs11.h>

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what, CK_RV rv = 0) {
  std::fprintf(stderr, "raw_sign: %s (rv=0x%lx)\n", what.c_str(), static_cast<unsigned long>(rv));
  std::exit(1);
}

void check(CK_RV rv, const char* call) {
  if (rv != CKR_OK) die(call, rv);
}

std::string trim_field(const unsigned char* p, size_t n) {
  std::string s(reinterpret_cast<const char*>(p), n);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) die("usage: raw_sign MODULE TOKEN-LABEL KEY-LABEL PIN-FILE THREADS SECONDS");
  const std::string module = argv[1], token = argv[2], label = argv[3];
  std::ifstream pin_in(argv[4]);
  std::string pin((std::istreambuf_iterator<char>(pin_in)), std::istreambuf_iterator<char>());
  while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
  const int threads = std::atoi(argv[5]);
  const double seconds = std::atof(argv[6]);
  if (threads < 1 || threads > 64 || seconds <= 0 || seconds > 120) die("bad THREADS or SECONDS");

  void* handle = dlopen(module.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) die(std::string("dlopen: ") + dlerror());
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
  if (!get_list) die("no C_GetFunctionList");
  CK_FUNCTION_LIST* fn = nullptr;
  check(get_list(&fn), "C_GetFunctionList");
  CK_C_INITIALIZE_ARGS init{};
  init.flags = CKF_OS_LOCKING_OK;
  check(fn->C_Initialize(&init), "C_Initialize");

  CK_ULONG count = 0;
  check(fn->C_GetSlotList(CK_TRUE, nullptr, &count), "C_GetSlotList");
  std::vector<CK_SLOT_ID> slots(count);
  check(fn->C_GetSlotList(CK_TRUE, slots.data(), &count), "C_GetSlotList");
  CK_SLOT_ID slot = 0;
  bool found = false;
  for (CK_ULONG i = 0; i < count; ++i) {
    CK_TOKEN_INFO info{};
    if (fn->C_GetTokenInfo(slots[i], &info) == CKR_OK && trim_field(info.label, sizeof info.label) == token) {
      slot = slots[i];
      found = true;
    }
  }
  if (!found) die("no token " + token);

  // One session per thread; the first logs in (login state is per application, shared by sessions).
  std::vector<CK_SESSION_HANDLE> sessions(static_cast<size_t>(threads));
  for (auto& s : sessions) check(fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s), "C_OpenSession");
  CK_RV rv = fn->C_Login(sessions[0], CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin.data()), pin.size());
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) die("C_Login", rv);

  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE templ[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
  check(fn->C_FindObjectsInit(sessions[0], templ, 2), "C_FindObjectsInit");
  CK_OBJECT_HANDLE key = 0;
  CK_ULONG n = 0;
  check(fn->C_FindObjects(sessions[0], &key, 1, &n), "C_FindObjects");
  fn->C_FindObjectsFinal(sessions[0]);
  if (n != 1) die("no key " + label);
  CK_KEY_TYPE type = 0;
  CK_ATTRIBUTE ta = {CKA_KEY_TYPE, &type, sizeof type};
  check(fn->C_GetAttributeValue(sessions[0], key, &ta, 1), "C_GetAttributeValue");

  // What libp11 hands the token for one certificate: a SHA-256 DigestInfo (RSA) or the digest (EC).
  static const unsigned char sha256_prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
                                                0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
  std::vector<unsigned char> input(sha256_prefix, sha256_prefix + sizeof sha256_prefix);
  input.resize(input.size() + 32, 0x5a);
  CK_MECHANISM mech{CKM_RSA_PKCS, nullptr, 0};
  if (type == CKK_EC) {
    mech.mechanism = CKM_ECDSA;
    input.erase(input.begin(), input.begin() + sizeof sha256_prefix);
  }

  std::atomic<bool> stop{false};
  std::atomic<long> total{0};
  auto worker = [&](CK_SESSION_HANDLE s) {
    std::vector<unsigned char> sig(1024);
    std::vector<unsigned char> data = input;
    long done = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      CK_ULONG len = sig.size();
      check(fn->C_SignInit(s, &mech, key), "C_SignInit");
      check(fn->C_Sign(s, data.data(), data.size(), sig.data(), &len), "C_Sign");
      data[data.size() - 1]++;
      ++done;
    }
    total += done;
  };
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (auto s : sessions) pool.emplace_back(worker, s);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : pool) t.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"threads\":%d,\"signatures\":%ld,\"seconds\":%.3f,\"per_second\":%.1f}\n", threads, total.load(), elapsed,
              static_cast<double>(total.load()) / elapsed);
  for (auto s : sessions) fn->C_CloseSession(s);
  fn->C_Finalize(nullptr);
  dlclose(handle);
  return 0;
}
