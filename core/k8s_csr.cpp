#include "core/k8s_csr.h"

#include "core/base/error.h"
#include "core/profile.h"
#include "core/yaml_keys.h"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <climits>
#include <set>
#include <sstream>

namespace hwca::core::k8s {

namespace {

// Counts documents without building nodes. yaml-cpp 0.7's LoadAll never ends (and allocates until memory
// runs out) on a document whose root is a quoted or flow node followed by a stray ',' (`"",` or `{a: b},`:
// found by fuzz/targets/k8s_csr.cpp); a bounded pass over the events first refuses such input.
class DocumentCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

constexpr int kMaxYamlDocuments = 16;

// Throws Error(BadInput) when `text` holds more than kMaxYamlDocuments documents (YAML::Exception for
// malformed YAML, as LoadAll).
void check_document_count(const std::string& text, const std::string& what) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentCounter counter;
  for (int n = 0; parser.HandleNextDocument(counter);)
    if (++n > kMaxYamlDocuments)
      throw Error(ErrorKind::BadInput, what + ": not a CertificateSigningRequest (more than " +
                                           std::to_string(kMaxYamlDocuments) + " YAML documents, or a stray ',')");
}

constexpr const char* kSystemNodes = "system:nodes";
constexpr const char* kSystemBootstrappers = "system:bootstrappers";
constexpr const char* kNodePrefix = "system:node:";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool contains(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

std::set<std::string> as_set(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

// Go's fmt of a sorted sets.String.List(): "[a b c]".
std::string go_list(const std::set<std::string>& s) {
  std::string out = "[";
  bool first = true;
  for (const auto& x : s) {
    if (!first) out += " ";
    out += x;
    first = false;
  }
  return out + "]";
}

const std::set<std::string> kKubeletClientUsages{"digital signature", "key encipherment", "client auth"};
const std::set<std::string> kKubeletClientUsagesNoRsa{"digital signature", "client auth"};
const std::set<std::string> kKubeletServingUsages{"digital signature", "key encipherment", "server auth"};
const std::set<std::string> kKubeletServingUsagesNoRsa{"digital signature", "server auth"};

// The binary form of an IP literal (4 or 16 bytes); empty when it is not one.
std::string ip_bytes(const std::string& text) {
  unsigned char buf[16] = {0};
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return std::string(reinterpret_cast<char*>(buf), 4);
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) return std::string(reinterpret_cast<char*>(buf), 16);
  return {};
}

std::string utf8_of(const ASN1_STRING* s) {
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, s);
  if (len < 0) throw_openssl(ErrorKind::BadInput, "the CSR's subject has a value that is not a string");
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::string base64_encode(const std::string& data) {
  if (data.empty()) return {};
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  if (n < 0) throw_openssl(ErrorKind::Internal, "base64 encoding");
  out.resize(static_cast<size_t>(n));
  return out;
}

// Standard base64 with padding (Go's encoding of []byte in JSON); whitespace is ignored.
std::optional<std::string> base64_decode(const std::string& text) {
  std::unique_ptr<EVP_ENCODE_CTX, OsslDeleter<&EVP_ENCODE_CTX_free>> ctx(EVP_ENCODE_CTX_new());
  if (!ctx) throw_openssl(ErrorKind::Internal, "EVP_ENCODE_CTX_new");
  EVP_DecodeInit(ctx.get());
  std::string out(text.size() / 4 * 3 + 4, '\0');
  int len = 0, fin = 0;
  if (text.size() > static_cast<size_t>(INT_MAX)) return std::nullopt;
  if (EVP_DecodeUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len,
                       reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size())) < 0 ||
      EVP_DecodeFinal(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len, &fin) != 1) {
    drain_openssl_errors();
    return std::nullopt;
  }
  out.resize(static_cast<size_t>(len + fin));
  return out;
}

// ---- reading the object --------------------------------------------------------------------------

struct Reader {
  const std::string& what;

  [[noreturn]] void fail(const std::string& field, const YAML::Node& node, const std::string& why) const {
    std::string where = what;
    if (node.Mark().line >= 0) where += ":" + std::to_string(node.Mark().line + 1);
    throw Error(ErrorKind::BadInput, where + ": " + field + ": " + why);
  }
  [[noreturn]] void fail(const std::string& field, const std::string& why) const {
    throw Error(ErrorKind::BadInput, what + ": " + field + ": " + why);
  }

  std::optional<std::string> str(const YAML::Node& parent, const char* key, const std::string& field) const {
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return std::nullopt;
    if (!n.IsScalar()) fail(field, n, "must be a string");
    return n.Scalar();
  }
  std::vector<std::string> strings(const YAML::Node& parent, const char* key, const std::string& field) const {
    std::vector<std::string> out;
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return out;
    if (!n.IsSequence()) fail(field, n, "must be a list of strings");
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar()) fail(field + "[" + std::to_string(i) + "]", n[i], "must be a string");
      out.push_back(n[i].Scalar());
    }
    return out;
  }
  YAML::Node map(const YAML::Node& parent, const char* key, const std::string& field, bool required) const {
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) {
      if (required) fail(field, "missing");
      return YAML::Node(YAML::NodeType::Undefined);
    }
    if (!n.IsMap()) fail(field, n, "must be a mapping");
    return n;
  }
};

// ---- writing it back -----------------------------------------------------------------------------

// True when a string written plain would be read back as something else (a bool, null, number,
// timestamp), or would not be read back at all.
bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  static const std::set<std::string> words{"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"};
  if (words.count(lower(s))) return true;
  char c = s.front();
  if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+' || c == '.') return true;
  return false;
}

void emit_yaml(YAML::Emitter& out, const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      if (n.size() == 0) {
        out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        return;
      }
      out << YAML::BeginMap;
      for (auto it = n.begin(); it != n.end(); ++it) {
        out << YAML::Key;
        emit_yaml(out, it->first);
        out << YAML::Value;
        emit_yaml(out, it->second);
      }
      out << YAML::EndMap;
      return;
    case YAML::NodeType::Sequence:
      if (n.size() == 0) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        return;
      }
      out << YAML::BeginSeq;
      for (size_t i = 0; i < n.size(); ++i) emit_yaml(out, n[i]);
      out << YAML::EndSeq;
      return;
    case YAML::NodeType::Scalar:
      // A quoted scalar (tag "!") is a string: keep it one. A plain scalar stays plain.
      if (n.Tag() == "!" && needs_quotes(n.Scalar())) out << YAML::DoubleQuoted << n.Scalar();
      else out << n.Scalar();
      return;
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      out << YAML::Null;
      return;
  }
}

nlohmann::ordered_json to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::ordered_json out = nlohmann::ordered_json::object();
      for (auto it = n.begin(); it != n.end(); ++it) out[it->first.Scalar()] = to_json(it->second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::ordered_json out = nlohmann::ordered_json::array();
      for (size_t i = 0; i < n.size(); ++i) out.push_back(to_json(n[i]));
      return out;
    }
    case YAML::NodeType::Scalar: {
      if (n.Tag() == "!") return n.Scalar();
      // A plain scalar from JSON input is a number, true, false or null.
      nlohmann::ordered_json v = nlohmann::ordered_json::parse(n.Scalar(), nullptr, false);
      if (!v.is_discarded() && (v.is_number() || v.is_boolean() || v.is_null())) return v;
      return n.Scalar();
    }
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
  }
  return nullptr;
}

// Walks the document once with a budget, so that writing it back cannot blow up (YAML aliases can make
// a small text a huge tree) or recurse without bound.
void check_size(const YAML::Node& n, int depth, long& budget, const std::string& what) {
  if (--budget < 0) throw Error(ErrorKind::BadInput, what + ": the object is too large (over 100000 nodes)");
  if (depth > 64) throw Error(ErrorKind::BadInput, what + ": the object is nested too deeply (over 64 levels)");
  if (n.IsScalar() && !valid_utf8(n.Scalar()))
    throw Error(ErrorKind::BadInput, what + (n.Mark().line >= 0 ? ":" + std::to_string(n.Mark().line + 1) : std::string()) +
                                         ": not valid UTF-8 (Kubernetes objects are UTF-8 text)");
  if (n.IsMap()) {
    for (auto it = n.begin(); it != n.end(); ++it) {
      check_size(it->first, depth + 1, budget, what);
      check_size(it->second, depth + 1, budget, what);
    }
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) check_size(n[i], depth + 1, budget, what);
  }
}

YAML::Node string_node(const std::string& s) {
  YAML::Node n(s);
  n.SetTag("!");
  return n;
}

}  // namespace

// ---- signers and rules ---------------------------------------------------------------------------

std::optional<BuiltinSigner> builtin_signer(const std::string& name) {
  if (name == kKubeApiserverClientSigner) return BuiltinSigner::KubeApiserverClient;
  if (name == kKubeletClientSigner) return BuiltinSigner::KubeletClient;
  if (name == kKubeletServingSigner) return BuiltinSigner::KubeletServing;
  return std::nullopt;
}

const char* signer_name(BuiltinSigner signer) {
  switch (signer) {
    case BuiltinSigner::KubeApiserverClient: return kKubeApiserverClientSigner;
    case BuiltinSigner::KubeletClient: return kKubeletClientSigner;
    case BuiltinSigner::KubeletServing: return kKubeletServingSigner;
  }
  return "";
}

CsrContent CsrContent::of(const X509_REQ* csr) {
  CsrContent c;
  const X509_NAME* name = X509_REQ_get_subject_name(csr);
  for (int i = 0; i < X509_NAME_entry_count(name); ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    if (nid == NID_organizationName) c.organizations.push_back(utf8_of(X509_NAME_ENTRY_get_data(e)));
    else if (nid == NID_commonName) c.common_name = utf8_of(X509_NAME_ENTRY_get_data(e));
  }
  c.sans = SubjectAltNames::of_csr(csr);
  return c;
}

std::optional<Refusal> check_signer_rules(BuiltinSigner signer, const CsrContent& csr, const std::vector<std::string>& usages,
                                          std::optional<std::int64_t> expiration_seconds) {
  auto refuse = [](std::string message) { return std::optional<Refusal>(Refusal{"SignerValidationFailure", std::move(message)}); };
  // The API server's validation (ValidateCertificateSigningRequestCreate) never lets such an object in.
  if (expiration_seconds && *expiration_seconds < 600)
    return refuse("spec.expirationSeconds: Invalid value: " + std::to_string(*expiration_seconds) +
                  ": may not specify a duration less than 600 seconds (10 minutes)");
  const std::set<std::string> u = as_set(usages);
  const bool nodes_only = csr.organizations == std::vector<std::string>{kSystemNodes};
  switch (signer) {
    case BuiltinSigner::KubeApiserverClient: {
      bool client_auth = false;
      for (const auto& x : usages) {
        if (x == "client auth") client_auth = true;
        else if (x != "digital signature" && x != "key encipherment")
          return refuse("invalid usage for client certificate: " + x);
      }
      if (!client_auth) return refuse("missing required usage for client certificate: client auth");
      return std::nullopt;
    }
    case BuiltinSigner::KubeletClient:
      if (!nodes_only) return refuse("subject organization is not system:nodes");
      if (!csr.sans.dns.empty()) return refuse("DNS subjectAltNames are not allowed");
      if (!csr.sans.emails.empty()) return refuse("Email subjectAltNames are not allowed");
      if (!csr.sans.ips.empty()) return refuse("IP subjectAltNames are not allowed");
      if (!csr.sans.uris.empty()) return refuse("URI subjectAltNames are not allowed");
      if (!starts_with(csr.common_name, kNodePrefix)) return refuse("subject common name does not begin with system:node:");
      if (u != kKubeletClientUsages && u != kKubeletClientUsagesNoRsa)
        return refuse("usages did not match " + go_list(kKubeletClientUsages));
      return std::nullopt;
    case BuiltinSigner::KubeletServing:
      if (!nodes_only) return refuse("subject organization is not system:nodes");
      if (csr.sans.dns.empty() && csr.sans.ips.empty()) return refuse("DNS or IP subjectAltName is required");
      if (!csr.sans.emails.empty()) return refuse("Email subjectAltNames are not allowed");
      if (!csr.sans.uris.empty()) return refuse("URI subjectAltNames are not allowed");
      if (u != kKubeletServingUsages && u != kKubeletServingUsagesNoRsa)
        return refuse("usages did not match " + go_list(kKubeletServingUsages));
      if (!starts_with(csr.common_name, kNodePrefix)) return refuse("subject common name does not begin with system:node:");
      return std::nullopt;
  }
  return std::nullopt;
}

std::chrono::seconds csr_ttl(std::optional<std::int64_t> expiration_seconds, std::chrono::seconds signing_duration) {
  if (!expiration_seconds) return signing_duration;
  const std::chrono::seconds requested{*expiration_seconds};
  const std::chrono::seconds min{600};
  if (requested > signing_duration) return signing_duration;
  if (requested < min) return min;
  return requested;
}

Validity csr_validity(std::time_t now, std::chrono::seconds ttl, std::time_t ca_not_after) {
  constexpr std::time_t backdate = 5 * 60;
  constexpr std::chrono::seconds short_ttl = std::chrono::hours(8);
  if (now >= ca_not_after)
    throw Error(ErrorKind::Policy, "the kubernetes-ca certificate expired at " + iso8601(ca_not_after) +
                                       "; refusing to sign (renew the CA first)");
  Validity v;
  v.not_before = now - backdate;
  const auto t = static_cast<std::time_t>(ttl.count());
  v.not_after = ttl < short_ttl ? now + t : now + t - backdate;
  if (v.not_after >= ca_not_after) v.not_after = ca_not_after;
  return v;
}

ApprovalVerdict approval_policy(BuiltinSigner signer, const CsrContent& csr, const std::vector<std::string>& usages,
                                std::optional<std::int64_t> expiration_seconds, const std::string& username,
                                const std::vector<std::string>& groups, const std::vector<Node>& nodes) {
  auto no = [](std::string m) { return ApprovalVerdict{false, std::move(m)}; };
  if (signer == BuiltinSigner::KubeApiserverClient)
    return no("kubernetes.io/kube-apiserver-client requests are never approved automatically (kubectl certificate approve)");
  if (auto refusal = check_signer_rules(signer, csr, usages, expiration_seconds))
    return no("the request breaks the signer's rules (" + refusal->message + ")");

  if (signer == BuiltinSigner::KubeletClient) {
    if (contains(groups, kSystemBootstrappers))
      return {true, "new node client certificate requested by " + username + " (group system:bootstrappers)"};
    if (!username.empty() && username == csr.common_name && contains(groups, kSystemNodes))
      return {true, "client certificate renewal requested by the node itself (" + username + ")"};
    return no("kubelet client certificates are approved for group system:bootstrappers (new nodes) or for the node "
              "itself renewing (username == CN \"" + csr.common_name + "\", group system:nodes); the requester is \"" +
              username + "\"");
  }

  // kubelet-serving
  if (!starts_with(username, kNodePrefix) || username.size() == std::string(kNodePrefix).size())
    return no("the requester \"" + username + "\" is not a node (system:node:<name>)");
  if (!contains(groups, kSystemNodes)) return no("the requester " + username + " is not in group system:nodes");
  if (csr.common_name != username)
    return no("the CSR's CN \"" + csr.common_name + "\" is not the requester " + username);
  if (!contains(usages, "server auth")) return no("usages do not include server auth");
  for (const auto& x : usages)
    if (x != "server auth" && x != "digital signature" && x != "key encipherment")
      return no("usage \"" + x + "\" is not allowed for a kubelet serving certificate");
  const std::string node_name = username.substr(std::string(kNodePrefix).size());
  auto it = std::find_if(nodes.begin(), nodes.end(), [&](const Node& n) { return n.name == node_name; });
  if (it == nodes.end()) return no("node \"" + node_name + "\" is not in the cluster file");
  for (const auto& dns : csr.sans.dns)
    if (lower(dns) != lower(it->name))
      return no("DNS name \"" + dns + "\" does not belong to node " + node_name + " (only \"" + it->name + "\" does)");
  const std::string node_ip = ip_bytes(it->ip);
  for (const auto& ip : csr.sans.ips)
    if (node_ip.empty() || ip_bytes(ip) != node_ip)
      return no("IP address " + ip + " does not belong to node " + node_name + " (only " + it->ip + " does)");
  return {true, "kubelet serving certificate for node " + node_name + " (its own name and IP)"};
}

// ---- CsrObject -----------------------------------------------------------------------------------

CsrObject::CsrObject() : m_doc(std::make_unique<YAML::Node>()) {}
CsrObject::CsrObject(CsrObject&&) noexcept = default;
CsrObject& CsrObject::operator=(CsrObject&&) noexcept = default;
CsrObject::~CsrObject() = default;

CsrObject CsrObject::parse(const std::string& text, const std::string& what) {
  CsrObject obj;
  const Reader r{what};
  auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw Error(ErrorKind::BadInput, what + ": empty input (expected a CertificateSigningRequest)");
  obj.m_format = text[first] == '{' ? Format::Json : Format::Yaml;
  if (text.find('\0') != std::string::npos) throw Error(ErrorKind::BadInput, what + ": contains a NUL byte");

  std::vector<YAML::Node> docs;
  try {
    check_document_count(text, what);
    for (auto& d : YAML::LoadAll(text))
      if (d.IsDefined() && !d.IsNull()) docs.push_back(d);
  } catch (const YAML::Exception& e) {
    std::string where = what;
    if (e.mark.line >= 0) where += ":" + std::to_string(e.mark.line + 1);
    throw Error(ErrorKind::BadInput, where + ": not valid " + (obj.m_format == Format::Json ? "JSON" : "YAML") + ": " + e.msg);
  }
  if (docs.empty()) throw Error(ErrorKind::BadInput, what + ": empty input (expected a CertificateSigningRequest)");
  if (docs.size() > 1)
    throw Error(ErrorKind::BadInput, what + ": holds " + std::to_string(docs.size()) +
                                         " documents; sign-csr reads one CertificateSigningRequest");
  YAML::Node doc = docs.front();
  if (!doc.IsMap()) r.fail("the document", doc, "must be a mapping (a CertificateSigningRequest object)");
  long budget = 100000;
  check_size(doc, 0, budget, what);
  // A key given twice is ambiguous: YAML readers take the first, JSON readers (and what sign-csr writes
  // back as JSON) the last, so the object written back could lose its certificate or change its name.
  // sigs.k8s.io/yaml, which kubectl uses, refuses them too.
  refuse_duplicate_keys(doc, what);

  try {
    const std::string kind = r.str(doc, "kind", "kind").value_or("");
    if (kind == "List" || kind == "CertificateSigningRequestList")
      r.fail("kind", doc["kind"], kind + " of " + std::to_string(doc["items"].size()) +
                                      " objects; sign-csr reads one CertificateSigningRequest (kubectl get csr NAME -o json)");
    if (kind != "CertificateSigningRequest")
      r.fail("kind", kind.empty() ? "missing (expected CertificateSigningRequest)" : "\"" + kind + "\" is not CertificateSigningRequest");
    const std::string api = r.str(doc, "apiVersion", "apiVersion").value_or("");
    if (api != "certificates.k8s.io/v1")
      r.fail("apiVersion", api.empty() ? "missing (expected certificates.k8s.io/v1)"
                                       : "\"" + api + "\" is not certificates.k8s.io/v1");

    YAML::Node meta = r.map(doc, "metadata", "metadata", false);
    if (meta.IsDefined()) {
      obj.m_name = r.str(meta, "name", "metadata.name").value_or("");
      obj.m_uid = r.str(meta, "uid", "metadata.uid").value_or("");
    }

    YAML::Node spec = r.map(doc, "spec", "spec", true);
    auto request = r.str(spec, "request", "spec.request");
    if (!request || request->empty()) r.fail("spec.request", "missing");
    auto signer = r.str(spec, "signerName", "spec.signerName");
    if (!signer || signer->empty()) r.fail("spec.signerName", "missing");
    obj.m_signer_name = *signer;
    YAML::Node exp = spec["expirationSeconds"];
    if (exp.IsDefined() && !exp.IsNull()) {
      long long v = 0;
      if (!exp.IsScalar() || exp.Tag() == "!" || !YAML::convert<long long>::decode(exp, v))
        r.fail("spec.expirationSeconds", exp, "must be an integer");
      if (v < INT32_MIN || v > INT32_MAX) r.fail("spec.expirationSeconds", exp, "does not fit in an int32");
      obj.m_expiration_seconds = v;
    }
    obj.m_usages = r.strings(spec, "usages", "spec.usages");
    obj.m_username = r.str(spec, "username", "spec.username").value_or("");
    obj.m_groups = r.strings(spec, "groups", "spec.groups");

    YAML::Node status = r.map(doc, "status", "status", false);
    if (status.IsDefined()) {
      YAML::Node conds = status["conditions"];
      if (conds.IsDefined() && !conds.IsNull()) {
        if (!conds.IsSequence()) r.fail("status.conditions", conds, "must be a list");
        for (size_t i = 0; i < conds.size(); ++i) {
          const std::string field = "status.conditions[" + std::to_string(i) + "]";
          if (!conds[i].IsMap()) r.fail(field, conds[i], "must be a mapping");
          CsrCondition c;
          c.type = r.str(conds[i], "type", field + ".type").value_or("");
          c.status = r.str(conds[i], "status", field + ".status").value_or("");
          c.reason = r.str(conds[i], "reason", field + ".reason").value_or("");
          c.message = r.str(conds[i], "message", field + ".message").value_or("");
          if (c.type.empty()) r.fail(field + ".type", conds[i], "missing");
          obj.m_conditions.push_back(std::move(c));
        }
      }
      obj.m_has_certificate = !r.str(status, "certificate", "status.certificate").value_or("").empty();
    }

    // spec.request: base64 (JSON's []byte) of a PEM CERTIFICATE REQUEST (Go's ParseCSR).
    auto pem = base64_decode(*request);
    if (!pem) r.fail("spec.request", spec["request"], "is not base64");
    const std::string begin = "-----BEGIN CERTIFICATE REQUEST-----";
    auto at = pem->find(begin);
    if (at == std::string::npos || pem->find_first_not_of(" \t\r\n") != at)
      r.fail("spec.request", spec["request"], "is not a PEM CERTIFICATE REQUEST");
    try {
      obj.m_request = csr_from_pem_or_der(*pem, what + ": spec.request");
      verify_csr_signature(obj.m_request.get());
    } catch (const Error& e) {
      throw Error(ErrorKind::BadInput, std::string(e.what()).find(what) == 0 ? e.what() : what + ": spec.request: " + e.what());
    }
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::BadInput, what + ": " + e.msg);
  }
  *obj.m_doc = doc;
  return obj;
}

bool CsrObject::has_true_condition(const std::string& type) const {
  return std::any_of(m_conditions.begin(), m_conditions.end(),
                     [&](const CsrCondition& c) { return c.type == type && c.status == "True"; });
}

void CsrObject::add_condition(const std::string& type, const std::string& reason, const std::string& message, std::time_t at) {
  YAML::Node& doc = *m_doc;
  if (!doc["status"].IsMap()) doc["status"] = YAML::Node(YAML::NodeType::Map);
  YAML::Node status = doc["status"];
  if (!status["conditions"].IsSequence()) status["conditions"] = YAML::Node(YAML::NodeType::Sequence);
  YAML::Node c(YAML::NodeType::Map);
  c["type"] = string_node(type);
  c["status"] = string_node("True");
  c["reason"] = string_node(reason);
  c["message"] = string_node(message);
  c["lastUpdateTime"] = string_node(iso8601(at));
  c["lastTransitionTime"] = string_node(iso8601(at));
  YAML::Node conds = status["conditions"];
  conds.push_back(c);
  m_conditions.push_back(CsrCondition{type, "True", reason, message});
}

void CsrObject::set_certificate(const std::string& pem) {
  YAML::Node& doc = *m_doc;
  if (!doc["status"].IsMap()) doc["status"] = YAML::Node(YAML::NodeType::Map);
  YAML::Node status = doc["status"];
  status["certificate"] = string_node(base64_encode(pem));
  m_has_certificate = true;
}

std::string CsrObject::serialize() const {
  if (m_format == Format::Json) {
    try {
      return to_json(*m_doc).dump(4) + "\n";
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorKind::BadInput, std::string("the object cannot be written as JSON: ") + e.what());
    }
  }
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  emit_yaml(out, *m_doc);
  if (!out.good()) throw Error(ErrorKind::Internal, "writing the object as YAML: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

// ---- the signer ----------------------------------------------------------------------------------

SignReport sign_csr(CsrObject& csr, const SignOptions& options, const X509* ca_cert, const std::function<Issuer&()>& issuer) {
  const std::time_t at = options.now != 0 ? options.now : now();
  const std::string label = "CSR " + (csr.name().empty() ? std::string("(unnamed)") : csr.name());
  SignReport report;
  auto skip = [&](const std::string& why) {
    report.outcome = SignReport::Outcome::Skipped;
    report.message = label + " " + why + "; left unchanged";
    return std::move(report);
  };
  if (csr.has_certificate()) return skip("already has a certificate");
  if (csr.has_true_condition("Failed")) return skip("already has a Failed condition");
  if (csr.has_true_condition("Denied")) return skip("was denied");
  auto signer = builtin_signer(csr.signer_name());
  if (!signer)
    return skip("is for signer \"" + csr.signer_name() + "\", which hwca does not sign for (it signs " +
                kKubeApiserverClientSigner + ", " + kKubeletClientSigner + " and " + kKubeletServingSigner +
                "; kube-controller-manager ignores other signers too)");
  const CsrContent content = CsrContent::of(csr.request());

  if (!csr.has_true_condition("Approved")) {
    if (!options.approve)
      return skip("is not approved (kube-controller-manager signs only approved CSRs: `kubectl certificate approve " +
                  (csr.name().empty() ? std::string("NAME") : csr.name()) + "`, or pass --approve to apply hwca's policy)");
    ApprovalVerdict v = approval_policy(*signer, content, csr.usages(), csr.expiration_seconds(), csr.username(), csr.groups(),
                                        options.nodes);
    if (!v.approved) return skip("is not approved and --approve's policy does not approve it: " + v.message);
    csr.add_condition("Approved", "AutoApproved", "hwca k8s sign-csr --approve: " + v.message, at);
  }

  if (auto refusal = check_signer_rules(*signer, content, csr.usages(), csr.expiration_seconds())) {
    csr.add_condition("Failed", refusal->reason, refusal->message, at);
    report.outcome = SignReport::Outcome::Refused;
    report.message = label + " refused (" + csr.signer_name() + "): " + refusal->message;
    return report;
  }

  if (!ca_cert) throw Error(ErrorKind::Internal, "sign_csr without a CA certificate");
  const std::time_t ca_not_after = asn1_time_to_time_t(X509_get0_notAfter(ca_cert));
  const Validity validity = csr_validity(at, csr_ttl(csr.expiration_seconds(), options.signing_duration), ca_not_after);

  Profile profile;
  profile.name = std::string("k8s:") + csr.signer_name();
  profile.usages = csr.usages();
  profile.expiry = std::chrono::seconds(validity.not_after - validity.not_before);
  profile.not_before = validity.not_before;
  profile.not_after = validity.not_after;

  IssueRequest req;
  req.subject.reset(X509_NAME_dup(X509_REQ_get_subject_name(csr.request())));
  if (!req.subject) throw_openssl(ErrorKind::Internal, "copying the CSR's subject");
  req.sans = content.sans;
  req.public_key = X509_REQ_get0_pubkey(csr.request());
  if (!req.public_key) throw_openssl(ErrorKind::BadInput, label + ": the CSR's public key cannot be read");
  req.profile = &profile;
  req.requester = "k8s:" + csr.username();
  req.request_id = options.request_id;
  report.certificate = issuer().issue(req);
  csr.set_certificate(x509_to_pem(report.certificate.get()));
  report.outcome = SignReport::Outcome::Issued;
  return report;
}

}  // namespace hwca::core::k8s
