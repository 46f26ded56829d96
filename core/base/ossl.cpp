#include "core/base/ossl.h"

#include "core/base/csr_der.h"
#include "core/base/ec_key_der.h"
#include "core/base/error.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <sys/stat.h>

namespace hwca {

namespace {

BIO_ptr mem_bio(std::string_view data) {
  if (data.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw Error(ErrorKind::BadInput, "input too large");
  BIO_ptr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new_mem_buf");
  return bio;
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

BIO_ptr out_bio() {
  BIO_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new");
  return bio;
}

bool looks_like_pem(std::string_view data) { return data.find("-----BEGIN ") != std::string_view::npos; }

}  // namespace

EVP_PKEY_ptr share(EVP_PKEY* key) {
  if (key && EVP_PKEY_up_ref(key) != 1) throw_openssl(ErrorKind::Internal, "EVP_PKEY_up_ref");
  return EVP_PKEY_ptr(key);
}

X509_ptr x509_from_pem(std::string_view pem, const std::string& what) {
  auto chain = x509_chain_from_pem(pem, what);
  return std::move(chain.front());
}

std::vector<X509_ptr> x509_chain_from_pem(std::string_view pem, const std::string& what) {
  OpensslErrorScope errors;
  std::vector<X509_ptr> out;
  if (!looks_like_pem(pem)) {
    // DER, one certificate.
    const auto* p = reinterpret_cast<const unsigned char*>(pem.data());
    X509_ptr cert(d2i_X509(nullptr, &p, static_cast<long>(pem.size())));
    if (!cert || p != reinterpret_cast<const unsigned char*>(pem.data()) + pem.size()) {
      drain_openssl_errors();
      throw Error(ErrorKind::BadInput, what + " is not a PEM or DER certificate");
    }
    out.push_back(std::move(cert));
    return out;
  }
  BIO_ptr bio = mem_bio(pem);
  while (true) {
    X509_ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    out.push_back(std::move(cert));
  }
  unsigned long err = ERR_peek_last_error();
  bool clean_end = ERR_GET_REASON(err) == PEM_R_NO_START_LINE;
  drain_openssl_errors();
  if (out.empty() || (!clean_end && err != 0))
    throw Error(ErrorKind::BadInput, what + " does not hold a valid PEM certificate");
  return out;
}

std::string x509_to_pem(const X509* cert) {
  BIO_ptr bio = out_bio();
  if (PEM_write_bio_X509(bio.get(), const_cast<X509*>(cert)) != 1) throw_openssl(ErrorKind::Internal, "PEM_write_bio_X509");
  return bio_contents(bio.get());
}

std::string x509_to_der(const X509* cert) {
  unsigned char* der = nullptr;
  int len = i2d_X509(cert, &der);
  if (len <= 0) throw_openssl(ErrorKind::Internal, "i2d_X509");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string der_to_pem(std::string_view der, const char* label) {
  BIO_ptr bio = out_bio();
  if (PEM_write_bio(bio.get(), label, "", reinterpret_cast<const unsigned char*>(der.data()), static_cast<long>(der.size())) <= 0)
    throw_openssl(ErrorKind::Internal, "PEM_write_bio");
  return bio_contents(bio.get());
}

X509_REQ_ptr csr_from_pem_or_der(std::string_view data, const std::string& what) {
  OpensslErrorScope errors;
  X509_REQ_ptr req;
  if (looks_like_pem(data)) {
    // What PEM_read_bio_X509_REQ does (the same label matching, no passphrase), with d2i_csr.
    BIO_ptr bio = mem_bio(data);
    unsigned char* der = nullptr;
    long der_len = 0;
    if (PEM_bytes_read_bio(&der, &der_len, nullptr, PEM_STRING_X509_REQ, bio.get(), nullptr, nullptr) == 1) {
      const unsigned char* p = der;
      req = d2i_csr(&p, der_len);
    }
    OPENSSL_free(der);
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    req = d2i_csr(&p, static_cast<long>(data.size()));
    if (req && p != reinterpret_cast<const unsigned char*>(data.data()) + data.size()) req.reset();
  }
  if (!req) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, what + " is not a valid PEM or DER certificate request");
  }
  return req;
}

std::string csr_to_pem(const X509_REQ* csr) {
  BIO_ptr bio = out_bio();
  if (PEM_write_bio_X509_REQ(bio.get(), const_cast<X509_REQ*>(csr)) != 1)
    throw_openssl(ErrorKind::Internal, "PEM_write_bio_X509_REQ");
  return bio_contents(bio.get());
}

EVP_PKEY_ptr private_key_from_pem(std::string_view pem, const std::string& what) {
  OpensslErrorScope errors;
  BIO_ptr bio = mem_bio(pem);
  // An empty passphrase callback: encrypted keys fail instead of prompting.
  auto no_pass = [](char*, int, int, void*) -> int { return -1; };
  EVP_PKEY_ptr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_pass, nullptr));
  if (!key) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, what + " does not hold an unencrypted PEM private key");
  }
  return key;
}

std::string private_key_to_traditional_pem(EVP_PKEY* key) {
  if (std::optional<std::string> der = ec_private_key_der(key)) {  // EC on a named curve: see ec_key_der.h
    struct Cleanse {
      std::string& secret;
      ~Cleanse() { OPENSSL_cleanse(secret.data(), secret.size()); }
    } cleanse{*der};
    return der_to_pem(*der, PEM_STRING_ECPRIVATEKEY);
  }
  BIO_ptr bio = out_bio();
  if (PEM_write_bio_PrivateKey_traditional(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw_openssl(ErrorKind::Internal, "PEM_write_bio_PrivateKey_traditional");
  return bio_contents(bio.get());
}

std::string public_key_to_pem(EVP_PKEY* key) {
  BIO_ptr bio = out_bio();
  if (PEM_write_bio_PUBKEY(bio.get(), key) != 1) throw_openssl(ErrorKind::Internal, "PEM_write_bio_PUBKEY");
  return bio_contents(bio.get());
}

std::string public_key_der(const EVP_PKEY* key) {
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(key, &der);
  if (len <= 0) throw_openssl(ErrorKind::Internal, "i2d_PUBKEY");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

bool same_public_key(const EVP_PKEY* a, const EVP_PKEY* b) { return public_key_der(a) == public_key_der(b); }

std::string read_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw Error(ErrorKind::NotFound, path + ": no such file");
    throw Error(ErrorKind::Io, path + ": " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) throw Error(ErrorKind::BadInput, path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, path + ": cannot read (" + std::strerror(errno) + ")");
  // Bounded: a device or endless pipe named as an input (/dev/zero) is an error, not a hang.
  constexpr std::size_t kMaxInput = 64u * 1024 * 1024;
  std::string out;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    out.append(buf, static_cast<std::size_t>(in.gcount()));
    if (out.size() > kMaxInput) throw Error(ErrorKind::BadInput, path + ": larger than 64 MiB; not an input hwca reads");
  }
  if (in.bad()) throw Error(ErrorKind::Io, path + ": read error");
  return out;
}

std::string read_config_file(const std::string& path) {
  std::string text = read_file(path);
  if (text.find("pin-value=") != std::string::npos) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw Error(ErrorKind::Io, path + ": " + std::strerror(errno));
    if ((st.st_mode & S_IROTH) != 0)
      throw Error(ErrorKind::BadInput, path + " holds a PIN (pin-value=) but every user can read it: chmod o-r " + path +
                                           ", or use pin-source=file: instead");
  }
  return text;
}

std::string to_hex(const unsigned char* data, size_t len) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 0xf];
  }
  return out;
}

std::string to_hex(std::string_view bytes) {
  return to_hex(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw_openssl(ErrorKind::Internal, "EVP_Digest");
  return to_hex(md, len);
}

std::string serial_hex(const ASN1_INTEGER* serial) {
  BIGNUM_ptr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) throw_openssl(ErrorKind::Internal, "ASN1_INTEGER_to_BN");
  if (BN_is_zero(bn.get())) return "0";
  char* hex = BN_bn2hex(bn.get());
  std::string out(hex);
  OPENSSL_free(hex);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace hwca
