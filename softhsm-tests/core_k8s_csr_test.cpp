// Kubernetes CertificateSigningRequest objects: the built-in signers' rules (spec §3.1), ttl and
// validity, the --approve policy, reading and writing the object, and issuing through core::Issuer.
#include "core_helpers.h"

#include "core/engine.h"
#include "core/k8s_csr.h"
#include "core/ledger.h"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <optional>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using hwca::test::TempDir;
using namespace hwca::core;
using namespace hwca::core::k8s;

namespace {

const std::vector<std::string> kClientEc{"digital signature", "client auth"};
const std::vector<std::string> kClientRsa{"digital signature", "key encipherment", "client auth"};
const std::vector<std::string> kServingEc{"digital signature", "server auth"};
const std::vector<std::string> kServingRsa{"key encipherment", "digital signature", "server auth"};

CsrContent content(const std::string& cn, std::vector<std::string> orgs, SubjectAltNames sans = {}) {
  CsrContent c;
  c.common_name = cn;
  c.organizations = std::move(orgs);
  c.sans = std::move(sans);
  return c;
}

SubjectAltNames dns_ip(std::vector<std::string> dns, std::vector<std::string> ips) {
  SubjectAltNames s;
  s.dns = std::move(dns);
  s.ips = std::move(ips);
  return s;
}

std::string refusal_of(BuiltinSigner s, const CsrContent& c, const std::vector<std::string>& usages,
                       std::optional<std::int64_t> exp = std::nullopt) {
  auto r = check_signer_rules(s, c, usages, exp);
  if (!r) return "accepted";
  CHECK(r->reason == "SignerValidationFailure");
  return r->message;
}

std::string b64(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string unb64(const std::string& text) {
  std::string out(text.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  REQUIRE(n >= 0);
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '\0') out.pop_back();  // EVP_DecodeBlock keeps the padding's zero bytes
  return out;
}

hwca::X509_NAME_ptr node_name(const std::string& cn, const std::string& o = "system:nodes") {
  std::vector<NameAttribute> attrs;
  if (!o.empty()) attrs.push_back({NID_organizationName, o, false});
  attrs.push_back({NID_commonName, cn, false});
  return make_name(attrs);
}

std::string csr_pem(const std::string& cn, const SubjectAltNames& sans, EVP_PKEY* key, const std::string& o = "system:nodes",
                    bool request_ca = false) {
  auto name = node_name(cn, o);
  auto csr = make_csr(name.get(), sans, key, request_ca);
  return hwca::csr_to_pem(csr.get());
}

struct ObjectSpec {
  std::string request_pem;
  std::string signer = kKubeletServingSigner;
  std::vector<std::string> usages = kServingEc;
  std::string username = "system:node:w1";
  std::vector<std::string> groups = {"system:nodes", "system:authenticated"};
  std::optional<int> expiration_seconds;
  bool approved = true;
};

// The object as `kubectl get csr NAME -o yaml` prints it.
std::string yaml_object(const ObjectSpec& s) {
  std::string y = "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n"
                  "  creationTimestamp: \"2024-05-01T10:00:00Z\"\n  generateName: csr-\n  name: csr-test1\n"
                  "  resourceVersion: \"4711\"\n  uid: 3f0c2d1e-0000-4000-8000-000000000001\nspec:\n";
  if (s.expiration_seconds) y += "  expirationSeconds: " + std::to_string(*s.expiration_seconds) + "\n";
  y += "  groups:\n";
  for (const auto& g : s.groups) y += "  - " + g + "\n";
  y += "  request: " + b64(s.request_pem) + "\n  signerName: " + s.signer + "\n  usages:\n";
  for (const auto& u : s.usages) y += "  - " + u + "\n";
  y += "  username: " + s.username + "\n";
  if (s.approved)
    y += "status:\n  conditions:\n  - lastTransitionTime: \"2024-05-01T10:00:05Z\"\n    lastUpdateTime: \"2024-05-01T10:00:05Z\"\n"
         "    message: This CSR was approved by kubectl certificate approve.\n    reason: KubectlApprove\n    status: \"True\"\n"
         "    type: Approved\n";
  else
    y += "status: {}\n";
  return y;
}

// The same as `kubectl get csr NAME -o json` prints it.
std::string json_object(const ObjectSpec& s) {
  nlohmann::ordered_json j;
  j["apiVersion"] = "certificates.k8s.io/v1";
  j["kind"] = "CertificateSigningRequest";
  j["metadata"] = {{"creationTimestamp", "2024-05-01T10:00:00Z"}, {"generateName", "csr-"}, {"name", "csr-test1"},
                   {"resourceVersion", "4711"}, {"uid", "3f0c2d1e-0000-4000-8000-000000000001"}};
  nlohmann::ordered_json spec;
  if (s.expiration_seconds) spec["expirationSeconds"] = *s.expiration_seconds;
  spec["groups"] = s.groups;
  spec["request"] = b64(s.request_pem);
  spec["signerName"] = s.signer;
  spec["usages"] = s.usages;
  spec["username"] = s.username;
  j["spec"] = spec;
  j["status"] = nlohmann::ordered_json::object();
  if (s.approved)
    j["status"]["conditions"] = {{{"lastTransitionTime", "2024-05-01T10:00:05Z"}, {"lastUpdateTime", "2024-05-01T10:00:05Z"},
                                  {"message", "approved"}, {"reason", "KubectlApprove"}, {"status", "True"}, {"type", "Approved"}}};
  return j.dump(4) + "\n";
}

struct Ca {
  TempDir dir;
  std::unique_ptr<Ledger> ledger = Ledger::open(dir / "ledger.db");
  hwca::EVP_PKEY_ptr key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  hwca::X509_ptr cert;
  int issuer_calls = 0;
  std::optional<Issuer> issuer;

  explicit Ca(std::time_t not_after = now() + 10LL * 365 * 86400) {
    CertTemplate t;
    t.subject = hwca::test::cn_name("kubernetes");
    t.key_usage = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_DIGITAL_SIGNATURE;
    t.is_ca = true;
    t.not_before = now() - 86400;
    t.not_after = not_after;
    cert = build_certificate(t, random_serial().get(), key.get(), nullptr, key.get());
  }
  std::function<Issuer&()> get() {
    return [this]() -> Issuer& {
      ++issuer_calls;
      if (!issuer) issuer.emplace(cert.get(), key.get(), *ledger);
      return *issuer;
    };
  }
};

std::vector<Node> nodes() { return {{"cp1", "127.0.0.1", 0}, {"w1", "10.0.0.21", 0}, {"w2", "10.0.0.22", 0}}; }

}  // namespace

TEST_CASE("signer rules: kube-apiserver-client-kubelet", "[core][k8s-csr]") {
  const auto s = BuiltinSigner::KubeletClient;
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), kClientEc) == "accepted");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), kClientRsa) == "accepted");
  CHECK(refusal_of(s, content("system:node:w1", {"system:masters"}), kClientEc) == "subject organization is not system:nodes");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes", "x"}), kClientEc) == "subject organization is not system:nodes");
  CHECK(refusal_of(s, content("system:node:w1", {}), kClientEc) == "subject organization is not system:nodes");
  CHECK(refusal_of(s, content("w1", {"system:nodes"}), kClientEc) == "subject common name does not begin with system:node:");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, dns_ip({"w1"}, {})), kClientEc) ==
        "DNS subjectAltNames are not allowed");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, dns_ip({}, {"10.0.0.21"})), kClientEc) ==
        "IP subjectAltNames are not allowed");
  SubjectAltNames email;
  email.emails = {"w1@example.com"};
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, email), kClientEc) == "Email subjectAltNames are not allowed");
  SubjectAltNames uri;
  uri.uris = {"spiffe://cluster/w1"};
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, uri), kClientEc) == "URI subjectAltNames are not allowed");
  const std::string usage_msg = "usages did not match [client auth digital signature key encipherment]";
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), {"client auth"}) == usage_msg);
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), {"digital signature", "client auth", "server auth"}) == usage_msg);
  // A set: duplicates do not matter, as in Go's sets.String.
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), {"client auth", "digital signature", "client auth"}) == "accepted");
  // The API server's validation of expirationSeconds.
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), kClientEc, 599) ==
        "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), kClientEc, 600) == "accepted");
}

TEST_CASE("signer rules: kubelet-serving", "[core][k8s-csr]") {
  const auto s = BuiltinSigner::KubeletServing;
  const auto sans = dns_ip({"w1"}, {"10.0.0.21"});
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, sans), kServingEc) == "accepted");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, sans), kServingRsa) == "accepted");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, dns_ip({}, {"10.0.0.21"})), kServingEc) == "accepted");
  CHECK(refusal_of(s, content("system:node:w1", {"other"}, sans), kServingEc) == "subject organization is not system:nodes");
  CHECK(refusal_of(s, content("node:w1", {"system:nodes"}, sans), kServingEc) == "subject common name does not begin with system:node:");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}), kServingEc) == "DNS or IP subjectAltName is required");
  SubjectAltNames email = sans;
  email.emails = {"w1@example.com"};
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, email), kServingEc) == "Email subjectAltNames are not allowed");
  SubjectAltNames uri = sans;
  uri.uris = {"https://w1"};
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, uri), kServingEc) == "URI subjectAltNames are not allowed");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, sans), {"digital signature", "server auth", "client auth"}) ==
        "usages did not match [digital signature key encipherment server auth]");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, sans), {"server auth"}) ==
        "usages did not match [digital signature key encipherment server auth]");
  // Go checks usages before the CN: the first failing rule is the message.
  CHECK(refusal_of(s, content("w1", {"system:nodes"}, sans), {"server auth"}) ==
        "usages did not match [digital signature key encipherment server auth]");
  CHECK(refusal_of(s, content("system:node:w1", {"system:nodes"}, sans), kServingEc, 599).find("expirationSeconds") !=
        std::string::npos);
}

TEST_CASE("signer rules: kube-apiserver-client", "[core][k8s-csr]") {
  const auto s = BuiltinSigner::KubeApiserverClient;
  SubjectAltNames any;
  any.dns = {"anything"};
  any.emails = {"a@b.c"};
  CHECK(refusal_of(s, content("jane", {"developers"}, any), {"client auth"}) == "accepted");
  CHECK(refusal_of(s, content("", {}), kClientRsa) == "accepted");
  CHECK(refusal_of(s, content("jane", {}), {"digital signature"}) == "missing required usage for client certificate: client auth");
  CHECK(refusal_of(s, content("jane", {}), {"client auth", "server auth"}) == "invalid usage for client certificate: server auth");
  CHECK(refusal_of(s, content("jane", {}), {"client auth", "cert sign"}) == "invalid usage for client certificate: cert sign");
  CHECK(refusal_of(s, content("jane", {}), {"client auth"}, 599).find("600 seconds") != std::string::npos);
}

TEST_CASE("signer names", "[core][k8s-csr]") {
  CHECK(builtin_signer("kubernetes.io/kube-apiserver-client") == BuiltinSigner::KubeApiserverClient);
  CHECK(builtin_signer("kubernetes.io/kube-apiserver-client-kubelet") == BuiltinSigner::KubeletClient);
  CHECK(builtin_signer("kubernetes.io/kubelet-serving") == BuiltinSigner::KubeletServing);
  CHECK_FALSE(builtin_signer("kubernetes.io/legacy-unknown"));
  CHECK_FALSE(builtin_signer("example.com/my-signer"));
  CHECK(std::string(signer_name(BuiltinSigner::KubeletServing)) == "kubernetes.io/kubelet-serving");
}

TEST_CASE("ttl: signing duration, cap and the 10-minute floor", "[core][k8s-csr]") {
  using std::chrono::hours;
  using std::chrono::seconds;
  CHECK(csr_ttl(std::nullopt, hours(8760)) == hours(8760));
  CHECK(csr_ttl(std::nullopt, hours(24)) == hours(24));
  CHECK(csr_ttl(3600, hours(8760)) == seconds(3600));
  CHECK(csr_ttl(600, hours(8760)) == seconds(600));
  CHECK(csr_ttl(10LL * 365 * 86400, hours(8760)) == hours(8760));  // longer than the flag: capped
  CHECK(csr_ttl(8760LL * 3600, hours(8760)) == hours(8760));
  CHECK(csr_ttl(300, hours(8760)) == seconds(600));                // shorter than 10 minutes: 10 minutes
}

TEST_CASE("validity: backdate, short lifetimes and the CA's notAfter", "[core][k8s-csr]") {
  using std::chrono::hours;
  using std::chrono::seconds;
  const std::time_t t0 = 1'800'000'000;
  const std::time_t far = t0 + 20LL * 365 * 86400;
  // Long: notAfter = now + ttl - 5 min.
  Validity v = csr_validity(t0, hours(8760), far);
  CHECK(v.not_before == t0 - 300);
  CHECK(v.not_after == t0 + 8760LL * 3600 - 300);
  // Exactly 8 h is not short.
  v = csr_validity(t0, hours(8), far);
  CHECK(v.not_after == t0 + 8 * 3600 - 300);
  // Short (< 8 h): notAfter = now + ttl, not backdated.
  v = csr_validity(t0, seconds(8 * 3600 - 1), far);
  CHECK(v.not_after == t0 + 8 * 3600 - 1);
  v = csr_validity(t0, seconds(600), far);
  CHECK(v.not_before == t0 - 300);
  CHECK(v.not_after == t0 + 600);
  // Capped at the CA's notAfter.
  v = csr_validity(t0, hours(8760), t0 + 86400);
  CHECK(v.not_after == t0 + 86400);
  // Refused once the CA has expired.
  CHECK(error_of([&] { csr_validity(t0, hours(1), t0); }).kind() == ErrorKind::Policy);
  CHECK(error_of([&] { csr_validity(t0, hours(1), t0 - 1); }).kind() == ErrorKind::Policy);
}

TEST_CASE("approval policy: kubelet client certificates", "[core][k8s-csr]") {
  const auto s = BuiltinSigner::KubeletClient;
  const auto c = content("system:node:w9", {"system:nodes"});
  // A new node: its bootstrap token's group.
  auto v = approval_policy(s, c, kClientEc, std::nullopt, "system:bootstrap:abcdef", {"system:bootstrappers", "system:authenticated"}, nodes());
  CHECK(v.approved);
  CHECK(v.message.find("system:bootstrappers") != std::string::npos);
  // A renewal: the node itself.
  v = approval_policy(s, c, kClientEc, std::nullopt, "system:node:w9", {"system:nodes", "system:authenticated"}, nodes());
  CHECK(v.approved);
  // Another node's identity, or a user: no.
  CHECK_FALSE(approval_policy(s, c, kClientEc, std::nullopt, "system:node:w1", {"system:nodes"}, nodes()).approved);
  CHECK_FALSE(approval_policy(s, c, kClientEc, std::nullopt, "jane", {"system:authenticated"}, nodes()).approved);
  CHECK_FALSE(approval_policy(s, c, kClientEc, std::nullopt, "system:node:w9", {"system:authenticated"}, nodes()).approved);
  // A request the signer would refuse is not approved either.
  v = approval_policy(s, content("system:node:w9", {"system:masters"}), kClientEc, std::nullopt, "system:bootstrap:abcdef",
                      {"system:bootstrappers"}, nodes());
  CHECK_FALSE(v.approved);
  CHECK(v.message.find("subject organization is not system:nodes") != std::string::npos);
}

TEST_CASE("approval policy: kubelet serving certificates", "[core][k8s-csr]") {
  const auto s = BuiltinSigner::KubeletServing;
  const std::vector<std::string> groups{"system:nodes", "system:authenticated"};
  auto ok = [&](const SubjectAltNames& sans, const std::vector<std::string>& usages = kServingEc,
                const std::string& user = "system:node:w1", const std::vector<std::string>& g = {"system:nodes"},
                const std::string& cn = "system:node:w1") {
    return approval_policy(s, content(cn, {"system:nodes"}, sans), usages, std::nullopt, user, g, nodes());
  };
  CHECK(ok(dns_ip({"w1"}, {"10.0.0.21"})).approved);
  CHECK(ok(dns_ip({"W1"}, {})).approved);
  CHECK(ok(dns_ip({}, {"10.0.0.21"}), kServingRsa).approved);
  // Not its own names.
  auto v = ok(dns_ip({"w1", "w2"}, {"10.0.0.21"}));
  CHECK_FALSE(v.approved);
  CHECK(v.message.find("\"w2\" does not belong to node w1") != std::string::npos);
  v = ok(dns_ip({"w1"}, {"10.0.0.22"}));
  CHECK_FALSE(v.approved);
  CHECK(v.message.find("10.0.0.22 does not belong to node w1") != std::string::npos);
  CHECK_FALSE(ok(dns_ip({"w1.example.com"}, {})).approved);
  // Not a node, not in system:nodes, a CN for another node, a node not in the cluster file.
  CHECK_FALSE(ok(dns_ip({"w1"}, {}), kServingEc, "jane", {"system:nodes"}).approved);
  CHECK_FALSE(ok(dns_ip({"w1"}, {}), kServingEc, "system:node:w1", {"system:authenticated"}).approved);
  CHECK_FALSE(ok(dns_ip({"w1"}, {}), kServingEc, "system:node:w1", {"system:nodes"}, "system:node:w2").approved);
  v = approval_policy(s, content("system:node:w9", {"system:nodes"}, dns_ip({"w9"}, {})), kServingEc, std::nullopt,
                      "system:node:w9", groups, nodes());
  CHECK_FALSE(v.approved);
  CHECK(v.message.find("not in the cluster file") != std::string::npos);
  // Usages outside server auth (+ digital signature, key encipherment) are not approved.
  CHECK_FALSE(ok(dns_ip({"w1"}, {}), {"digital signature", "server auth", "client auth"}).approved);
  // kube-apiserver-client: never.
  CHECK_FALSE(approval_policy(BuiltinSigner::KubeApiserverClient, content("jane", {}), {"client auth"}, std::nullopt, "jane",
                              {"system:masters"}, nodes())
                  .approved);
}

TEST_CASE("CSR object: YAML and JSON as kubectl prints them", "[core][k8s-csr]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  ObjectSpec s;
  s.request_pem = csr_pem("system:node:w1", dns_ip({"w1"}, {"10.0.0.21"}), key.get());
  s.expiration_seconds = 3600;
  for (const std::string& text : {yaml_object(s), json_object(s)}) {
    CsrObject o = CsrObject::parse(text, "csr");
    CHECK(o.format() == (text[0] == '{' ? CsrObject::Format::Json : CsrObject::Format::Yaml));
    CHECK(o.name() == "csr-test1");
    CHECK(o.signer_name() == kKubeletServingSigner);
    CHECK(o.expiration_seconds() == 3600);
    CHECK(o.usages() == kServingEc);
    CHECK(o.username() == "system:node:w1");
    CHECK(o.groups() == std::vector<std::string>{"system:nodes", "system:authenticated"});
    CHECK(o.has_true_condition("Approved"));
    CHECK_FALSE(o.has_certificate());
    CsrContent c = CsrContent::of(o.request());
    CHECK(c.common_name == "system:node:w1");
    CHECK(c.organizations == std::vector<std::string>{"system:nodes"});
    CHECK(c.sans.dns == std::vector<std::string>{"w1"});
    CHECK(c.sans.ips == std::vector<std::string>{"10.0.0.21"});
  }
}

TEST_CASE("CSR object: malformed input is one clear error", "[core][k8s-csr]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  ObjectSpec s;
  s.request_pem = csr_pem("system:node:w1", dns_ip({"w1"}, {}), key.get());
  const std::string good = yaml_object(s);
  auto bad = [](const std::string& text) {
    Error e = error_of([&] { CsrObject::parse(text, "csr.yaml"); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK(std::string(e.what()).rfind("csr.yaml", 0) == 0);
    return std::string(e.what());
  };
  CHECK(bad("").find("empty") != std::string::npos);
  CHECK(bad("{\"kind\": ").find("not valid JSON") != std::string::npos);
  CHECK(bad("a: [b\n").find("not valid YAML") != std::string::npos);
  CHECK(bad("- a\n- b\n").find("mapping") != std::string::npos);
  CHECK(bad("apiVersion: v1\nkind: List\nitems: [{}, {}]\n").find("List of 2 objects") != std::string::npos);
  CHECK(bad("apiVersion: v1\nkind: Pod\n").find("kind") != std::string::npos);
  std::string v1beta1 = good;
  v1beta1.replace(v1beta1.find("certificates.k8s.io/v1"), 22, "certificates.k8s.io/v1beta1");
  CHECK(bad(v1beta1).find("apiVersion") != std::string::npos);
  CHECK(bad(good + "---\n" + good).find("2 documents") != std::string::npos);
  std::string no_request = good;
  no_request.erase(no_request.find("  request: "), no_request.find('\n', no_request.find("  request: ")) - no_request.find("  request: ") + 1);
  CHECK(bad(no_request).find("spec.request: missing") != std::string::npos);
  // Not base64; base64 of something that is not a PEM CSR; a PEM CSR that does not parse.
  std::string not_b64 = good;
  not_b64.replace(not_b64.find("  request: ") + 15, 4, "$$$$");
  CHECK(bad(not_b64).find("spec.request") != std::string::npos);
  ObjectSpec cert = s;
  cert.request_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  CHECK(bad(yaml_object(cert)).find("not a PEM CERTIFICATE REQUEST") != std::string::npos);
  ObjectSpec garbage = s;
  garbage.request_pem = "-----BEGIN CERTIFICATE REQUEST-----\nTUlJQg==\n-----END CERTIFICATE REQUEST-----\n";
  CHECK(bad(yaml_object(garbage)).find("spec.request") != std::string::npos);
  // A CSR signed by another key than the one it carries.
  {
    auto other = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
    hwca::X509_REQ_ptr req(X509_REQ_new());
    REQUIRE(req);
    auto name = node_name("system:node:w1");
    REQUIRE(X509_REQ_set_subject_name(req.get(), name.get()) == 1);
    REQUIRE(X509_REQ_set_pubkey(req.get(), key.get()) == 1);
    REQUIRE(X509_REQ_sign(req.get(), other.get(), EVP_sha256()) > 0);
    ObjectSpec forged = s;
    forged.request_pem = hwca::csr_to_pem(req.get());
    CHECK(bad(yaml_object(forged)).find("signature") != std::string::npos);
  }
  // expirationSeconds must be a number (JSON "600" is a string).
  std::string quoted = json_object([&] { ObjectSpec e = s; e.expiration_seconds = 600; return e; }());
  quoted.replace(quoted.find("\"expirationSeconds\": 600"), 24, "\"expirationSeconds\": \"600\"");
  CHECK(bad(quoted).find("spec.expirationSeconds") != std::string::npos);
  // YAML aliases that would expand to a huge tree, and deep nesting, are refused before anything is written.
  std::string bomb = good + "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  for (int i = 1; i < 9; ++i)
    bomb += "x" + std::to_string(i) + ": &a" + std::to_string(i) + " [" + std::string("*a") + std::to_string(i - 1) + ", *a" +
            std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" +
            std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" +
            std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + "]\n";
  CHECK(bad(bomb).find("too large") != std::string::npos);
  CHECK(bad(good + "deep: " + std::string(100, '[') + std::string(100, ']') + "\n").find("too deeply") != std::string::npos);
  std::string huge = good;
  huge.replace(huge.find("spec:\n") + 6, 0, "  expirationSeconds: 99999999999\n");
  CHECK(bad(huge).find("int32") != std::string::npos);
}

TEST_CASE("sign_csr: an approved serving CSR is issued as kube-controller-manager issues it", "[core][k8s-csr]") {
  Ca ca;
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  ObjectSpec s;
  // The CSR asks for CA:TRUE: CSR extensions are dropped.
  s.request_pem = csr_pem("system:node:w1", dns_ip({"w1"}, {"10.0.0.21"}), key.get(), "system:nodes", true);
  s.usages = kServingRsa;  // key encipherment is copied as asked, even for an EC key (as KCM does)
  CsrObject o = CsrObject::parse(yaml_object(s), "csr");
  SignOptions opts;
  opts.now = now();
  SignReport r = sign_csr(o, opts, ca.cert.get(), ca.get());
  REQUIRE(r.outcome == SignReport::Outcome::Issued);
  CHECK(r.message.empty());
  const X509* cert = r.certificate.get();
  CHECK(hwca::test::oneline(X509_get_subject_name(cert)) == "O = system:nodes, CN = system:node:w1");
  CHECK(SubjectAltNames::of_cert(cert).describe() == std::vector<std::string>{"DNS:w1", "IP:10.0.0.21"});
  CHECK(X509_get_key_usage(const_cast<X509*>(cert)) == (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  CHECK(X509_get_extended_key_usage(const_cast<X509*>(cert)) == XKU_SSL_SERVER);
  CHECK(X509_check_ca(const_cast<X509*>(cert)) == 0);
  CHECK(asn1_time_to_time_t(X509_get0_notBefore(cert)) == opts.now - 300);
  CHECK(asn1_time_to_time_t(X509_get0_notAfter(cert)) == opts.now + 8760LL * 3600 - 300);
  CHECK(verify_chain(const_cast<X509*>(cert), {ca.cert.get()}).empty());
  // The ledger has it, with the requester.
  auto entries = ca.ledger->list();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].requester == "k8s:system:node:w1");
  CHECK(entries[0].profile == "k8s:kubernetes.io/kubelet-serving");
  CHECK(entries[0].serial == hwca::serial_hex(X509_get0_serialNumber(cert)));
  // The object comes back whole, with status.certificate and the conditions kept, strings still strings.
  YAML::Node out = YAML::Load(o.serialize());
  CHECK(out["metadata"]["resourceVersion"].Tag() == "!");
  CHECK(out["metadata"]["resourceVersion"].Scalar() == "4711");
  CHECK(out["status"]["conditions"].size() == 1);
  CHECK(out["status"]["conditions"][0]["status"].Tag() == "!");
  CHECK(unb64(out["status"]["certificate"].Scalar()) == hwca::x509_to_pem(cert));
  CHECK(out["spec"]["request"].Scalar() == b64(s.request_pem));
}

TEST_CASE("sign_csr: JSON in, JSON out, with a short lifetime", "[core][k8s-csr]") {
  Ca ca;
  auto key = hwca::generate_software_key(KeySpec::parse("rsa-2048"));
  ObjectSpec s;
  s.request_pem = csr_pem("system:node:w2", {}, key.get());
  s.signer = kKubeletClientSigner;
  s.usages = kClientRsa;
  s.username = "system:node:w2";
  s.expiration_seconds = 3600;
  CsrObject o = CsrObject::parse(json_object(s), "csr");
  SignOptions opts;
  opts.now = now();
  SignReport r = sign_csr(o, opts, ca.cert.get(), ca.get());
  REQUIRE(r.outcome == SignReport::Outcome::Issued);
  CHECK(asn1_time_to_time_t(X509_get0_notAfter(r.certificate.get())) == opts.now + 3600);
  CHECK(X509_get_extended_key_usage(r.certificate.get()) == XKU_SSL_CLIENT);
  const std::string text = o.serialize();
  REQUIRE(text.front() == '{');
  auto j = nlohmann::ordered_json::parse(text);
  CHECK(j["spec"]["expirationSeconds"] == 3600);
  CHECK(j["metadata"]["resourceVersion"] == "4711");
  CHECK(j["status"]["conditions"][0]["type"] == "Approved");
  CHECK(unb64(j["status"]["certificate"].get<std::string>()) == hwca::x509_to_pem(r.certificate.get()));
  CHECK(text.find("\n    \"metadata\": {") != std::string::npos);  // kubectl's 4-space indent
}

TEST_CASE("sign_csr: the CA caps notAfter, and an expired CA signs nothing", "[core][k8s-csr]") {
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  ObjectSpec s;
  s.request_pem = csr_pem("system:node:w1", dns_ip({"w1"}, {}), key.get());
  {
    Ca ca(now() + 86400);
    CsrObject o = CsrObject::parse(yaml_object(s), "csr");
    SignReport r = sign_csr(o, SignOptions{}, ca.cert.get(), ca.get());
    REQUIRE(r.outcome == SignReport::Outcome::Issued);
    CHECK(asn1_time_to_time_t(X509_get0_notAfter(r.certificate.get())) ==
          asn1_time_to_time_t(X509_get0_notAfter(ca.cert.get())));
  }
  {
    Ca ca(now() - 60);
    CsrObject o = CsrObject::parse(yaml_object(s), "csr");
    CHECK(error_of([&] { sign_csr(o, SignOptions{}, ca.cert.get(), ca.get()); }).kind() == ErrorKind::Policy);
    CHECK(ca.ledger->list().empty());
  }
}

TEST_CASE("sign_csr: refusals add a Failed condition and issue nothing", "[core][k8s-csr]") {
  Ca ca;
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  struct Case {
    const char* what;
    ObjectSpec spec;
    const char* message;
  };
  auto base = [&](const std::string& cn, const SubjectAltNames& sans, const std::string& o = "system:nodes") {
    ObjectSpec s;
    s.request_pem = csr_pem(cn, sans, key.get(), o);
    return s;
  };
  std::vector<Case> cases;
  cases.push_back({"wrong O", base("system:node:w1", dns_ip({"w1"}, {}), "system:masters"), "subject organization is not system:nodes"});
  cases.push_back({"CN without system:node:", base("w1", dns_ip({"w1"}, {})), "subject common name does not begin with system:node:"});
  {
    ObjectSpec s = base("system:node:w1", dns_ip({"w1"}, {}));
    s.signer = kKubeletClientSigner;
    s.usages = kClientEc;
    cases.push_back({"a SAN on a kubelet client CSR", s, "DNS subjectAltNames are not allowed"});
  }
  {
    SubjectAltNames sans = dns_ip({"w1"}, {});
    sans.emails = {"w1@example.com"};
    cases.push_back({"an email SAN on a serving CSR", base("system:node:w1", sans), "Email subjectAltNames are not allowed"});
  }
  {
    ObjectSpec s = base("system:node:w1", dns_ip({"w1"}, {}));
    s.usages = {"digital signature", "server auth", "code signing"};
    cases.push_back({"a usage outside the set", s, "usages did not match [digital signature key encipherment server auth]"});
  }
  {
    ObjectSpec s = base("system:node:w1", dns_ip({"w1"}, {}));
    s.expiration_seconds = 599;
    cases.push_back({"expirationSeconds 599", s, "may not specify a duration less than 600 seconds"});
  }
  for (const auto& c : cases) {
    SECTION(c.what) {
      for (bool json : {false, true}) {
        CsrObject o = CsrObject::parse(json ? json_object(c.spec) : yaml_object(c.spec), "csr");
        SignReport r = sign_csr(o, SignOptions{}, ca.cert.get(), ca.get());
        CHECK(r.outcome == SignReport::Outcome::Refused);
        CHECK(r.message.find(c.message) != std::string::npos);
        CHECK_FALSE(r.certificate);
        REQUIRE(o.conditions().size() == 2);
        CHECK(o.conditions()[1].type == "Failed");
        CHECK(o.conditions()[1].reason == "SignerValidationFailure");
        CHECK(o.conditions()[1].message.find(c.message) != std::string::npos);
        YAML::Node out = YAML::Load(o.serialize());
        CHECK(out["status"]["conditions"][1]["type"].Scalar() == "Failed");
        CHECK(out["status"]["conditions"][1]["status"].Scalar() == "True");
        CHECK_FALSE(out["status"]["certificate"].IsDefined());
      }
      CHECK(ca.issuer_calls == 0);
      CHECK(ca.ledger->list().empty());
    }
  }
}

TEST_CASE("sign_csr: what kube-controller-manager ignores is left unchanged", "[core][k8s-csr]") {
  Ca ca;
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  ObjectSpec s;
  s.request_pem = csr_pem("system:node:w1", dns_ip({"w1"}, {"10.0.0.21"}), key.get());
  auto unchanged = [&](const std::string& text, const SignOptions& opts, const std::string& message) {
    CsrObject o = CsrObject::parse(text, "csr");
    SignReport r = sign_csr(o, opts, ca.cert.get(), ca.get());
    CHECK(r.outcome == SignReport::Outcome::Skipped);
    CHECK(r.message.find(message) != std::string::npos);
    CHECK(r.message.find("left unchanged") != std::string::npos);
    CHECK(YAML::Load(o.serialize()).size() == YAML::Load(text).size());
    CHECK(o.serialize() == CsrObject::parse(text, "csr").serialize());
  };
  ObjectSpec pending = s;
  pending.approved = false;
  unchanged(yaml_object(pending), SignOptions{}, "is not approved");
  ObjectSpec unknown = s;
  unknown.signer = "example.com/other";
  unchanged(yaml_object(unknown), SignOptions{}, "example.com/other");
  std::string denied = yaml_object(s);
  denied.replace(denied.find("type: Approved"), 14, "type: Denied");
  unchanged(denied, SignOptions{}, "was denied");
  std::string failed = yaml_object(s);
  failed += "  - {type: Failed, status: \"True\", reason: SignerValidationFailure, message: x}\n";
  unchanged(failed, SignOptions{}, "Failed");
  std::string issued = yaml_object(s) + "  certificate: " + b64("-----BEGIN CERTIFICATE-----\n") + "\n";
  unchanged(issued, SignOptions{}, "already has a certificate");
  // --approve whose policy declines: w2's IP on w1's request.
  ObjectSpec foreign = pending;
  foreign.request_pem = csr_pem("system:node:w1", dns_ip({"w1"}, {"10.0.0.22"}), key.get());
  SignOptions approve;
  approve.approve = true;
  approve.nodes = nodes();
  unchanged(yaml_object(foreign), approve, "does not belong to node w1");
  CHECK(ca.issuer_calls == 0);
  CHECK(ca.ledger->list().empty());
}

TEST_CASE("sign_csr --approve: approved by policy, then issued", "[core][k8s-csr]") {
  Ca ca;
  auto key = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  SignOptions approve;
  approve.approve = true;
  approve.nodes = nodes();
  SECTION("kubelet serving for the node's own name and IP") {
    ObjectSpec s;
    s.request_pem = csr_pem("system:node:w1", dns_ip({"w1"}, {"10.0.0.21"}), key.get());
    s.approved = false;
    CsrObject o = CsrObject::parse(yaml_object(s), "csr");
    SignReport r = sign_csr(o, approve, ca.cert.get(), ca.get());
    REQUIRE(r.outcome == SignReport::Outcome::Issued);
    REQUIRE(o.conditions().size() == 1);
    CHECK(o.conditions()[0].type == "Approved");
    CHECK(o.conditions()[0].reason == "AutoApproved");
  }
  SECTION("a new node's client certificate from system:bootstrappers") {
    ObjectSpec s;
    s.request_pem = csr_pem("system:node:w7", {}, key.get());
    s.signer = kKubeletClientSigner;
    s.usages = kClientEc;
    s.username = "system:bootstrap:abcdef";
    s.groups = {"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token", "system:authenticated"};
    s.approved = false;
    CsrObject o = CsrObject::parse(json_object(s), "csr");
    SignReport r = sign_csr(o, approve, ca.cert.get(), ca.get());
    REQUIRE(r.outcome == SignReport::Outcome::Issued);
    CHECK(ca.ledger->list().at(0).requester == "k8s:system:bootstrap:abcdef");
    auto j = nlohmann::ordered_json::parse(o.serialize());
    CHECK(j["status"]["conditions"][0]["type"] == "Approved");
    CHECK(j["status"]["conditions"][0]["status"] == "True");
  }
  SECTION("an already approved CSR is signed whatever the policy says") {
    ObjectSpec s;
    s.request_pem = csr_pem("jane", {}, key.get(), "developers");
    s.signer = kKubeApiserverClientSigner;
    s.usages = {"client auth"};
    s.username = "admin";
    CsrObject o = CsrObject::parse(yaml_object(s), "csr");
    SignReport r = sign_csr(o, approve, ca.cert.get(), ca.get());
    REQUIRE(r.outcome == SignReport::Outcome::Issued);
    CHECK(o.conditions().size() == 1);
    CHECK(hwca::test::oneline(X509_get_subject_name(r.certificate.get())) == "O = developers, CN = jane");
  }
}
