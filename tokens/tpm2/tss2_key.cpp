#include "tokens/tpm2/tss2_key.h"

#include "core/base/error.h"
#include "core/base/ossl.h"

#include <openssl/asn1t.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include <limits>

// OpenSSL's ASN.1 template macros are C: they expand to casts and initialisers our warning set rejects.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

extern "C" {

typedef struct {
  ASN1_OBJECT* type;
  ASN1_BOOLEAN emptyAuth;
  ASN1_INTEGER* parent;
  ASN1_OCTET_STRING* pubkey;
  ASN1_OCTET_STRING* privkey;
} HWCA_TSSPRIVKEY;

DECLARE_ASN1_FUNCTIONS(HWCA_TSSPRIVKEY)

ASN1_SEQUENCE(HWCA_TSSPRIVKEY) = {
    ASN1_SIMPLE(HWCA_TSSPRIVKEY, type, ASN1_OBJECT),
    ASN1_EXP_OPT(HWCA_TSSPRIVKEY, emptyAuth, ASN1_BOOLEAN, 0),
    ASN1_SIMPLE(HWCA_TSSPRIVKEY, parent, ASN1_INTEGER),
    ASN1_SIMPLE(HWCA_TSSPRIVKEY, pubkey, ASN1_OCTET_STRING),
    ASN1_SIMPLE(HWCA_TSSPRIVKEY, privkey, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(HWCA_TSSPRIVKEY)

IMPLEMENT_ASN1_FUNCTIONS(HWCA_TSSPRIVKEY)

}  // extern "C"

#pragma GCC diagnostic pop

namespace hwca::tokens::tpm2 {

namespace {

constexpr const char* kPemName = "TSS2 PRIVATE KEY";
constexpr const char* kLoadableKeyOid = "2.23.133.10.1.3";

struct OpenSslFree {
  void operator()(unsigned char* p) const noexcept { OPENSSL_free(p); }
};

using TssKeyPtr = std::unique_ptr<HWCA_TSSPRIVKEY, OsslDeleter<&HWCA_TSSPRIVKEY_free>>;

std::string octets(const ASN1_OCTET_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<size_t>(ASN1_STRING_length(s)));
}

void set_octets(ASN1_OCTET_STRING* s, const std::string& bytes) {
  if (ASN1_OCTET_STRING_set(s, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size())) != 1)
    throw_openssl(ErrorKind::Internal, "ASN1_OCTET_STRING_set");
}

}  // namespace

std::string encode_tss2_pem(const Tss2PrivateKey& key) {
  TssKeyPtr tpk(HWCA_TSSPRIVKEY_new());
  if (!tpk) throw_openssl(ErrorKind::Internal, "TSSPRIVKEY_new");
  ASN1_OBJECT_free(tpk->type);
  tpk->type = OBJ_txt2obj(kLoadableKeyOid, 1);
  if (!tpk->type) throw_openssl(ErrorKind::Internal, "OBJ_txt2obj");
  // An absent emptyAuth means FALSE: write the field only when it is TRUE, as tpm2-tss-engine does.
  tpk->emptyAuth = key.empty_auth ? 0xff : -1;
  if (ASN1_INTEGER_set_uint64(tpk->parent, key.parent) != 1) throw_openssl(ErrorKind::Internal, "ASN1_INTEGER_set_uint64");
  set_octets(tpk->pubkey, key.pubkey);
  set_octets(tpk->privkey, key.privkey);
  unsigned char* der = nullptr;
  int len = i2d_HWCA_TSSPRIVKEY(tpk.get(), &der);
  if (len <= 0) throw_openssl(ErrorKind::Internal, "encoding the TSS2 PRIVATE KEY");
  // The encoding holds the private blob: wiped when freed, also when writing the PEM fails.
  auto clear_free = [len](unsigned char* p) { OPENSSL_clear_free(p, static_cast<size_t>(len)); };
  std::unique_ptr<unsigned char, decltype(clear_free)> owner(der, clear_free);
  return der_to_pem(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(len)), kPemName);
}

Tss2PrivateKey decode_tss2_pem(const std::string& pem, const std::string& what) {
  if (pem.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw Error(ErrorKind::BadInput, what + " is too large for a key");
  BIO_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new_mem_buf");
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* der = nullptr;
  long len = 0;
  if (PEM_read_bio(bio.get(), &name, &header, &der, &len) != 1) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, what + " is not a PEM file (expected a TSS2 PRIVATE KEY)");
  }
  std::string pem_name = name ? name : "";
  OPENSSL_free(name);
  OPENSSL_free(header);
  std::unique_ptr<unsigned char, OpenSslFree> guard(der);
  if (pem_name != kPemName) {
    throw Error(ErrorKind::BadInput, what + " holds a '" + pem_name.substr(0, 40) + "', not a TSS2 PRIVATE KEY");
  }
  const unsigned char* p = der;
  TssKeyPtr tpk(d2i_HWCA_TSSPRIVKEY(nullptr, &p, len));
  if (!tpk || p != der + len) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, what + ": the TSS2 PRIVATE KEY is not valid DER (or uses fields hwca does not support)");
  }
  char oid[80] = {0};
  if (OBJ_obj2txt(oid, sizeof oid, tpk->type, 1) <= 0 || std::string(oid) != kLoadableKeyOid)
    throw Error(ErrorKind::BadInput, what + ": the TSS2 PRIVATE KEY has type " + std::string(oid) +
                                         ", hwca loads only loadable keys (" + kLoadableKeyOid + ")");
  std::uint64_t parent = 0;
  if (ASN1_INTEGER_get_uint64(&parent, tpk->parent) != 1 || parent > 0xffffffffu) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, what + ": the TSS2 PRIVATE KEY's parent is not a TPM handle");
  }
  Tss2PrivateKey key;
  key.empty_auth = tpk->emptyAuth != -1 && tpk->emptyAuth != 0;
  key.parent = parent == 0 ? 0x40000001u : static_cast<std::uint32_t>(parent);
  key.pubkey = octets(tpk->pubkey);
  key.privkey = octets(tpk->privkey);
  return key;
}

}  // namespace hwca::tokens::tpm2
