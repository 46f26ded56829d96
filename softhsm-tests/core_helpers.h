// Helpers shared by the core unit tests (core_*.cpp): temporary folders, extension lookups, and a
// small software-key CA.
#pragma once

#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/base/ossl.h"
#include "core/x509.h"

#include <catch2/catch.hpp>

#include <openssl/x509v3.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace hwca::test {

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/hwca-core-test.XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    m_path = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return m_path; }
  std::string operator/(const std::string& name) const { return m_path + "/" + name; }

 private:
  std::string m_path;
};

// Runs `fn` and returns the hwca::Error it throws; fails the test when it throws nothing.
inline hwca::Error error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const hwca::Error& e) {
    return e;
  }
  FAIL("expected an hwca::Error");
  return hwca::Error(hwca::ErrorKind::Internal, "unreachable");
}

inline const X509_EXTENSION* find_ext(const X509* cert, int nid) {
  int idx = X509_get_ext_by_NID(cert, nid, -1);
  return idx < 0 ? nullptr : X509_get_ext(cert, idx);
}

inline std::vector<int> ext_order(const X509* cert) {
  std::vector<int> out;
  for (int i = 0; i < X509_get_ext_count(cert); ++i) out.push_back(OBJ_obj2nid(X509_EXTENSION_get_object(X509_get_ext(cert, i))));
  return out;
}

inline std::string ext_der(const X509* cert, int nid) {
  const X509_EXTENSION* ext = find_ext(cert, nid);
  if (!ext) return {};
  const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(const_cast<X509_EXTENSION*>(ext));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)), static_cast<size_t>(ASN1_STRING_length(data)));
}

inline std::string octets(const ASN1_OCTET_STRING* s) {
  if (!s) return {};
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<size_t>(ASN1_STRING_length(s)));
}

inline std::string hex_of(const std::string& bytes) { return hwca::to_hex(bytes); }

// DER of an OpenSSL object through its i2d function: der_with(i2d_X509_REQ, req).
template <typename T>
std::string der_with(int (*i2d)(const T*, unsigned char**), const T* object) {
  unsigned char* der = nullptr;
  int len = i2d(object, &der);
  REQUIRE(len > 0);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// DER of an X509_NAME.
inline std::string name_der(const X509_NAME* name) { return der_with(i2d_X509_NAME, name); }

// "C = CN, O = k8s + O = system:masters, CN = x", as `openssl x509 -subject` prints it.
inline std::string oneline(const X509_NAME* name) {
  hwca::BIO_ptr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// The ASN.1 string type of each entry, in order.
inline std::vector<int> entry_types(const X509_NAME* name) {
  std::vector<int> out;
  for (int i = 0; i < X509_NAME_entry_count(name); ++i)
    out.push_back(ASN1_STRING_type(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i))));
  return out;
}

inline hwca::X509_NAME_ptr cn_name(const std::string& cn) {
  return hwca::core::make_name({{NID_commonName, cn, false}});
}

}  // namespace hwca::test
