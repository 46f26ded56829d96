// Kubelet TLS bootstrapping (core/k8s_bootstrap.h, core/k8s_rbac.h): the token's format and the
// absence of modulo bias, the Secret and the bootstrap kubeconfig read back with yaml-cpp field by
// field, the output folder's all-or-nothing writes, and every RBAC object field by field.
#include "core_helpers.h"

#include "core/base/ossl.h"
#include "core/crl.h"
#include "core/files.h"
#include "core/k8s_bootstrap.h"
#include "core/k8s_cluster.h"
#include "core/k8s_rbac.h"
#include "core/x509.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <regex>
#include <set>
#include <sys/stat.h>

using hwca::ErrorKind;
using hwca::test::error_of;
using hwca::test::TempDir;
using namespace hwca::core;
using namespace hwca::core::k8s;

namespace {

const std::string kCluster = R"(name: kubernetes
controlPlaneEndpoint: 192.168.115.4:6443
controlPlane:
  - {name: vm1, ip: 192.168.115.5}
  - {name: vm2, ip: 192.168.115.6}
workers:
  - {name: w1, ip: 192.168.115.8}
cas:
  kubernetes-ca: {key: "pkcs11:token=t;object=kubernetes-ca"}
  etcd-ca: {key: "pkcs11:token=t;object=etcd-ca"}
  front-proxy-ca: {key: "pkcs11:token=t;object=front-proxy-ca"}
)";

const std::string kCaPem = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n";

std::string unbase64(const std::string& b64) {
  std::string out(b64.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(b64.data()),
                          static_cast<int>(b64.size()));
  REQUIRE(n >= 0);
  size_t len = static_cast<size_t>(n);
  if (!b64.empty() && b64.back() == '=') --len;
  if (b64.size() > 1 && b64[b64.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> strings(const YAML::Node& seq) {
  std::vector<std::string> out;
  REQUIRE(seq.IsSequence());
  for (const auto& n : seq) out.push_back(n.as<std::string>());
  return out;
}

// A map's keys in document order.
std::vector<std::string> keys(const YAML::Node& map) {
  std::vector<std::string> out;
  REQUIRE(map.IsMap());
  for (const auto& kv : map) out.push_back(kv.first.as<std::string>());
  return out;
}

void check_binding(const YAML::Node& b, const std::string& name, const std::string& role, const std::string& kind,
                   const std::string& subject) {
  INFO("ClusterRoleBinding " << name);
  CHECK(keys(b) == std::vector<std::string>{"apiVersion", "kind", "metadata", "roleRef", "subjects"});
  CHECK(b["apiVersion"].as<std::string>() == "rbac.authorization.k8s.io/v1");
  CHECK(b["kind"].as<std::string>() == "ClusterRoleBinding");
  CHECK(b["metadata"]["name"].as<std::string>() == name);
  CHECK(!b["metadata"]["namespace"]);
  CHECK(keys(b["roleRef"]) == std::vector<std::string>{"apiGroup", "kind", "name"});
  CHECK(b["roleRef"]["apiGroup"].as<std::string>() == "rbac.authorization.k8s.io");
  CHECK(b["roleRef"]["kind"].as<std::string>() == "ClusterRole");
  CHECK(b["roleRef"]["name"].as<std::string>() == role);
  REQUIRE(b["subjects"].IsSequence());
  REQUIRE(b["subjects"].size() == 1);
  const YAML::Node s = b["subjects"][0];
  CHECK(keys(s) == std::vector<std::string>{"apiGroup", "kind", "name"});
  CHECK(s["apiGroup"].as<std::string>() == "rbac.authorization.k8s.io");
  CHECK(s["kind"].as<std::string>() == kind);
  CHECK(s["name"].as<std::string>() == subject);
}

void check_rule(const YAML::Node& r, const std::vector<std::string>& resources, const std::vector<std::string>& names,
                const std::vector<std::string>& verbs) {
  CHECK(strings(r["apiGroups"]) == std::vector<std::string>{"certificates.k8s.io"});
  CHECK(strings(r["resources"]) == resources);
  if (names.empty())
    CHECK(!r["resourceNames"]);
  else
    CHECK(strings(r["resourceNames"]) == names);
  CHECK(strings(r["verbs"]) == verbs);
}

}  // namespace

TEST_CASE("bootstrap token: rejection sampling maps exactly 7 bytes to each of the 36 characters") {
  std::map<char, int> count;
  int rejected = 0;
  for (int b = 0; b < 256; ++b) {
    auto ch = token_char_from_byte(static_cast<unsigned char>(b));
    if (ch)
      ++count[*ch];
    else
      ++rejected;
    if (b >= 252) CHECK(!ch);
  }
  CHECK(rejected == 4);
  REQUIRE(count.size() == 36);
  for (const auto& [ch, n] : count) {
    INFO("character " << ch);
    CHECK(n == 7);
    CHECK(std::string(kBootstrapTokenAlphabet).find(ch) != std::string::npos);
  }
}

TEST_CASE("bootstrap token: kubeadm's format and an even spread over many draws") {
  const std::regex format("^[a-z0-9]{6}\\.[a-z0-9]{16}$");
  constexpr int kDraws = 20000;
  std::map<char, long> freq;
  std::vector<std::set<char>> id_positions(6);
  std::set<std::string> secrets;
  for (int i = 0; i < kDraws; ++i) {
    BootstrapToken t = BootstrapToken::generate();
    REQUIRE(std::regex_match(t.str(), format));
    REQUIRE(t.id.size() == 6);
    REQUIRE(t.secret.size() == 16);
    for (size_t p = 0; p < t.id.size(); ++p) id_positions[p].insert(t.id[p]);
    for (char ch : t.str())
      if (ch != '.') ++freq[ch];
    secrets.insert(t.secret);
  }
  // 80 bits per secret: a repeat among 20000 would mean a broken generator.
  CHECK(secrets.size() == static_cast<size_t>(kDraws));
  // Every character shows up in every position of the id.
  for (const auto& pos : id_positions) CHECK(pos.size() == 36);
  // Chi-square over the 36 characters (35 degrees of freedom): p < 1e-9 above ~100.
  REQUIRE(freq.size() == 36);
  const double expected = kDraws * 22.0 / 36.0;
  double chi2 = 0;
  for (const auto& [ch, n] : freq) chi2 += (static_cast<double>(n) - expected) * (static_cast<double>(n) - expected) / expected;
  INFO("chi-square " << chi2);
  CHECK(chi2 < 100.0);
  CHECK(random_token_string(0).empty());
  CHECK(random_token_string(1000).size() == 1000);
}

TEST_CASE("bootstrap token: parse accepts only id.secret of [a-z0-9]") {
  BootstrapToken t = BootstrapToken::parse("  abcdef.0123456789abcdef\n", "token file");
  CHECK(t.id == "abcdef");
  CHECK(t.secret == "0123456789abcdef");
  CHECK(t.str() == "abcdef.0123456789abcdef");
  for (const std::string bad : {"", "abcdef", "abcdef.", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdefg",
                                "abcdef:0123456789abcdef", "abcdef.0123456789abcde", "abcdef.0123456789abcdef0",
                                "abc def.0123456789abcdef", "abcdef.0123456789abcdeF", "abcdef.0123456789ab-def"}) {
    INFO("'" << bad << "'");
    auto e = error_of([&] { BootstrapToken::parse(bad, "token file"); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK(std::string(e.what()).find("token file: not a bootstrap token") == 0);
    if (bad.size() > 7) CHECK(std::string(e.what()).find(bad.substr(7)) == std::string::npos);  // never echoes a secret
  }
}

TEST_CASE("bootstrap token Secret: every field as kubeadm writes it") {
  const BootstrapToken t{"abcdef", "0123456789abcdef"};
  BootstrapSecretOptions o;
  o.expiration = parse_iso8601("2030-01-02T03:04:05Z");
  o.description = "for the workers";
  YAML::Node s = YAML::Load(render_bootstrap_secret(t, o));
  CHECK(keys(s) == std::vector<std::string>{"apiVersion", "kind", "metadata", "type", "data"});
  CHECK(s["apiVersion"].as<std::string>() == "v1");
  CHECK(s["kind"].as<std::string>() == "Secret");
  CHECK(keys(s["metadata"]) == std::vector<std::string>{"name", "namespace"});
  CHECK(s["metadata"]["name"].as<std::string>() == "bootstrap-token-abcdef");
  CHECK(s["metadata"]["namespace"].as<std::string>() == "kube-system");
  CHECK(s["type"].as<std::string>() == "bootstrap.kubernetes.io/token");
  CHECK(!s["stringData"]);
  std::map<std::string, std::string> data;
  for (const auto& kv : s["data"]) data[kv.first.as<std::string>()] = unbase64(kv.second.as<std::string>());
  CHECK(data == std::map<std::string, std::string>{{"auth-extra-groups", "system:bootstrappers:kubeadm:default-node-token"},
                                                   {"description", "for the workers"},
                                                   {"expiration", "2030-01-02T03:04:05Z"},
                                                   {"token-id", "abcdef"},
                                                   {"token-secret", "0123456789abcdef"},
                                                   {"usage-bootstrap-authentication", "true"},
                                                   {"usage-bootstrap-signing", "true"}});
}

TEST_CASE("bootstrap token Secret: no expiration field when the token never expires") {
  const BootstrapToken t{"zzzzzz", "9999999999999999"};
  BootstrapSecretOptions o;  // no expiration, no description
  YAML::Node s = YAML::Load(render_bootstrap_secret(t, o));
  CHECK(keys(s["data"]) == std::vector<std::string>{"auth-extra-groups", "token-id", "token-secret",
                                                    "usage-bootstrap-authentication", "usage-bootstrap-signing"});
  CHECK(unbase64(s["data"]["token-id"].as<std::string>()) == "zzzzzz");
}

TEST_CASE("bootstrap kubeconfig: cluster and CA and token user and context as kubeadm writes them") {
  const BootstrapToken t{"abcdef", "0123456789abcdef"};
  const std::string text = render_bootstrap_kubeconfig("prod", "https://10.0.0.1:6443", kCaPem, t);
  YAML::Node k = YAML::Load(text);
  CHECK(k["apiVersion"].as<std::string>() == "v1");
  CHECK(k["kind"].as<std::string>() == "Config");
  REQUIRE(k["clusters"].size() == 1);
  CHECK(k["clusters"][0]["name"].as<std::string>() == "prod");
  CHECK(keys(k["clusters"][0]["cluster"]) == std::vector<std::string>{"certificate-authority-data", "server"});
  CHECK(k["clusters"][0]["cluster"]["server"].as<std::string>() == "https://10.0.0.1:6443");
  CHECK(unbase64(k["clusters"][0]["cluster"]["certificate-authority-data"].as<std::string>()) == kCaPem);
  REQUIRE(k["users"].size() == 1);
  CHECK(k["users"][0]["name"].as<std::string>() == "tls-bootstrap-token-user");
  CHECK(keys(k["users"][0]["user"]) == std::vector<std::string>{"token"});
  CHECK(k["users"][0]["user"]["token"].as<std::string>() == "abcdef.0123456789abcdef");
  REQUIRE(k["contexts"].size() == 1);
  CHECK(k["contexts"][0]["name"].as<std::string>() == "tls-bootstrap-token-user@prod");
  CHECK(k["contexts"][0]["context"]["cluster"].as<std::string>() == "prod");
  CHECK(k["contexts"][0]["context"]["user"].as<std::string>() == "tls-bootstrap-token-user");
  CHECK(k["current-context"].as<std::string>() == "tls-bootstrap-token-user@prod");
}

TEST_CASE("bootstrap files: the token and its Secret and one kubeconfig per node with kubelet.conf's server") {
  ClusterSpec spec = ClusterSpec::parse(kCluster, "cluster.yaml");
  const BootstrapToken t{"abcdef", "0123456789abcdef"};
  auto files = bootstrap_files(spec, kCaPem, t, {});
  std::vector<std::string> paths;
  for (const auto& f : files) paths.push_back(f.path);
  CHECK(paths == std::vector<std::string>{"bootstrap-token", "bootstrap-token-secret.yaml", "nodes/vm1/bootstrap-kubelet.conf",
                                          "nodes/vm2/bootstrap-kubelet.conf", "nodes/w1/bootstrap-kubelet.conf"});
  CHECK(files[0].content == "abcdef.0123456789abcdef\n");
  for (size_t i = 2; i < files.size(); ++i) {
    YAML::Node k = YAML::Load(files[i].content);
    CHECK(k["clusters"][0]["cluster"]["server"].as<std::string>() == spec.server_url());
    CHECK(k["clusters"][0]["cluster"]["server"].as<std::string>() == "https://192.168.115.4:6443");
    CHECK(k["users"][0]["user"]["token"].as<std::string>() == t.str());
  }
}

TEST_CASE("bootstrap files: written 0600 all at once and a second token needs force") {
  TempDir dir;
  ClusterSpec spec = ClusterSpec::parse(kCluster, "cluster.yaml");
  const std::string out = dir / "out";
  const BootstrapToken t1{"aaaaaa", "1111111111111111"}, t2{"bbbbbb", "2222222222222222"};
  int calls = 0;
  write_bootstrap_files(out, bootstrap_files(spec, kCaPem, t1, {}), false, [&] { ++calls; });
  CHECK(calls == 1);
  for (const std::string f : {"bootstrap-token", "bootstrap-token-secret.yaml", "nodes/vm1/bootstrap-kubelet.conf",
                              "nodes/vm2/bootstrap-kubelet.conf", "nodes/w1/bootstrap-kubelet.conf"}) {
    INFO(f);
    CHECK(mode_of(out + "/" + f) == 0600);
  }
  CHECK(hwca::read_file(out + "/bootstrap-token") == "aaaaaa.1111111111111111\n");

  // A different token: refused, naming the token the folder holds; nothing changes, the hook never runs.
  auto e = error_of([&] { write_bootstrap_files(out, bootstrap_files(spec, kCaPem, t2, {}), false, [&] { ++calls; }); });
  CHECK(e.kind() == ErrorKind::Conflict);
  CHECK(std::string(e.what()).find("(token aaaaaa)") != std::string::npos);
  CHECK(std::string(e.what()).find("--force") != std::string::npos);
  CHECK(calls == 1);
  CHECK(hwca::read_file(out + "/bootstrap-token") == "aaaaaa.1111111111111111\n");

  // A failing hook (the ledger): nothing is replaced.
  auto hook = error_of([&] {
    write_bootstrap_files(out, bootstrap_files(spec, kCaPem, t2, {}), true,
                          [] { throw hwca::Error(ErrorKind::Io, "ledger down"); });
  });
  CHECK(hook.kind() == ErrorKind::Io);
  CHECK(hwca::read_file(out + "/bootstrap-token") == "aaaaaa.1111111111111111\n");
  CHECK(YAML::Load(hwca::read_file(out + "/nodes/w1/bootstrap-kubelet.conf"))["users"][0]["user"]["token"].as<std::string>() ==
        t1.str());

  // --force replaces every file.
  write_bootstrap_files(out, bootstrap_files(spec, kCaPem, t2, {}), true, nullptr);
  CHECK(hwca::read_file(out + "/bootstrap-token") == "bbbbbb.2222222222222222\n");
  CHECK(YAML::Load(hwca::read_file(out + "/nodes/vm2/bootstrap-kubelet.conf"))["users"][0]["user"]["token"].as<std::string>() ==
        t2.str());
  CHECK(mode_of(out + "/bootstrap-token") == 0600);
}

TEST_CASE("bootstrap files: a bad output folder is refused before anything is made") {
  TempDir dir;
  ClusterSpec spec = ClusterSpec::parse(kCluster, "cluster.yaml");
  auto files = bootstrap_files(spec, kCaPem, BootstrapToken::generate(), {});
  auto missing = error_of([&] { write_bootstrap_files(dir / "no/such/out", files, false, nullptr); });
  CHECK(missing.kind() == ErrorKind::NotFound);
  CHECK(!exists(dir / "no"));
  hwca::core::write_file_atomic(dir / "plain", "x", 0644);
  auto file = error_of([&] { write_bootstrap_files(dir / "plain", files, true, nullptr); });
  CHECK(file.kind() == ErrorKind::BadInput);
  CHECK(hwca::read_file(dir / "plain") == "x");
  // A kubeconfig left without its token file still counts as a token in the folder.
  write_bootstrap_files(dir / "out", files, false, nullptr);
  REQUIRE(::unlink((dir / "out/bootstrap-token").c_str()) == 0);
  auto partial = error_of([&] { write_bootstrap_files(dir / "out", files, false, nullptr); });
  CHECK(partial.kind() == ErrorKind::Conflict);
  CHECK(!exists(dir / "out/bootstrap-token"));
}

TEST_CASE("rbac: the signer ClusterRole and its binding field by field") {
  RbacOptions o;
  auto docs = YAML::LoadAll(render_signer_rbac(checked(o)));
  REQUIRE(docs.size() == 2);
  const YAML::Node role = docs[0];
  CHECK(keys(role) == std::vector<std::string>{"apiVersion", "kind", "metadata", "rules"});
  CHECK(role["apiVersion"].as<std::string>() == "rbac.authorization.k8s.io/v1");
  CHECK(role["kind"].as<std::string>() == "ClusterRole");
  CHECK(role["metadata"]["name"].as<std::string>() == "hwca:k8s-signer");
  const std::vector<std::string> names = {"kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving",
                                          "kubernetes.io/kube-apiserver-client"};
  REQUIRE(role["rules"].size() == 3);
  check_rule(role["rules"][0], {"certificatesigningrequests"}, {}, {"get", "list", "watch"});
  check_rule(role["rules"][1], {"certificatesigningrequests/status"}, {}, {"update"});
  check_rule(role["rules"][2], {"signers"}, names, {"sign"});
  check_binding(docs[1], "hwca:k8s-signer", "hwca:k8s-signer", "User", "system:hwca-signer");
}

TEST_CASE("rbac: approve adds approval update and approve on the same signers") {
  RbacOptions o;
  o.approve = true;
  o.signer_names = {"kubernetes.io/kubelet-serving", "kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client-kubelet"};
  o.signer_user = "system:serviceaccount:kube-system:hwca";
  auto docs = YAML::LoadAll(render_signer_rbac(checked(o)));
  REQUIRE(docs.size() == 2);
  const std::vector<std::string> names = {"kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client-kubelet"};
  const YAML::Node rules = docs[0]["rules"];
  REQUIRE(rules.size() == 5);
  check_rule(rules[0], {"certificatesigningrequests"}, {}, {"get", "list", "watch"});
  check_rule(rules[1], {"certificatesigningrequests/status"}, {}, {"update"});
  check_rule(rules[2], {"signers"}, names, {"sign"});
  check_rule(rules[3], {"certificatesigningrequests/approval"}, {}, {"update"});
  check_rule(rules[4], {"signers"}, names, {"approve"});
  check_binding(docs[1], "hwca:k8s-signer", "hwca:k8s-signer", "User", "system:serviceaccount:kube-system:hwca");
}

TEST_CASE("rbac: the node bootstrap objects of the seed document and the TLS bootstrapping docs") {
  auto docs = YAML::LoadAll(render_node_bootstrap_rbac());
  REQUIRE(docs.size() == 5);
  const YAML::Node role = docs[0];
  CHECK(role["apiVersion"].as<std::string>() == "rbac.authorization.k8s.io/v1");
  CHECK(role["kind"].as<std::string>() == "ClusterRole");
  CHECK(role["metadata"]["name"].as<std::string>() == "system:certificates.k8s.io:certificatesigningrequests:selfnodeserver");
  REQUIRE(role["rules"].size() == 1);
  check_rule(role["rules"][0], {"certificatesigningrequests/selfnodeserver"}, {}, {"create"});
  check_binding(docs[1], "create-csrs-for-bootstrapping", "system:node-bootstrapper", "Group", "system:bootstrappers");
  check_binding(docs[2], "node-client-auto-approve-csr", "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                "Group", "system:bootstrappers");
  check_binding(docs[3], "node-client-auto-renew-crt", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "Group", "system:nodes");
  check_binding(docs[4], "node-server-auto-renew-crt", "system:certificates.k8s.io:certificatesigningrequests:selfnodeserver",
                "Group", "system:nodes");
}

TEST_CASE("rbac: signer names hwca cannot sign and bad users are refused") {
  for (const std::string bad : {"kubernetes.io/legacy-unknown", "example.com/my-signer", "kubernetes.io/kubelet-serving/", " kubernetes.io/kubelet-serving"}) {
    INFO("'" << bad << "'");
    RbacOptions o;
    o.signer_names = {"kubernetes.io/kubelet-serving", bad};
    auto e = error_of([&] { checked(o); });
    CHECK(e.kind() == ErrorKind::Usage);
    CHECK(std::string(e.what()).find("is not a signer hwca can sign") != std::string::npos);
    CHECK(std::string(e.what()).find("kubernetes.io/kube-apiserver-client-kubelet") != std::string::npos);
  }
  for (const auto& empty : std::vector<std::vector<std::string>>{{}, {""}, {"", ""}}) {
    RbacOptions none;
    none.signer_names = empty;
    auto e = error_of([&] { checked(none); });
    CHECK(e.kind() == ErrorKind::Usage);
    CHECK(std::string(e.what()) == "--signer-names: no signer name given");
  }
  for (const std::string& bad : std::vector<std::string>{"", "a\nb", std::string("x\0y", 3)}) {
    RbacOptions o;
    o.signer_user = bad;
    CHECK(error_of([&] { checked(o); }).kind() == ErrorKind::Usage);
  }
}

TEST_CASE("rbac: write_manifests writes both files 0644 into a new folder") {
  TempDir dir;
  auto files = rbac_manifests(RbacOptions{});
  REQUIRE(files.size() == 2);
  CHECK(files[0].name == "hwca-signer-rbac.yaml");
  CHECK(files[1].name == "node-bootstrap-rbac.yaml");
  write_manifests(dir / "m", files);
  CHECK(mode_of(dir / "m/hwca-signer-rbac.yaml") == 0644);
  CHECK(hwca::read_file(dir / "m/node-bootstrap-rbac.yaml") == files[1].yaml);
  CHECK(YAML::LoadAll(hwca::read_file(dir / "m/hwca-signer-rbac.yaml")).size() == 2);
  auto e = error_of([&] { write_manifests(dir / "none/m", files); });
  CHECK(e.kind() == ErrorKind::NotFound);
  CHECK(!exists(dir / "none"));
}
