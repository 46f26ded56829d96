#include "core/ceremony.h"

#include "core/audit.h"
#include "core/base/error.h"
#include "core/x509.h"
#include "core/yaml_keys.h"

#include <openssl/pem.h>
#include <yaml-cpp/yaml.h>

#include <set>

namespace hwca::core {

namespace {

std::string folder_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string resolve(const std::string& base, const std::string& p) {
  if (p.empty() || p.front() == '/') return p;
  return base + "/" + p;
}

class Reader {
 public:
  Reader(const YAML::Node& node, std::string where, std::string file) : m_node(node), m_where(std::move(where)), m_file(std::move(file)) {
    if (!m_node.IsMap()) fail("must be a mapping");
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorKind::BadInput, "ceremony file " + m_file + ": " + (m_where.empty() ? "" : m_where + ": ") + what);
  }
  void only(const std::set<std::string>& allowed) const {
    for (const auto& kv : m_node) {
      if (!kv.first.IsScalar()) fail("a field name must be a plain string");
      std::string k = kv.first.as<std::string>();
      if (!allowed.count(k)) fail("unknown or misplaced field '" + k + "'");
    }
  }
  bool has(const std::string& k) const { return static_cast<bool>(m_node[k]); }
  std::string str(const std::string& k, bool required) const {
    YAML::Node v = m_node[k];
    if (!v) {
      if (required) fail("missing field '" + k + "'");
      return {};
    }
    if (!v.IsScalar()) fail("field '" + k + "' must be a string");
    std::string s = v.as<std::string>();
    if (required && s.empty()) fail("field '" + k + "' is empty");
    return s;
  }
  std::optional<int> integer(const std::string& k) const {
    YAML::Node v = m_node[k];
    if (!v) return std::nullopt;
    try {
      return v.as<int>();
    } catch (const YAML::Exception&) {
      fail("field '" + k + "' must be a whole number");
    }
  }
  bool boolean(const std::string& k) const {
    YAML::Node v = m_node[k];
    if (!v) return false;
    try {
      return v.as<bool>();
    } catch (const YAML::Exception&) {
      fail("field '" + k + "' must be true or false");
    }
  }
  std::vector<std::string> list(const std::string& k) const {
    YAML::Node v = m_node[k];
    std::vector<std::string> out;
    if (!v) return out;
    if (!v.IsSequence()) fail("field '" + k + "' must be a list");
    for (const auto& item : v) {
      if (!item.IsScalar()) fail("field '" + k + "' must be a list of strings");
      out.push_back(item.as<std::string>());
    }
    return out;
  }
  Reader sub(const std::string& k, bool required) const {
    YAML::Node v = m_node[k];
    if (!v) {
      if (required) fail("missing section '" + k + "'");
      return Reader(YAML::Node(YAML::NodeType::Map), k, m_file);
    }
    return Reader(v, m_where.empty() ? k : m_where + "." + k, m_file);
  }

 private:
  YAML::Node m_node;
  std::string m_where;
  std::string m_file;
};

EVP_PKEY_ptr pubkey_from_pem(const std::string& pem) {
  BIO_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY_ptr key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  drain_openssl_errors();
  return key;
}

std::string unhex(const std::string& hex) {
  std::string out;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2) return {};
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nib(hex[i]), lo = nib(hex[i + 1]);
    if (hi < 0 || lo < 0) return {};
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

[[noreturn]] void refuse(const std::string& path, const std::string& what) {
  throw Error(ErrorKind::Policy, "transcript " + path + ": " + what);
}

}  // namespace

std::string CeremonySpec::kind_name(Kind k) {
  switch (k) {
    case Kind::Root: return "root";
    case Kind::Intermediate: return "intermediate";
    case Kind::Crl: return "crl";
    case Kind::Key: return "key";
  }
  return "?";
}

CeremonySpec parse_ceremony(const std::string& yaml_text, const std::string& path) {
  YAML::Node doc;
  try {
    doc = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::BadInput, "ceremony file " + path + " is not valid YAML: " + e.what());
  }
  refuse_duplicate_keys(doc, "ceremony file " + path);
  Reader top(doc, "", path);
  CeremonySpec s;
  s.file = path;
  s.base_dir = folder_of(path);
  s.file_sha256 = sha256_hex(yaml_text);
  std::string kind = top.str("ceremony", true);
  if (kind == "root") s.kind = CeremonySpec::Kind::Root;
  else if (kind == "intermediate") s.kind = CeremonySpec::Kind::Intermediate;
  else if (kind == "crl") s.kind = CeremonySpec::Kind::Crl;
  else if (kind == "key") s.kind = CeremonySpec::Kind::Key;
  else top.fail("ceremony must be one of root, intermediate, crl, key (got '" + kind + "')");
  using K = CeremonySpec::Kind;
  std::set<std::string> allowed = {"ceremony", "description", "key", "audit-key", "ledger", "outputs"};
  if (s.kind == K::Root || s.kind == K::Intermediate) allowed.insert("certificate");
  if (s.kind == K::Intermediate || s.kind == K::Crl) allowed.insert("issuer-certificate");
  if (s.kind == K::Intermediate || s.kind == K::Key) allowed.insert("csr");
  if (s.kind == K::Crl) allowed.insert("crl");
  top.only(allowed);

  Reader key = top.sub("key", true);
  key.only({"uri", "generate", "pin-shares"});
  s.key_uri = key.str("uri", true);
  if (key.has("generate")) {
    if (s.kind != K::Root && s.kind != K::Key) key.fail("only root and key ceremonies generate keys");
    s.generate = key.str("generate", true);
  } else if (s.kind == K::Key) {
    key.fail("a key ceremony needs 'generate: <algorithm>'");
  }
  for (const auto& p : key.list("pin-shares")) s.pin_shares.push_back(resolve(s.base_dir, p));
  if (top.has("audit-key")) s.audit_key_uri = top.str("audit-key", true);
  if (top.has("ledger")) s.ledger = resolve(s.base_dir, top.str("ledger", true));

  if (s.kind == K::Root || s.kind == K::Intermediate) {
    Reader cert = top.sub("certificate", s.kind == K::Root);
    cert.only({"subject", "validity", "pathlen"});
    s.subject = cert.str("subject", s.kind == K::Root);
    s.validity = cert.str("validity", false);
    if (s.validity.empty()) s.validity = s.kind == K::Root ? "87600h" : "43800h";
    s.pathlen = cert.integer("pathlen");
    if (s.pathlen && (*s.pathlen < 0 || *s.pathlen > 16)) cert.fail("pathlen must be between 0 and 16");
    if (s.kind == K::Intermediate && !s.pathlen) s.pathlen = 0;
  }
  if (s.kind == K::Intermediate || s.kind == K::Crl) s.issuer_certificate = resolve(s.base_dir, top.str("issuer-certificate", true));
  if (s.kind == K::Intermediate) s.csr = resolve(s.base_dir, top.str("csr", true));
  if (s.kind == K::Key && top.has("csr")) {
    Reader csr = top.sub("csr", false);
    csr.only({"subject"});
    s.csr_subject = csr.str("subject", true);
  }
  if (s.kind == K::Crl) {
    Reader crl = top.sub("crl", false);
    crl.only({"next-update", "der"});
    if (crl.has("next-update")) s.next_update = crl.str("next-update", true);
    s.der = crl.boolean("der");
  }

  Reader out = top.sub("outputs", true);
  std::set<std::string> out_allowed = {"folder"};
  if (s.kind == K::Root || s.kind == K::Intermediate) out_allowed.insert("certificate");
  if (s.kind == K::Crl) out_allowed.insert("crl");
  if (s.kind == K::Key) out_allowed.insert({"csr", "public-key"});
  out.only(out_allowed);
  s.out_dir = resolve(s.base_dir, out.str("folder", true));
  auto plain_name = [&](const std::string& field, const std::string& def) {
    std::string n = out.str(field, false);
    if (n.empty()) n = def;
    if (n.find('/') != std::string::npos || n == "." || n == ".." || n == "transcript.json")
      out.fail("'" + field + "' must be a plain file name inside the output folder (not transcript.json)");
    return n;
  };
  if (s.kind == K::Root || s.kind == K::Intermediate) s.out_certificate = plain_name("certificate", kind + ".pem");
  if (s.kind == K::Crl) s.out_crl = plain_name("crl", s.der ? "root.crl.der" : "root.crl");
  if (s.kind == K::Key) {
    s.out_public_key = plain_name("public-key", "key.pub.pem");
    if (!s.csr_subject.empty()) s.out_csr = plain_name("csr", "key.csr");
  }
  return s;
}

std::string audit_endorsement_message(const EVP_PKEY* audit_public_key) {
  return "hwca-audit-key-endorsement-v1\n" + sha256_hex(public_key_der(audit_public_key));
}

std::string transcript_signing_bytes(const nlohmann::json& transcript) {
  return "hwca-ceremony-transcript-v1\n" + transcript.dump();
}

std::string transcript_file(const nlohmann::json& transcript, const std::string& signature_hex, const EVP_PKEY* audit_key) {
  nlohmann::json file;
  file["transcript"] = transcript;
  file["signature"] = {{"format", "hwca-ceremony-signature-v1"},
                       {"signed_by", "audit key sha256:" + sha256_hex(public_key_der(audit_key))},
                       {"value", signature_hex}};
  return file.dump(2) + "\n";
}

TranscriptCheck verify_transcript(const std::string& path, const X509* root, const X509* cert, const std::string& files_dir) {
  std::string text = read_file(path);
  nlohmann::json file = nlohmann::json::parse(text, nullptr, false);
  if (file.is_discarded() || !file.is_object()) refuse(path, "not a JSON transcript (modified or damaged)");
  std::string canonical = file.dump(2) + "\n";
  if (canonical != text) {
    size_t i = 0;
    while (i < canonical.size() && i < text.size() && canonical[i] == text[i]) ++i;
    refuse(path, "not in canonical form: byte " + std::to_string(i) + " differs (the file was edited after signing)");
  }
  TranscriptCheck out;
  try {
    const nlohmann::json& t = file.at("transcript");
    const nlohmann::json& sig = file.at("signature");
    if (t.at("format").get<std::string>() != "hwca-ceremony-transcript-v1") refuse(path, "unknown transcript format");
    out.ceremony = t.at("ceremony").get<std::string>();

    // The audit key signed the transcript.
    EVP_PKEY_ptr audit = pubkey_from_pem(t.at("audit").at("public_key").get<std::string>());
    if (!audit) refuse(path, "the audit public key cannot be read");
    std::string audit_fp = sha256_hex(public_key_der(audit.get()));
    if (!verify_bytes(audit.get(), transcript_signing_bytes(t), unhex(sig.at("value").get<std::string>())))
      refuse(path, "the signature does not verify with the audit key recorded in it (sha256:" + audit_fp + ")");
    out.lines.push_back("signature: OK, by audit key sha256:" + audit_fp);

    // The ceremony's CA key endorsed the audit key.
    EVP_PKEY_ptr ca = pubkey_from_pem(t.at("key").at("public_key").get<std::string>());
    if (!ca) refuse(path, "the key's public key cannot be read");
    std::string ca_fp = sha256_hex(public_key_der(ca.get()));
    if (same_public_key(ca.get(), audit.get())) refuse(path, "the audit key is the CA key");
    if (!verify_bytes(ca.get(), audit_endorsement_message(audit.get()), unhex(t.at("audit").at("endorsement").get<std::string>())))
      refuse(path, "the audit key's endorsement does not verify with the ceremony's key (sha256:" + ca_fp + ")");
    out.lines.push_back("audit key endorsed by the ceremony's key sha256:" + ca_fp + ": OK");

    // The root certificate vouches for that key.
    if (out.ceremony == "key") {
      if (cert) {
        if (!same_public_key(X509_get0_pubkey(cert), ca.get()))
          refuse(path, "the certificate given is not for the key this ceremony generated");
        out.lines.push_back("certificate " + name_to_string(X509_get_subject_name(cert)) + " is for this key: OK");
        if (root) {
          std::string why = verify_chain(const_cast<X509*>(cert), {const_cast<X509*>(root)});
          if (!why.empty()) refuse(path, "the certificate for this key does not verify against the root: " + why);
          out.lines.push_back("that certificate verifies against the root: OK");
        }
      } else {
        out.lines.push_back("key ceremony: its key is not certified yet (give --cert with the certificate later issued for it)");
      }
    } else if (root) {
      if (!same_public_key(X509_get0_pubkey(root), ca.get()))
        refuse(path, "the ceremony's key is not the root certificate's key");
      out.lines.push_back("the ceremony's key is the root certificate's key: OK");
    } else {
      out.lines.push_back("no root certificate given: the ceremony's key was not checked against it");
    }

    // Output files.
    std::string dir = files_dir.empty() ? folder_of(path) : files_dir;
    int checked = 0;
    for (const auto& step : t.at("steps")) {
      for (const auto& o : step.at("outputs")) {
        std::string name = o.at("name").get<std::string>();
        std::string file_path = dir + "/" + name;
        std::string data;
        try {
          data = read_file(file_path);
        } catch (const Error&) {
          refuse(path, "output " + file_path + " is missing");
        }
        if (sha256_hex(data) != o.at("sha256").get<std::string>())
          refuse(path, "output " + file_path + " does not match the SHA-256 the transcript records");
        ++checked;
      }
    }
    out.lines.push_back(std::to_string(checked) + " output file" + (checked == 1 ? "" : "s") + " match their recorded SHA-256");
  } catch (const nlohmann::json::exception&) {
    refuse(path, "a field is missing or of the wrong type");
  }
  return out;
}

}  // namespace hwca::core
