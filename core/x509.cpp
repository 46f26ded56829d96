#include "core/x509.h"

#include "core/base/algorithm.h"
#include "core/base/csr_der.h"
#include "core/base/error.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rand.h>

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>

namespace hwca::core {

namespace {

using BASIC_CONSTRAINTS_ptr = std::unique_ptr<BASIC_CONSTRAINTS, OsslDeleter<&BASIC_CONSTRAINTS_free>>;
using EXTENDED_KEY_USAGE_ptr = std::unique_ptr<EXTENDED_KEY_USAGE, OsslDeleter<&EXTENDED_KEY_USAGE_free>>;
using AUTHORITY_KEYID_ptr = std::unique_ptr<AUTHORITY_KEYID, OsslDeleter<&AUTHORITY_KEYID_free>>;
using ASN1_BIT_STRING_ptr = std::unique_ptr<ASN1_BIT_STRING, OsslDeleter<&ASN1_BIT_STRING_free>>;
using GENERAL_NAME_ptr = std::unique_ptr<GENERAL_NAME, OsslDeleter<&GENERAL_NAME_free>>;
using X509_NAME_ENTRY_ptr = std::unique_ptr<X509_NAME_ENTRY, OsslDeleter<&X509_NAME_ENTRY_free>>;

using ExtStackOwner = STACK_OF_X509_EXTENSION_ptr;

void free_x509_stack(STACK_OF(X509) * certs) { sk_X509_free(certs); }  // does not own the certificates
using X509StackView = std::unique_ptr<STACK_OF(X509), OsslDeleter<&free_x509_stack>>;

int to_int(size_t n, const char* what) {
  if (n > static_cast<size_t>(std::numeric_limits<int>::max())) throw Error(ErrorKind::BadInput, std::string(what) + " is too long");
  return static_cast<int>(n);
}

bool has_control_chars(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::string printable_for_error(const std::string& s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static const char* digits = "0123456789abcdef";
      out += "\\x";
      out += digits[u >> 4];
      out += digits[u & 0xf];
    } else {
      out += c;
    }
    if (out.size() > 80) {
      out += "...";
      break;
    }
  }
  return out;
}

bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// A DNS name as hwca accepts it: labels of letters, digits, '-' and '_', 1..63 characters each, at
// most 253 in all, and an optional leading "*." wildcard label.
void validate_dns_name(const std::string& name) {
  if (name.size() > 253)
    throw Error(ErrorKind::BadInput, "host name '" + printable_for_error(name) + "' is longer than 253 characters");
  size_t start = 0;
  bool first = true;
  while (true) {
    size_t dot = name.find('.', start);
    std::string label = name.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty())
      throw Error(ErrorKind::BadInput, "host name '" + printable_for_error(name) + "' has an empty label");
    if (label.size() > 63)
      throw Error(ErrorKind::BadInput, "host name '" + printable_for_error(name) + "' has a label longer than 63 characters");
    bool wildcard = first && label == "*" && dot != std::string::npos;
    if (!wildcard) {
      for (char c : label) {
        if (!(is_alnum(c) || c == '-' || c == '_'))
          throw Error(ErrorKind::BadInput, "host name '" + printable_for_error(name) + "' is not a valid DNS name (character '" +
                                               printable_for_error(std::string(1, c)) + "')");
      }
    }
    first = false;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
}

bool is_ip(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// "local@domain": a dot-atom local part and a DNS-like domain, no spaces.
bool is_mailbox(const std::string& s) {
  auto at = s.find('@');
  if (at == std::string::npos || at == 0 || at + 1 >= s.size() || s.find('@', at + 1) != std::string::npos) return false;
  std::string local = s.substr(0, at);
  std::string domain = s.substr(at + 1);
  static const std::string atext = "!#$%&'*+-/=?^_`{|}~";
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string::npos) return false;
  for (char c : local) {
    if (!(is_alnum(c) || c == '.' || atext.find(c) != std::string::npos)) return false;
  }
  if (domain.front() == '.' || domain.back() == '.' || domain.find("..") != std::string::npos) return false;
  for (char c : domain) {
    if (!(is_alnum(c) || c == '-' || c == '.' || c == '_')) return false;
  }
  return true;
}

// "scheme://rest" with an RFC 3986 scheme and no spaces.
bool is_uri(const std::string& s) {
  auto pos = s.find("://");
  if (pos == std::string::npos || pos == 0 || pos + 3 >= s.size()) return false;
  if (!std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (size_t i = 0; i < pos; ++i) {
    char c = s[i];
    if (!(is_alnum(c) || c == '+' || c == '-' || c == '.')) return false;
  }
  return std::none_of(s.begin(), s.end(), [](char c) { return c == ' ' || static_cast<unsigned char>(c) >= 0x80; });
}

void collect_names(const GENERAL_NAMES* names, SubjectAltNames& out) {
  if (!names) return;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    auto str = [](const ASN1_STRING* s) {
      return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<size_t>(ASN1_STRING_length(s)));
    };
    switch (gn->type) {
      case GEN_DNS: out.dns.push_back(str(gn->d.dNSName)); break;
      case GEN_EMAIL: out.emails.push_back(str(gn->d.rfc822Name)); break;
      case GEN_URI: out.uris.push_back(str(gn->d.uniformResourceIdentifier)); break;
      case GEN_IPADD: {
        const ASN1_OCTET_STRING* ip = gn->d.iPAddress;
        char text[INET6_ADDRSTRLEN] = {0};
        int len = ASN1_STRING_length(ip);
        const unsigned char* data = ASN1_STRING_get0_data(ip);
        if (len == 4 && inet_ntop(AF_INET, data, text, sizeof text)) out.ips.emplace_back(text);
        else if (len == 16 && inet_ntop(AF_INET6, data, text, sizeof text)) out.ips.emplace_back(text);
        break;
      }
      default: break;
    }
  }
}

bool printable_string_ok(const std::string& s) {
  static const std::string extra = " '()+,-./:=?";
  return std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || extra.find(c) != std::string::npos; });
}

X509_EXTENSION_ptr make_ext(int nid, bool critical, void* value) {
  X509_EXTENSION_ptr ext(X509V3_EXT_i2d(nid, critical ? 1 : 0, value));
  if (!ext) throw_openssl(ErrorKind::Internal, std::string("encoding the ") + OBJ_nid2sn(nid) + " extension");
  return ext;
}

GENERAL_NAME_ptr ia5_name(int type, const std::string& value) {
  GENERAL_NAME_ptr gn(GENERAL_NAME_new());
  ASN1_IA5STRING* s = ASN1_IA5STRING_new();
  if (!gn || !s || ASN1_STRING_set(s, value.data(), to_int(value.size(), "name")) != 1) {
    ASN1_IA5STRING_free(s);
    throw_openssl(ErrorKind::Internal, "building a subjectAltName entry");
  }
  GENERAL_NAME_set0_value(gn.get(), type, s);
  return gn;
}

GENERAL_NAMES_ptr make_general_names(const SubjectAltNames& sans) {
  GENERAL_NAMES_ptr names(GENERAL_NAMES_new());
  if (!names) throw_openssl(ErrorKind::Internal, "GENERAL_NAMES_new");
  auto push = [&](GENERAL_NAME_ptr gn) {
    if (sk_GENERAL_NAME_push(names.get(), gn.get()) <= 0) throw_openssl(ErrorKind::Internal, "sk_GENERAL_NAME_push");
    gn.release();
  };
  for (const auto& d : sans.dns) push(ia5_name(GEN_DNS, d));
  for (const auto& e : sans.emails) push(ia5_name(GEN_EMAIL, e));
  for (const auto& ip : sans.ips) {
    unsigned char buf[16];
    int len = 0;
    if (inet_pton(AF_INET, ip.c_str(), buf) == 1) len = 4;
    else if (inet_pton(AF_INET6, ip.c_str(), buf) == 1) len = 16;
    else throw Error(ErrorKind::BadInput, "'" + printable_for_error(ip) + "' is not an IP address");
    GENERAL_NAME_ptr gn(GENERAL_NAME_new());
    ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
    if (!gn || !os || ASN1_OCTET_STRING_set(os, buf, len) != 1) {
      ASN1_OCTET_STRING_free(os);
      throw_openssl(ErrorKind::Internal, "building an IP subjectAltName");
    }
    GENERAL_NAME_set0_value(gn.get(), GEN_IPADD, os);
    push(std::move(gn));
  }
  for (const auto& u : sans.uris) push(ia5_name(GEN_URI, u));
  return names;
}

ASN1_OCTET_STRING_ptr key_id_of(const X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_pubkey_digest(cert, EVP_sha1(), md, &len) != 1) throw_openssl(ErrorKind::Internal, "computing a key identifier");
  ASN1_OCTET_STRING_ptr os(ASN1_OCTET_STRING_new());
  if (!os || ASN1_OCTET_STRING_set(os.get(), md, static_cast<int>(len)) != 1)
    throw_openssl(ErrorKind::Internal, "ASN1_OCTET_STRING_set");
  return os;
}

void free_bytes(unsigned char* p) { OPENSSL_free(p); }

// The subject public key, in the form X509_set_pubkey is cheap with.
//
// OpenSSL 3.0's X509_set_pubkey turns a provider key (a key generated by OpenSSL 3, or read from a CSR
// that d2i_csr leaves to d2i_X509_REQ) into a SubjectPublicKeyInfo by setting up an OSSL_ENCODER,
// encoding, and parsing the DER back with an OSSL_DECODER; the two set-ups walk every algorithm of
// every loaded provider under locks: ~2 million instructions, ~200 us, per certificate (callgrind on
// bench/issue_bench), more than the token's ECDSA signature and the two signature checks together. A
// key with OpenSSL's built-in ASN.1 method is encoded directly (a few us). For a named-curve EC key,
// that key is made from the curve's parameters (d2i_KeyParams, once per thread and curve) and the key's
// own encoded point (d2i_PublicKey, which checks that the point is on the curve): the same public key,
// and the same SubjectPublicKeyInfo bytes (checked below). Anything else (RSA, explicit curves,
// Ed25519, ...) returns null and takes X509_set_pubkey's general path, as does a key that already has
// the built-in method (d2i_csr makes those: OpenSSL encodes them directly).
EVP_PKEY_ptr fast_encodable_key(EVP_PKEY* key, std::string& point_out) {
  if (!EVP_PKEY_is_a(key, "EC")) return nullptr;
  char text[80];
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, text, sizeof text, &len) != 1 ||
      std::strcmp(text, OSSL_PKEY_EC_ENCODING_GROUP) != 0 || EVP_PKEY_get_group_name(key, text, sizeof text, &len) != 1) {
    drain_openssl_errors();
    return nullptr;
  }
  int nid = OBJ_sn2nid(text);
  if (nid == NID_undef) nid = EC_curve_nist2nid(text);
  if (nid == NID_undef) return nullptr;

  unsigned char* point = nullptr;
  size_t point_len = EVP_PKEY_get1_encoded_public_key(key, &point);
  std::unique_ptr<unsigned char, OsslDeleter<&free_bytes>> point_owner(point);
  EVP_PKEY_ptr out = ec_public_key_from_point(nid, point, static_cast<long>(point_len));
  if (!out) {
    drain_openssl_errors();
    return nullptr;
  }
  point_out.assign(reinterpret_cast<const char*>(point), point_len);
  return out;
}

// Sets the certificate's public key to `key` (see fast_encodable_key).
void set_subject_public_key(X509* cert, EVP_PKEY* key) {
  std::string point;
  if (EVP_PKEY_ptr fast = fast_encodable_key(key, point)) {
    if (X509_set_pubkey(cert, fast.get()) == 1) {
      // The certificate must carry exactly the subject's key: its encoded point, bit for bit.
      const ASN1_BIT_STRING* bits = X509_get0_pubkey_bitstr(cert);
      if (bits && !point.empty() && static_cast<size_t>(ASN1_STRING_length(bits)) == point.size() &&
          std::memcmp(ASN1_STRING_get0_data(bits), point.data(), point.size()) == 0)
        return;
    }
    drain_openssl_errors();
  }
  if (X509_set_pubkey(cert, key) != 1) throw_openssl(ErrorKind::BadInput, "setting the public key");
}

void add_ext(X509* cert, X509_EXTENSION_ptr ext) {
  if (X509_add_ext(cert, ext.get(), -1) != 1) throw_openssl(ErrorKind::Internal, "X509_add_ext");
}

}  // namespace

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t extra = 0;
    unsigned cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      cp = c & 0x1fu;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      cp = c & 0x0fu;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (size_t k = 1; k <= extra; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3fu);
    }
    if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += extra + 1;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Subject alternative names

SubjectAltNames SubjectAltNames::classify(const std::vector<std::string>& hosts) {
  SubjectAltNames out;
  for (const auto& host : hosts) {
    if (host.empty()) continue;
    if (host.find('\0') != std::string::npos)
      throw Error(ErrorKind::BadInput, "host '" + printable_for_error(host) + "' contains a NUL byte");
    if (has_control_chars(host))
      throw Error(ErrorKind::BadInput, "host '" + printable_for_error(host) + "' contains a control character");
    if (is_ip(host)) {
      out.ips.push_back(host);
    } else if (is_mailbox(host)) {
      out.emails.push_back(host);
    } else if (is_uri(host)) {
      out.uris.push_back(host);
    } else {
      validate_dns_name(host);
      out.dns.push_back(host);
    }
  }
  return out;
}

SubjectAltNames SubjectAltNames::of_csr(const X509_REQ* csr) {
  SubjectAltNames out;
  ExtStackOwner exts(X509_REQ_get_extensions(const_cast<X509_REQ*>(csr)));
  ERR_clear_error();
  if (!exts) return out;
  GENERAL_NAMES_ptr names(static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts.get(), NID_subject_alt_name, nullptr, nullptr)));
  collect_names(names.get(), out);
  return out;
}

SubjectAltNames SubjectAltNames::of_cert(const X509* cert) {
  SubjectAltNames out;
  GENERAL_NAMES_ptr names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  collect_names(names.get(), out);
  return out;
}

std::vector<std::string> SubjectAltNames::describe() const {
  std::vector<std::string> out;
  for (const auto& d : dns) out.push_back("DNS:" + d);
  for (const auto& e : emails) out.push_back("email:" + e);
  for (const auto& i : ips) out.push_back("IP:" + i);
  for (const auto& u : uris) out.push_back("URI:" + u);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Names

X509_NAME_ptr make_name(const std::vector<NameAttribute>& attrs) {
  X509_NAME_ptr name(X509_NAME_new());
  if (!name) throw_openssl(ErrorKind::Internal, "X509_NAME_new");
  bool first = true;
  for (const auto& attr : attrs) {
    const char* sn = OBJ_nid2sn(attr.nid);
    std::string label = sn ? sn : "attribute";
    if (attr.nid == NID_undef || !sn) throw Error(ErrorKind::BadInput, "unknown name attribute");
    if (attr.value.empty()) throw Error(ErrorKind::BadInput, "subject attribute " + label + " has an empty value");
    if (attr.value.find('\0') != std::string::npos)
      throw Error(ErrorKind::BadInput, "subject attribute " + label + " contains a NUL byte");
    if (!valid_utf8(attr.value)) throw Error(ErrorKind::BadInput, "subject attribute " + label + " is not valid UTF-8");
    int type = V_ASN1_UTF8STRING;
    if (attr.nid == NID_pkcs9_emailAddress || attr.nid == NID_domainComponent) {
      if (std::any_of(attr.value.begin(), attr.value.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }))
        throw Error(ErrorKind::BadInput, "subject attribute " + label + " must be ASCII");
      type = V_ASN1_IA5STRING;
    } else if (printable_string_ok(attr.value)) {
      type = V_ASN1_PRINTABLESTRING;
    }
    int set = (attr.joins_previous && !first) ? -1 : 0;
    if (X509_NAME_add_entry_by_NID(name.get(), attr.nid, type, reinterpret_cast<const unsigned char*>(attr.value.data()),
                                   to_int(attr.value.size(), "subject attribute"), -1, set) != 1)
      throw_openssl(ErrorKind::BadInput, "subject attribute " + label);
    first = false;
  }
  return name;
}

namespace {

int attribute_nid(std::string key) {
  // trim
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(key.begin());
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  std::string lower;
  for (char c : key) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "c") return NID_countryName;
  if (lower == "st") return NID_stateOrProvinceName;
  if (lower == "l") return NID_localityName;
  if (lower == "o") return NID_organizationName;
  if (lower == "ou") return NID_organizationalUnitName;
  if (lower == "cn") return NID_commonName;
  if (lower == "serialnumber") return NID_serialNumber;
  if (lower == "emailaddress") return NID_pkcs9_emailAddress;
  if (lower == "dc") return NID_domainComponent;
  return NID_undef;
}

struct Piece {
  std::string text;
  char separator_before = 0;  // '/', ',' or '+' (0 for the first)
};

// Splits at unescaped separators; backslash escapes the next character.
std::vector<Piece> split_unescaped(const std::string& text, const std::string& separators) {
  std::vector<Piece> out;
  Piece cur;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\') {
      if (i + 1 >= text.size()) throw Error(ErrorKind::BadInput, "subject '" + text + "' ends with a lone backslash");
      cur.text += '\\';
      cur.text += text[++i];
      continue;
    }
    if (separators.find(c) != std::string::npos) {
      out.push_back(cur);
      cur = Piece{};
      cur.separator_before = c;
      continue;
    }
    cur.text += c;
  }
  out.push_back(cur);
  return out;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      out += s[++i];
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

}  // namespace

X509_NAME_ptr parse_subject(const std::string& text) {
  if (text.find('\0') != std::string::npos) throw Error(ErrorKind::BadInput, "the subject contains a NUL byte");
  bool slash_form = !text.empty() && text.front() == '/';
  std::vector<Piece> pieces = split_unescaped(slash_form ? text.substr(1) : text, slash_form ? "/+" : ",+");
  // A "+" only joins two attributes when what follows looks like "KEY=" with a known key; otherwise it
  // is part of the value (as in "O=C++ Team").
  std::vector<Piece> merged;
  for (auto& p : pieces) {
    if (p.separator_before == '+' && !merged.empty()) {
      auto eq = p.text.find('=');
      bool attribute = eq != std::string::npos && attribute_nid(p.text.substr(0, eq)) != NID_undef;
      if (!attribute) {
        merged.back().text += "+" + p.text;
        continue;
      }
    }
    merged.push_back(p);
  }
  std::vector<std::vector<NameAttribute>> rdns;
  for (const auto& p : merged) {
    std::string piece = slash_form ? p.text : trim(p.text);
    if (piece.empty() && p.separator_before != '+' && &p == &merged.back() && slash_form) continue;  // trailing '/'
    // Find the first unescaped '='.
    size_t eq = std::string::npos;
    for (size_t i = 0; i < piece.size(); ++i) {
      if (piece[i] == '\\') {
        ++i;
        continue;
      }
      if (piece[i] == '=') {
        eq = i;
        break;
      }
    }
    if (eq == std::string::npos)
      throw Error(ErrorKind::BadInput, "subject '" + text + "': '" + piece + "' is not of the form KEY=value");
    std::string key = unescape(piece.substr(0, eq));
    std::string value = unescape(slash_form ? piece.substr(eq + 1) : trim(piece.substr(eq + 1)));
    int nid = attribute_nid(key);
    if (nid == NID_undef)
      throw Error(ErrorKind::BadInput, "subject '" + text + "': unknown attribute '" + trim(key) +
                                           "' (use C, ST, L, O, OU, CN, serialNumber, emailAddress or DC)");
    if (value.empty()) throw Error(ErrorKind::BadInput, "subject '" + text + "': attribute " + trim(key) + " has an empty value");
    NameAttribute attr{nid, value, false};
    if (p.separator_before == '+' && !rdns.empty()) {
      attr.joins_previous = true;
      rdns.back().push_back(attr);
    } else {
      rdns.push_back({attr});
    }
  }
  if (rdns.empty()) throw Error(ErrorKind::BadInput, "the subject '" + text + "' is empty");
  // The comma form is RFC 4514's: most specific first, so it is reversed into DER order.
  if (!slash_form) std::reverse(rdns.begin(), rdns.end());
  std::vector<NameAttribute> flat;
  for (auto& rdn : rdns) {
    for (size_t i = 0; i < rdn.size(); ++i) {
      rdn[i].joins_previous = i > 0;
      flat.push_back(rdn[i]);
    }
  }
  return make_name(flat);
}

std::string name_to_string(const X509_NAME* name) {
  BIO_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio) throw_openssl(ErrorKind::Internal, "BIO_new");
  if (X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) throw_openssl(ErrorKind::Internal, "X509_NAME_print_ex");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string common_name(const X509_NAME* name) {
  int idx = -1, last = -1;
  while ((idx = X509_NAME_get_index_by_NID(name, NID_commonName, idx)) >= 0) last = idx;
  if (last < 0) return {};
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, s);
  if (len < 0) throw_openssl(ErrorKind::BadInput, "decoding the common name");
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Certificates

X509_ptr build_certificate(const CertTemplate& tmpl, const ASN1_INTEGER* serial, EVP_PKEY* subject_public_key,
                           const X509* issuer, EVP_PKEY* issuer_key) {
  X509_ptr cert = unsigned_certificate(tmpl, serial, subject_public_key, issuer);
  sign_certificate(cert.get(), issuer_key);
  check_certificate_signature(cert.get(), issuer, subject_public_key);
  return cert;
}

X509_ptr unsigned_certificate(const CertTemplate& tmpl, const ASN1_INTEGER* serial, EVP_PKEY* subject_public_key,
                              const X509* issuer) {
  if (!serial || !subject_public_key) throw Error(ErrorKind::Internal, "build_certificate: missing serial or key");
  if (!tmpl.subject) throw Error(ErrorKind::Internal, "build_certificate: the template has no subject");
  if (tmpl.not_after <= tmpl.not_before)
    throw Error(ErrorKind::Policy, "the certificate would not be valid for any time (notAfter " + iso8601(tmpl.not_after) +
                                       " is not after notBefore " + iso8601(tmpl.not_before) + ")");
  if (tmpl.subject_key_id == false && tmpl.authority_key_id && !issuer)
    throw Error(ErrorKind::Internal, "build_certificate: a self-signed AKI needs an SKI");

  X509_ptr cert(X509_new());
  if (!cert) throw_openssl(ErrorKind::Internal, "X509_new");
  X509* c = cert.get();
  if (X509_set_version(c, X509_VERSION_3) != 1) throw_openssl(ErrorKind::Internal, "X509_set_version");
  if (X509_set_serialNumber(c, const_cast<ASN1_INTEGER*>(serial)) != 1) throw_openssl(ErrorKind::Internal, "X509_set_serialNumber");
  if (X509_set_subject_name(c, tmpl.subject.get()) != 1) throw_openssl(ErrorKind::Internal, "X509_set_subject_name");
  const X509_NAME* issuer_name = issuer ? X509_get_subject_name(issuer) : tmpl.subject.get();
  if (X509_set_issuer_name(c, issuer_name) != 1) throw_openssl(ErrorKind::Internal, "X509_set_issuer_name");
  if (!ASN1_TIME_set(X509_getm_notBefore(c), tmpl.not_before) || !ASN1_TIME_set(X509_getm_notAfter(c), tmpl.not_after))
    throw_openssl(ErrorKind::Internal, "setting the validity");
  set_subject_public_key(c, subject_public_key);

  // keyUsage
  if (tmpl.key_usage != 0) {
    ASN1_BIT_STRING_ptr bits(ASN1_BIT_STRING_new());
    if (!bits) throw_openssl(ErrorKind::Internal, "ASN1_BIT_STRING_new");
    for (int n = 0; n < 9; ++n) {
      unsigned mask = n < 8 ? (0x80u >> n) : 0x8000u;
      if ((tmpl.key_usage & mask) && ASN1_BIT_STRING_set_bit(bits.get(), n, 1) != 1)
        throw_openssl(ErrorKind::Internal, "ASN1_BIT_STRING_set_bit");
    }
    add_ext(c, make_ext(NID_key_usage, tmpl.key_usage_critical, bits.get()));
  }
  // extKeyUsage
  if (!tmpl.ext_key_usage.empty()) {
    EXTENDED_KEY_USAGE_ptr eku(sk_ASN1_OBJECT_new_null());
    if (!eku) throw_openssl(ErrorKind::Internal, "sk_ASN1_OBJECT_new_null");
    for (int nid : tmpl.ext_key_usage) {
      ASN1_OBJECT* obj = OBJ_nid2obj(nid);
      if (!obj) throw Error(ErrorKind::Internal, "unknown extended key usage NID " + std::to_string(nid));
      ASN1_OBJECT* dup = OBJ_dup(obj);
      if (!dup || sk_ASN1_OBJECT_push(eku.get(), dup) <= 0) {
        ASN1_OBJECT_free(dup);
        throw_openssl(ErrorKind::Internal, "building extKeyUsage");
      }
    }
    add_ext(c, make_ext(NID_ext_key_usage, false, eku.get()));
  }
  // basicConstraints (always critical)
  if (tmpl.basic_constraints) {
    BASIC_CONSTRAINTS_ptr bc(BASIC_CONSTRAINTS_new());
    if (!bc) throw_openssl(ErrorKind::Internal, "BASIC_CONSTRAINTS_new");
    bc->ca = tmpl.is_ca ? 0xff : 0;
    if (tmpl.is_ca && tmpl.path_len >= 0) {
      bc->pathlen = ASN1_INTEGER_new();
      if (!bc->pathlen || ASN1_INTEGER_set(bc->pathlen, tmpl.path_len) != 1) throw_openssl(ErrorKind::Internal, "pathlen");
    }
    add_ext(c, make_ext(NID_basic_constraints, true, bc.get()));
  }
  // subjectKeyIdentifier
  ASN1_OCTET_STRING_ptr ski;
  if (tmpl.subject_key_id) {
    ski = key_id_of(c);
    add_ext(c, make_ext(NID_subject_key_identifier, false, ski.get()));
  }
  // authorityKeyIdentifier (keyid only)
  if (tmpl.authority_key_id) {
    ASN1_OCTET_STRING_ptr keyid;
    if (issuer) {
      const ASN1_OCTET_STRING* issuer_ski = X509_get0_subject_key_id(const_cast<X509*>(issuer));
      ERR_clear_error();
      keyid.reset(issuer_ski ? ASN1_OCTET_STRING_dup(issuer_ski) : key_id_of(issuer).release());
      if (!keyid) throw_openssl(ErrorKind::Internal, "copying the issuer's key identifier");
    } else {
      keyid.reset(ASN1_OCTET_STRING_dup(ski.get()));
      if (!keyid) throw_openssl(ErrorKind::Internal, "ASN1_OCTET_STRING_dup");
    }
    AUTHORITY_KEYID_ptr aki(AUTHORITY_KEYID_new());
    if (!aki) throw_openssl(ErrorKind::Internal, "AUTHORITY_KEYID_new");
    aki->keyid = keyid.release();
    add_ext(c, make_ext(NID_authority_key_identifier, false, aki.get()));
  }
  // subjectAltName (critical when the subject is empty, RFC 5280 4.2.1.6)
  if (!tmpl.sans.empty()) {
    GENERAL_NAMES_ptr names = make_general_names(tmpl.sans);
    bool critical = X509_NAME_entry_count(tmpl.subject.get()) == 0;
    add_ext(c, make_ext(NID_subject_alt_name, critical, names.get()));
  }
  return cert;
}

void sign_certificate(X509* cert, EVP_PKEY* issuer_key) {
  if (!cert || !issuer_key) throw Error(ErrorKind::Internal, "sign_certificate: missing certificate or key");
  const EVP_MD* md = digest_for(issuer_key);
  // X509_sign works with provider keys and with keys that carry a legacy method (libp11). For RSA the
  // default padding is PKCS#1 v1.5.
  if (X509_sign(cert, issuer_key, md) <= 0) throw_openssl(ErrorKind::Token, "signing the certificate");
}

void check_certificate_signature(X509* cert, const X509* issuer, EVP_PKEY* subject_public_key) {
  EVP_PKEY* verify_key = issuer ? X509_get0_pubkey(issuer) : subject_public_key;
  if (!verify_key || X509_verify(cert, verify_key) != 1) {
    drain_openssl_errors();
    throw Error(ErrorKind::Token, issuer ? "the new certificate's signature does not verify with the CA certificate's public key "
                                           "(is the CA key the one that matches the CA certificate?)"
                                         : "the self-signed certificate's signature does not verify with its own public key "
                                           "(the signing key does not match the public key)");
  }
}

ASN1_INTEGER_ptr random_serial() {
  std::array<unsigned char, 20> bytes{};
  while (true) {
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) throw_openssl(ErrorKind::Internal, "RAND_bytes");
    bytes[0] &= 0x7f;
    // Keep the full 20 bytes: a zero first byte would shorten the encoding (and a zero serial is
    // forbidden), so draw again.
    if (bytes[0] != 0) break;
  }
  BIGNUM_ptr bn(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
  if (!bn) throw_openssl(ErrorKind::Internal, "BN_bin2bn");
  ASN1_INTEGER_ptr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (!serial) throw_openssl(ErrorKind::Internal, "BN_to_ASN1_INTEGER");
  return serial;
}

// ---------------------------------------------------------------------------------------------
// CSRs

void verify_csr_signature(X509_REQ* csr) {
  EVP_PKEY* key = X509_REQ_get0_pubkey(csr);
  if (!key) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, "the certificate request has no usable public key");
  }
  if (X509_REQ_verify(csr, key) != 1) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, "the certificate request's signature does not verify (no proof of possession of the key)");
  }
}

X509_REQ_ptr make_csr(const X509_NAME* subject, const SubjectAltNames& sans, EVP_PKEY* key) {
  return make_csr(subject, sans, key, false);
}

X509_REQ_ptr make_csr(const X509_NAME* subject, const SubjectAltNames& sans, EVP_PKEY* key, bool request_ca) {
  if (!key) throw Error(ErrorKind::Internal, "make_csr: no key");
  X509_REQ_ptr req(X509_REQ_new());
  if (!req) throw_openssl(ErrorKind::Internal, "X509_REQ_new");
  if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) throw_openssl(ErrorKind::Internal, "X509_REQ_set_version");
  if (subject && X509_REQ_set_subject_name(req.get(), subject) != 1) throw_openssl(ErrorKind::Internal, "X509_REQ_set_subject_name");
  if (X509_REQ_set_pubkey(req.get(), key) != 1) throw_openssl(ErrorKind::BadInput, "X509_REQ_set_pubkey");
  if (!sans.empty() || request_ca) {
    ExtStackOwner exts(sk_X509_EXTENSION_new_null());
    if (!exts) throw_openssl(ErrorKind::Internal, "sk_X509_EXTENSION_new_null");
    auto push = [&](X509_EXTENSION_ptr ext) {
      if (sk_X509_EXTENSION_push(exts.get(), ext.get()) <= 0) throw_openssl(ErrorKind::Internal, "sk_X509_EXTENSION_push");
      ext.release();
    };
    if (request_ca) {
      BASIC_CONSTRAINTS_ptr bc(BASIC_CONSTRAINTS_new());
      if (!bc) throw_openssl(ErrorKind::Internal, "BASIC_CONSTRAINTS_new");
      bc->ca = 0xff;
      push(make_ext(NID_basic_constraints, true, bc.get()));
    }
    if (!sans.empty()) {
      GENERAL_NAMES_ptr names = make_general_names(sans);
      bool critical = !subject || X509_NAME_entry_count(subject) == 0;
      push(make_ext(NID_subject_alt_name, critical, names.get()));
    }
    if (X509_REQ_add_extensions(req.get(), exts.get()) != 1) throw_openssl(ErrorKind::Internal, "X509_REQ_add_extensions");
  }
  if (X509_REQ_sign(req.get(), key, digest_for(key)) <= 0) throw_openssl(ErrorKind::Token, "signing the certificate request");
  return req;
}

bool csr_requests_ca(const X509_REQ* csr) {
  ExtStackOwner exts(X509_REQ_get_extensions(const_cast<X509_REQ*>(csr)));
  ERR_clear_error();
  if (!exts) return false;
  BASIC_CONSTRAINTS_ptr bc(static_cast<BASIC_CONSTRAINTS*>(X509V3_get_d2i(exts.get(), NID_basic_constraints, nullptr, nullptr)));
  ERR_clear_error();
  return bc && bc->ca != 0;
}

// ---------------------------------------------------------------------------------------------
// Time

std::time_t now() { return std::time(nullptr); }

std::time_t now_rounded_to_minute() {
  using namespace std::chrono;
  auto ns = duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
  constexpr long long minute = 60LL * 1000 * 1000 * 1000;
  long long rounded = (ns + minute / 2) / minute;  // halfway rounds up, as Go's Round does for positive times
  return static_cast<std::time_t>(rounded * 60);
}

std::string iso8601(std::time_t t) {
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) throw Error(ErrorKind::Internal, "time out of range");
  char buf[32];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

std::time_t asn1_time_to_time_t(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) throw_openssl(ErrorKind::BadInput, "invalid certificate time");
  return timegm(&tm);
}

std::string verify_chain(X509* cert, const std::vector<X509*>& roots, const std::vector<X509*>& intermediates) {
  X509_STORE_ptr store(X509_STORE_new());
  if (!store) throw_openssl(ErrorKind::Internal, "X509_STORE_new");
  for (X509* root : roots) {
    if (X509_STORE_add_cert(store.get(), root) != 1) {
      drain_openssl_errors();  // a duplicate root is harmless
    }
  }
  X509StackView chain(sk_X509_new_null());
  if (!chain) throw_openssl(ErrorKind::Internal, "sk_X509_new_null");
  for (X509* c : intermediates) {
    if (sk_X509_push(chain.get(), c) <= 0) throw_openssl(ErrorKind::Internal, "sk_X509_push");
  }
  X509_STORE_CTX_ptr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), cert, chain.get()) != 1)
    throw_openssl(ErrorKind::Internal, "X509_STORE_CTX_init");
  int ok = X509_verify_cert(ctx.get());
  drain_openssl_errors();
  if (ok == 1) return {};
  int err = X509_STORE_CTX_get_error(ctx.get());
  std::string reason = X509_verify_cert_error_string(err);
  return reason.empty() ? "certificate verification failed" : reason;
}

}  // namespace hwca::core
