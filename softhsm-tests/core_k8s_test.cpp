// The Kubernetes planner and cluster file: every certificate's CN/O/usages/SANs against the spec's
// tables (§1-2), version conventions, and the cluster file's bad-input table (file:line: field: reason).
// The layout is exercised with software CA keys through the KeySource port.
#include "core_helpers.h"
#include "k8s_layout_fixture.h"

#include "core/k8s_cluster.h"
#include "core/k8s_layout.h"
#include "core/k8s_plan.h"

#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using hwca::test::LayoutRun;
using hwca::test::SoftKeys;
using namespace hwca::core;
using namespace hwca::core::k8s;

namespace {

const std::string kCas = R"(
cas:
  kubernetes-ca: {key: "pkcs11:token=t;object=kubernetes-ca"}
  etcd-ca: {key: "pkcs11:token=t;object=etcd-ca"}
  front-proxy-ca: {key: "pkcs11:token=t;object=front-proxy-ca"}
)";

std::string seed_yaml(const std::string& version = "1.30") {
  return "name: kubernetes\n"
         "kubernetesVersion: \"" + version + "\"\n"
         "controlPlaneEndpoint: 192.168.115.4:6443\n"
         "serviceSubnet: 10.254.0.0/16\n"
         "controlPlane:\n"
         "  - {name: vm1, ip: 192.168.115.5}\n"
         "  - {name: vm2, ip: 192.168.115.6}\n"
         "  - {name: vm3, ip: 192.168.115.7}\n"
         "workers:\n"
         "  - {name: w1, ip: 192.168.115.8}\n"
         "apiServerCertSANs: [k8s.example.com, 192.168.115.4, 10.0.0.9]\n"
         "seedExtras: true\n" + kCas;
}

struct Want {
  std::string cn;
  std::vector<std::string> o;
  CaRole ca;
  bool server, client;
  std::string base;        // pki/<base>.crt (empty: kubeconfig)
  std::string kubeconfig;
};

}  // namespace

TEST_CASE("k8s plan: every certificate of spec §1-2 with its exact CN, O, CA, usages and location") {
  ClusterSpec s = ClusterSpec::parse(seed_yaml(), "seed.yaml");
  Plan p = make_plan(s);
  const std::map<std::string, Want> want = {
      {"apiserver", {"kube-apiserver", {}, CaRole::Kubernetes, true, false, "apiserver", ""}},
      {"apiserver-kubelet-client", {"kube-apiserver-kubelet-client", {"kubeadm:cluster-admins"}, CaRole::Kubernetes, false, true, "apiserver-kubelet-client", ""}},
      {"front-proxy-client", {"front-proxy-client", {}, CaRole::FrontProxy, false, true, "front-proxy-client", ""}},
      {"etcd-healthcheck-client", {"kube-etcd-healthcheck-client", {}, CaRole::Etcd, false, true, "etcd/healthcheck-client", ""}},
      {"apiserver-etcd-client", {"kube-apiserver-etcd-client", {}, CaRole::Etcd, false, true, "apiserver-etcd-client", ""}},
      {"etcd-server@vm2", {"vm2", {}, CaRole::Etcd, true, true, "etcd/server", ""}},
      {"etcd-peer@vm2", {"vm2", {}, CaRole::Etcd, true, true, "etcd/peer", ""}},
      {"admin.conf", {"kubernetes-admin", {"kubeadm:cluster-admins"}, CaRole::Kubernetes, false, true, "", "admin.conf"}},
      {"super-admin.conf", {"kubernetes-super-admin", {"system:masters"}, CaRole::Kubernetes, false, true, "", "super-admin.conf"}},
      {"controller-manager.conf", {"system:kube-controller-manager", {}, CaRole::Kubernetes, false, true, "", "controller-manager.conf"}},
      {"scheduler.conf", {"system:kube-scheduler", {}, CaRole::Kubernetes, false, true, "", "scheduler.conf"}},
      {"kubelet.conf@w1", {"system:node:w1", {"system:nodes"}, CaRole::Kubernetes, false, true, "", "kubelet.conf"}},
      {"kubelet@w1", {"system:node:w1", {"system:nodes"}, CaRole::Kubernetes, true, false, "kubelet", ""}},
      {"flanneld", {"flanneld", {}, CaRole::Etcd, false, true, "flanneld", ""}},
      {"kube-proxy.conf", {"system:kube-proxy", {}, CaRole::Kubernetes, false, true, "", "kube-proxy.conf"}},
      {"etcd-etcdctl-client", {"etcdctl", {}, CaRole::Etcd, false, true, "etcd/etcdctl-client", ""}},
  };
  for (const auto& [id, w] : want) {
    INFO(id);
    const CertSpec* c = p.find(id);
    REQUIRE(c != nullptr);
    CHECK_FALSE(c->is_ca);
    CHECK(c->cn == w.cn);
    CHECK(c->organizations == w.o);
    CHECK(c->ca == w.ca);
    CHECK(c->server_auth == w.server);
    CHECK(c->client_auth == w.client);
    CHECK(c->base == w.base);
    CHECK(c->kubeconfig == w.kubeconfig);
    CHECK(c->validity == std::chrono::hours(8760));
    // Leaves: digitalSignature, + keyEncipherment for RSA keys only (RFC 5480).
    CHECK(c->usages(true).key_usage == (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT));
    CHECK(c->usages(false).key_usage == X509v3_KU_DIGITAL_SIGNATURE);
    std::vector<int> eku;
    if (w.server) eku.push_back(NID_server_auth);
    if (w.client) eku.push_back(NID_client_auth);
    CHECK(c->usages(false).ext_key_usage == eku);
  }
  // 3 CAs + 5 cluster leaves + 2 per etcd member + 4 kubeconfigs + 2 per node + 3 seed extras.
  CHECK(p.certs.size() == 3 + 5 + 6 + 4 + 8 + 3);
  CHECK(p.find("etcd-server@w1") == nullptr);

  // CAs (§1.1): self-signed, CN per table, SAN DNS=[CN], KU keyEncipherment|digitalSignature|certSign (+cRLSign), 10 years.
  const std::map<CaRole, std::pair<std::string, std::string>> cas = {
      {CaRole::Kubernetes, {"kubernetes", "ca"}}, {CaRole::Etcd, {"etcd-ca", "etcd/ca"}}, {CaRole::FrontProxy, {"front-proxy-ca", "front-proxy-ca"}}};
  for (const auto& [role, cn_base] : cas) {
    const CertSpec& c = p.ca(role);
    INFO(cn_base.first);
    CHECK(c.is_ca);
    CHECK(c.cn == cn_base.first);
    CHECK(c.base == cn_base.second);
    CHECK(c.organizations.empty());
    CHECK(c.sans.dns == std::vector<std::string>{cn_base.first});
    CHECK(c.sans.ips.empty());
    CHECK(c.usages(false).key_usage ==
          (X509v3_KU_KEY_ENCIPHERMENT | X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN));
    CHECK(c.usages(false).ext_key_usage.empty());
    CHECK(c.validity == std::chrono::hours(87600));
    CHECK(c.profile().ca_constraint->is_ca);
  }
}

TEST_CASE("k8s plan: SAN rules of §1.3") {
  ClusterSpec s = ClusterSpec::parse(seed_yaml(), "seed.yaml");
  Plan p = make_plan(s);
  const CertSpec* api = p.find("apiserver");
  REQUIRE(api);
  CHECK(api->sans.dns == std::vector<std::string>{"vm1", "vm2", "vm3", "kubernetes", "kubernetes.default",
                                                   "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                                                   "k8s.example.com"});
  // First service IP, the control-plane IPs, the endpoint (the VIP), certSANs; the VIP only once.
  CHECK(api->sans.ips == std::vector<std::string>{"10.254.0.1", "192.168.115.5", "192.168.115.6", "192.168.115.7",
                                                   "192.168.115.4", "10.0.0.9"});
  CHECK(std::find(api->sans.dns.begin(), api->sans.dns.end(), "kubernetes.default.svc.cluster") == api->sans.dns.end());
  const CertSpec* server = p.find("etcd-server@vm1");
  REQUIRE(server);
  CHECK(server->sans.dns == std::vector<std::string>{"vm1", "localhost"});
  CHECK(server->sans.ips == std::vector<std::string>{"192.168.115.5", "127.0.0.1", "::1"});
  CHECK(p.find("etcd-peer@vm3")->sans.ips == std::vector<std::string>{"192.168.115.7", "127.0.0.1", "::1"});
  CHECK(p.find("kubelet@w1")->sans.dns == std::vector<std::string>{"w1"});
  CHECK(p.find("kubelet@w1")->sans.ips == std::vector<std::string>{"192.168.115.8"});
  for (const char* id : {"admin.conf", "apiserver-kubelet-client", "front-proxy-client", "flanneld"}) CHECK(p.find(id)->sans.empty());

  // Loopback nodes: duplicates removed; a DNS endpoint becomes a DNS SAN.
  ClusterSpec l = ClusterSpec::parse("controlPlaneEndpoint: api.example.com\nserviceSubnet: 10.96.0.0/12\ncontrolPlane:\n"
                                     "  - {name: cp1, ip: 127.0.0.1}\n  - {name: cp2, ip: 127.0.0.1}\n" + kCas,
                                     "l.yaml");
  Plan lp = make_plan(l);
  CHECK(lp.find("apiserver")->sans.ips == std::vector<std::string>{"10.96.0.1", "127.0.0.1"});
  CHECK(lp.find("apiserver")->sans.dns.back() == "api.example.com");
  CHECK(lp.find("etcd-server@cp1")->sans.ips == std::vector<std::string>{"127.0.0.1", "::1"});
  CHECK(l.server_url() == "https://api.example.com:6443");
  CHECK(l.first_service_ip() == "10.96.0.1");
  CHECK(l.cluster_dns_ip() == "10.96.0.10");
}

TEST_CASE("k8s plan: O conventions follow the Kubernetes version (§1.2 history, §2)") {
  struct Row {
    std::string version;
    std::vector<std::string> kubelet_client, admin, etcd_client;
    bool super_admin;
  };
  const std::vector<Row> rows = {
      {"1.20", {"system:masters"}, {"system:masters"}, {"system:masters"}, false},
      {"1.28", {"system:masters"}, {"system:masters"}, {"system:masters"}, false},
      {"1.29", {"kubeadm:cluster-admins"}, {"kubeadm:cluster-admins"}, {}, true},
      {"1.33.11", {"kubeadm:cluster-admins"}, {"kubeadm:cluster-admins"}, {}, true},
      {"1.33.12", {}, {"kubeadm:cluster-admins"}, {}, true},
      {"1.34.8", {}, {"kubeadm:cluster-admins"}, {}, true},
      {"1.35.4", {"kubeadm:cluster-admins"}, {"kubeadm:cluster-admins"}, {}, true},
      {"1.36.1", {}, {"kubeadm:cluster-admins"}, {}, true},
      {"v1.37", {}, {"kubeadm:cluster-admins"}, {}, true},
  };
  for (const auto& r : rows) {
    INFO(r.version);
    Plan p = make_plan(ClusterSpec::parse(seed_yaml(r.version), "seed.yaml"));
    CHECK(p.find("apiserver-kubelet-client")->organizations == r.kubelet_client);
    CHECK(p.find("admin.conf")->organizations == r.admin);
    CHECK(p.find("apiserver-etcd-client")->organizations == r.etcd_client);
    CHECK(p.find("etcd-healthcheck-client")->organizations == r.etcd_client);
    CHECK((p.find("super-admin.conf") != nullptr) == r.super_admin);
    if (r.super_admin) CHECK(p.find("super-admin.conf")->organizations == std::vector<std::string>{"system:masters"});
  }
}

TEST_CASE("k8s plan: layout, kubeconfig servers and flags") {
  ClusterSpec s = ClusterSpec::parse(seed_yaml(), "seed.yaml");
  Plan p = make_plan(s);
  std::map<std::string, const KubeconfigSpec*> kc;
  for (const auto& k : p.kubeconfigs) kc[k.path] = &k;
  REQUIRE(kc.count("admin.conf"));
  CHECK(kc["admin.conf"]->server == "https://192.168.115.4:6443");
  CHECK(kc["controller-manager.conf"]->server == "https://192.168.115.5:6443");  // local endpoint of the init node
  CHECK(kc["nodes/vm2/scheduler.conf"]->server == "https://192.168.115.6:6443");
  CHECK(kc["nodes/w1/kubelet.conf"]->cert_id == "kubelet.conf@w1");
  CHECK(kc["kubelet.conf"]->cert_id == "kubelet.conf@vm1");
  CHECK(kc.count("nodes/w1/admin.conf") == 0);
  CHECK(kc.count("nodes/w1/kube-proxy.conf") == 1);
  CHECK(p.find("etcd-server@vm2")->primary_path() == "nodes/vm2/pki/etcd/server.crt");
  std::map<std::string, std::vector<std::string>> flags;
  for (const auto& f : p.flags) flags[f.path] = f.flags;
  const auto& kcm = flags["flags/kube-controller-manager.flags"];
  CHECK(std::find(kcm.begin(), kcm.end(), "--controllers=*,-csrsigning") != kcm.end());
  CHECK(std::find(kcm.begin(), kcm.end(), "--service-account-private-key-file=/etc/kubernetes/pki/sa.key") != kcm.end());
  const auto& etcd = flags["nodes/vm3/flags/etcd.flags"];
  CHECK(std::find(etcd.begin(), etcd.end(),
                  "--initial-cluster=vm1=https://192.168.115.5:2380,vm2=https://192.168.115.6:2380,vm3=https://192.168.115.7:2380") !=
        etcd.end());
  CHECK(std::find(etcd.begin(), etcd.end(), "--client-cert-auth=true") != etcd.end());
  CHECK(flags.count("nodes/w1/flags/etcd.flags") == 0);
  CHECK(flags.count("nodes/w1/flags/flanneld.flags") == 1);
}

TEST_CASE("k8s cluster file: bad input names the file, line and field") {
  const std::string head = "name: kubernetes\n";  // line 1
  struct Bad {
    std::string desc, yaml, want;
  };
  const std::vector<Bad> bad = {
      {"non-CIDR", head + "serviceSubnet: 10.254.0.0\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "c.yaml:2: serviceSubnet: '10.254.0.0' is not a CIDR"},
      {"CIDR with garbage", head + "serviceSubnet: banana/16\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "c.yaml:2: serviceSubnet: 'banana/16' is not a CIDR"},
      {"subnet too small", head + "serviceSubnet: 10.254.0.0/30\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "c.yaml:2: serviceSubnet: '10.254.0.0/30' is too small"},
      {"subnet too large", head + "serviceSubnet: 10.0.0.0/8\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "c.yaml:2: serviceSubnet: '10.0.0.0/8' is too large"},
      {"host bits", head + "serviceSubnet: 10.254.0.1/16\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "did you mean 10.254.0.0/16?"},
      {"duplicate node names", head + "controlPlane:\n  - {name: a, ip: 10.0.0.1}\n  - {name: a, ip: 10.0.0.2}\n" + kCas,
       "c.yaml:4: controlPlane[1].name: duplicate node name 'a'"},
      {"worker named like a control-plane node",
       head + "controlPlane:\n  - {name: a, ip: 10.0.0.1}\nworkers:\n  - {name: a, ip: 10.0.0.2}\n" + kCas,
       "c.yaml:5: workers[0].name: duplicate node name 'a' (already in controlPlane)"},
      {"bad IP", head + "controlPlane:\n  - {name: a, ip: 10.0.0.300}\n" + kCas, "c.yaml:3: controlPlane[0].ip: '10.0.0.300' is not an IP address"},
      {"bad node name", head + "controlPlane:\n  - {name: Node_1, ip: 10.0.0.1}\n" + kCas,
       "c.yaml:3: controlPlane[0].name: 'Node_1' is not a DNS label"},
      {"unknown algorithm", head + "keyAlgorithm: dsa-1024\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "c.yaml:2: keyAlgorithm:"},
      {"empty control plane", head + "controlPlane: []\n" + kCas, "c.yaml:2: controlPlane: is empty"},
      {"missing control plane", head + kCas, "controlPlane: missing"},
      {"unknown field", head + "controlPlane: [{name: a, ip: 10.0.0.1}]\nserviceSubnett: 10.0.0.0/16\n" + kCas,
       "c.yaml:3: serviceSubnett: unknown field"},
      {"bad duration", head + "controlPlane: [{name: a, ip: 10.0.0.1}]\nvalidity: {leaf: 1y}\n" + kCas,
       "c.yaml:3: validity.leaf: invalid duration"},
      {"bad version", head + "kubernetesVersion: latest\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "c.yaml:2: kubernetesVersion: 'latest' is not a Kubernetes version"},
      {"file CA key", head + "controlPlane: [{name: a, ip: 10.0.0.1}]\ncas:\n  kubernetes-ca: {key: \"file:/tmp/ca.key\"}\n"
                             "  etcd-ca: {key: \"pkcs11:token=t;object=e\"}\n  front-proxy-ca: {key: \"pkcs11:token=t;object=f\"}\n",
       "c.yaml:4: cas.kubernetes-ca.key: a CA key must live in a token or TPM"},
      {"missing CA", head + "controlPlane: [{name: a, ip: 10.0.0.1}]\ncas:\n  kubernetes-ca: {key: \"pkcs11:token=t;object=k\"}\n",
       "cas.etcd-ca: missing"},
      {"bad SAN", head + "controlPlane: [{name: a, ip: 10.0.0.1}]\napiServerCertSANs: [\"not a name\"]\n" + kCas,
       "c.yaml:3: apiServerCertSANs[0]: 'not a name' is neither an IP address nor a DNS name"},
      {"bad endpoint port", head + "controlPlaneEndpoint: 10.0.0.4:99999\ncontrolPlane: [{name: a, ip: 10.0.0.1}]\n" + kCas,
       "c.yaml:2: controlPlaneEndpoint: '99999' is not a port number"},
      {"not YAML", "controlPlane: [\n", "c.yaml:"},
      {"not a map", "- a\n- b\n", "c.yaml:1: the cluster file must be a YAML map"},
  };
  for (const auto& b : bad) {
    INFO(b.desc);
    Error e = error_of([&] { ClusterSpec::parse(b.yaml, "c.yaml"); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK_THAT(e.what(), Catch::Matchers::Contains(b.want));
  }
  // Several nodes on one IP stay allowed; a stacked etcd member may repeat its control-plane entry.
  ClusterSpec ok = ClusterSpec::parse(head + "controlPlane:\n  - {name: a, ip: 127.0.0.1}\n  - {name: b, ip: 127.0.0.1}\n"
                                             "etcd:\n  - {name: a, ip: 127.0.0.1}\n" + kCas,
                                      "c.yaml");
  CHECK(ok.etcd.size() == 1);
  CHECK(ok.where("cas.etcd-ca.key").rfind("c.yaml:", 0) == 0);
  CHECK(ok.leaf_key == KeySpec::parse("ecdsa-p256"));
}

namespace {

std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[e.path().string().substr(dir.size() + 1)] = hwca::read_file(e.path().string());
  return out;
}

}  // namespace

TEST_CASE_METHOD(LayoutRun, "k8s layout: init writes kubeadm's layout, is idempotent, and re-issues exactly what must change") {
  ClusterSpec s = ClusterSpec::parse(seed_yaml(), "seed.yaml");
  InitResult r1 = init_cluster(s, keys, *ledger, opt);
  CHECK(keys.generated == 3);
  CHECK(r1.issued == static_cast<int>(make_plan(s).certs.size()));
  auto first = snapshot(opt.out);
  for (const char* f : {"pki/ca.crt", "pki/apiserver.key", "pki/etcd/server.crt", "pki/sa.key", "pki/sa.pub", "admin.conf",
                        "super-admin.conf", "kubelet.conf", "nodes/w1/kubelet.conf", "nodes/w1/pki/ca.crt",
                        "nodes/vm2/pki/etcd/peer.key", "flags/kube-apiserver.flags", "kube-proxy.conf", "pki/flanneld.crt"})
    CHECK(first.count(f) == 1);
  CHECK(first.count("pki/ca.key") == 0);
  CHECK(first["pki/etcd/server.crt"] == first["nodes/vm1/pki/etcd/server.crt"]);
  CHECK(first["kubelet.conf"] == first["nodes/vm1/kubelet.conf"]);
  // The kubeconfig embeds the CA, a "<CN>@<cluster>" context and the client certificate and key.
  KubeconfigCredentials cred = parse_kubeconfig(first["admin.conf"], "admin.conf");
  CHECK(cred.server == "https://192.168.115.4:6443");
  CHECK(cred.ca_pem == first["pki/ca.crt"]);
  CHECK(first["admin.conf"].find("kubernetes-admin@kubernetes") != std::string::npos);
  auto admin = hwca::x509_from_pem(cred.cert_pem, "admin");
  CHECK(name_to_string(X509_get_subject_name(admin.get())) == "CN=kubernetes-admin,O=kubeadm:cluster-admins");
  CHECK(hwca::same_public_key(X509_get0_pubkey(admin.get()), hwca::private_key_from_pem(cred.key_pem, "k").get()));
  size_t ledger_count = ledger->list().size();
  CHECK(ledger_count == static_cast<size_t>(r1.issued));

  // Again: nothing changes, byte for byte.
  lines.clear();
  InitResult r2 = init_cluster(s, keys, *ledger, opt);
  CHECK(r2.issued == 0);
  CHECK(r2.files_written == 0);
  CHECK(snapshot(opt.out) == first);
  CHECK(lines.empty());

  // A new SAN and a new control-plane node: the apiserver and the new node's certificates, nothing else.
  ClusterSpec s3 = ClusterSpec::parse(seed_yaml(), "seed.yaml");
  s3.api_server_cert_sans.push_back("10.0.0.77");
  s3.control_plane.push_back({"vm4", "192.168.115.9", 0});
  s3.etcd.push_back({"vm4", "192.168.115.9", 0});
  lines.clear();
  InitResult r3 = init_cluster(s3, keys, *ledger, opt);
  CHECK(r3.issued == 5);
  std::set<std::string> issued;
  for (const auto& l : lines) issued.insert(l.substr(0, l.find(' ', 7)));
  CHECK(issued == std::set<std::string>{"issued apiserver", "issued vm4/etcd-server", "issued vm4/etcd-peer",
                                        "issued vm4/kubelet.conf", "issued vm4/kubelet"});
  CHECK(keys.generated == 3);
  auto third = snapshot(opt.out);
  CHECK(third["pki/ca.crt"] == first["pki/ca.crt"]);
  CHECK(third["pki/apiserver.crt"] != first["pki/apiserver.crt"]);
  CHECK(third["pki/apiserver.key"] == first["pki/apiserver.key"]);  // content change, same key
  CHECK(third["pki/front-proxy-client.crt"] == first["pki/front-proxy-client.crt"]);
  CHECK(third["nodes/vm1/pki/etcd/server.crt"] == first["nodes/vm1/pki/etcd/server.crt"]);
  bool says_why = false;
  for (const auto& l : lines)
    if (l.find("apiserver") != std::string::npos && l.find("+IP:10.0.0.77") != std::string::npos &&
        l.find("+DNS:vm4") != std::string::npos)
      says_why = true;
  CHECK(says_why);

  // Renew: unknown names are refused; a named certificate gets a new key.
  opt.renew = true;
  opt.reuse_keys = false;
  opt.renew_names = {"nope"};
  CHECK(error_of([&] { init_cluster(s3, keys, *ledger, opt); }).kind() == ErrorKind::Usage);
  opt.renew_names = {"front-proxy-client"};
  lines.clear();
  InitResult r4 = init_cluster(s3, keys, *ledger, opt);
  CHECK(r4.issued == 1);
  auto fourth = snapshot(opt.out);
  CHECK(fourth["pki/front-proxy-client.key"] != third["pki/front-proxy-client.key"]);
  CHECK(fourth["pki/apiserver.crt"] == third["pki/apiserver.crt"]);

  // check-expiration reads it back: each distinct certificate once, with its CA.
  auto entries = scan_expiration(opt.out);
  std::map<std::string, std::string> ca_of;
  for (const auto& e : entries) ca_of[e.name] = e.ca_name;
  CHECK(ca_of["apiserver"] == "ca");
  CHECK(ca_of["front-proxy-client"] == "front-proxy-ca");
  CHECK(ca_of["etcd-server"] == "etcd-ca");
  CHECK(ca_of["vm2/etcd-server"] == "etcd-ca");
  CHECK(ca_of["admin.conf"] == "ca");
  CHECK(ca_of["w1/kubelet.conf"] == "ca");
  CHECK(ca_of.count("vm1/etcd-server") == 0);  // the same certificate as the top level's
}

TEST_CASE("k8s layout: a cluster larger than one part (1,030 workers) is complete, recorded and idempotent") {
  hwca::test::TempDir tmp;
  auto ledger = Ledger::open(tmp / "ledger.db");
  SoftKeys keys;
  std::string yaml = seed_yaml();
  std::string workers;
  for (int i = 2; i <= 1030; ++i) workers += "  - {name: w" + std::to_string(i) + ", ip: 10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "}\n";
  yaml.insert(yaml.find("apiServerCertSANs"), workers);
  ClusterSpec s = ClusterSpec::parse(yaml, "big.yaml");
  InitOptions opt;
  opt.out = tmp / "out";
  opt.requester = "cli:k8s init";
  InitResult r1 = init_cluster(s, keys, *ledger, opt);
  CHECK(r1.issued == static_cast<int>(make_plan(s).certs.size()));
  CHECK(ledger->list().size() == static_cast<size_t>(r1.issued));
  size_t temporaries = 0, files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(opt.out)) {
    if (!e.is_regular_file()) continue;
    ++files;
    if (e.path().filename().string().find(".tmp.") != std::string::npos) ++temporaries;
  }
  CHECK(temporaries == 0);
  CHECK(files == static_cast<size_t>(r1.files_written));
  // The last part's nodes carry the cluster-wide copies (seed extras) and their own certificates.
  CHECK(hwca::read_file(opt.out + "/nodes/w1030/pki/flanneld.crt") == hwca::read_file(opt.out + "/pki/flanneld.crt"));
  KubeconfigCredentials cred = parse_kubeconfig(hwca::read_file(opt.out + "/nodes/w1030/kubelet.conf"), "kubelet.conf");
  auto cert = hwca::x509_from_pem(cred.cert_pem, "kubelet");
  CHECK(name_to_string(X509_get_subject_name(cert.get())) == "CN=system:node:w1030,O=system:nodes");
  CHECK((std::filesystem::status(opt.out + "/nodes/w1030/kubelet.conf").permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));

  InitResult r2 = init_cluster(s, keys, *ledger, opt);
  CHECK(r2.issued == 0);
  CHECK(r2.files_written == 0);

  // Renew one worker-only node's certificate by NODE/NAME; an unknown one is refused before anything.
  opt.renew = true;
  opt.reuse_keys = false;
  opt.renew_names = {"w1030/nope"};
  CHECK(error_of([&] { init_cluster(s, keys, *ledger, opt); }).kind() == ErrorKind::Usage);
  opt.renew_names = {"w1030/kubelet"};
  std::string before = hwca::read_file(opt.out + "/nodes/w1030/pki/kubelet.crt");
  InitResult r3 = init_cluster(s, keys, *ledger, opt);
  CHECK(r3.issued == 1);
  CHECK(hwca::read_file(opt.out + "/nodes/w1030/pki/kubelet.crt") != before);
}

TEST_CASE_METHOD(LayoutRun, "k8s layout: init --only issues just the named certificates and the CAs they chain to") {
  ClusterSpec s = ClusterSpec::parse(seed_yaml(), "seed.yaml");

  // An unknown name is refused before anything is generated or written.
  opt.only = {"apiserver", "nope"};
  Error e = error_of([&] { init_cluster(s, keys, *ledger, opt); });
  CHECK(e.kind() == ErrorKind::Usage);
  CHECK_THAT(e.what(), Catch::Matchers::Contains("init --only: unknown certificate 'nope'"));
  CHECK(keys.generated == 0);
  CHECK(!std::filesystem::exists(opt.out));

  // The seed document's set: its five leaves, and the two CAs they chain to (no front-proxy CA).
  opt.only = {"flanneld", "apiserver", "kube-proxy.conf", "vm1/etcd-server", "etcd-etcdctl-client"};
  InitResult r1 = init_cluster(s, keys, *ledger, opt);
  CHECK(keys.generated == 2);
  CHECK(r1.issued == 7);
  std::set<std::string> issued;
  for (const auto& l : lines) issued.insert(l.substr(0, l.find(' ', 7)));
  CHECK(issued == std::set<std::string>{"issued ca", "issued etcd-ca", "issued apiserver", "issued vm1/etcd-server",
                                        "issued flanneld", "issued kube-proxy.conf", "issued etcd-etcdctl-client"});
  CHECK(ledger->list().size() == 7);
  auto first = snapshot(opt.out);
  for (const char* f : {"pki/ca.crt", "pki/etcd/ca.crt", "pki/apiserver.crt", "pki/apiserver.key", "pki/etcd/server.crt",
                        "pki/flanneld.crt", "pki/etcd/etcdctl-client.key", "kube-proxy.conf", "nodes/vm2/pki/apiserver.crt"})
    CHECK(first.count(f) == 1);
  for (const char* f : {"pki/front-proxy-ca.crt", "pki/sa.key", "admin.conf", "pki/apiserver-kubelet-client.crt",
                        "nodes/vm2/pki/etcd/server.crt", "flags/kube-apiserver.flags", "nodes/w1/kubelet.conf"})
    CHECK(first.count(f) == 0);
  // Each new key (generated ahead, while the CAs were made) belongs to its certificate.
  for (const char* base : {"pki/apiserver", "pki/etcd/server", "pki/flanneld", "pki/etcd/etcdctl-client"}) {
    INFO(base);
    auto cert = hwca::x509_from_pem(first[std::string(base) + ".crt"], base);
    auto key = hwca::private_key_from_pem(first[std::string(base) + ".key"], base);
    CHECK(hwca::same_public_key(X509_get0_pubkey(cert.get()), key.get()));
  }
  KubeconfigCredentials proxy = parse_kubeconfig(first["kube-proxy.conf"], "kube-proxy.conf");
  CHECK(proxy.ca_pem == first["pki/ca.crt"]);
  CHECK(hwca::same_public_key(X509_get0_pubkey(hwca::x509_from_pem(proxy.cert_pem, "kube-proxy").get()),
                              hwca::private_key_from_pem(proxy.key_pem, "kube-proxy").get()));

  // Again: nothing to do.
  InitResult r2 = init_cluster(s, keys, *ledger, opt);
  CHECK(r2.issued == 0);
  CHECK(r2.files_written == 0);

  // A worker-only node's certificate by NODE/NAME, and the service-account key pair by "sa".
  lines.clear();
  opt.only = {"w1/kubelet", "sa"};
  InitResult r3 = init_cluster(s, keys, *ledger, opt);
  CHECK(r3.issued == 1);
  CHECK(keys.generated == 2);
  CHECK(std::filesystem::exists(opt.out + "/nodes/w1/pki/kubelet.crt"));
  CHECK(!std::filesystem::exists(opt.out + "/nodes/w1/kubelet.conf"));
  CHECK(std::filesystem::exists(opt.out + "/pki/sa.key"));

  // A full init completes the rest and keeps what --only issued, byte for byte.
  opt.only.clear();
  InitResult r4 = init_cluster(s, keys, *ledger, opt);
  CHECK(keys.generated == 3);
  CHECK(r4.issued == static_cast<int>(make_plan(s).certs.size()) - 8);
  auto last = snapshot(opt.out);
  for (const char* f : {"pki/ca.crt", "pki/etcd/ca.crt", "pki/apiserver.crt", "pki/flanneld.key", "kube-proxy.conf",
                        "pki/etcd/server.crt"})
    CHECK(last[f] == first[f]);
  CHECK(last.count("pki/front-proxy-ca.crt") == 1);
  CHECK(last.count("flags/kube-apiserver.flags") == 1);
  CHECK(ledger->list().size() == make_plan(s).certs.size());
}

TEST_CASE("k8s: a rendered kubeconfig is byte for byte what yaml-cpp emits, whatever the names",
          "[core][k8s][kubeconfig]") {
  // render_kubeconfig fills a cached document's placeholders; every name below must give exactly the
  // document emitted directly, names that need quoting and names that look like a placeholder included.
  auto b64 = [](const std::string& data) {
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                            static_cast<int>(data.size()));
    out.resize(static_cast<size_t>(n));
    return out;
  };
  const std::string ca = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
  const std::string cert = "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n";
  const std::string key = "-----BEGIN EC PRIVATE KEY-----\nKEY\n-----END EC PRIVATE KEY-----\n";
  const std::vector<std::string> users = {"system:node:w1", "system:node:w2", "kubernetes-admin", "a: b", "#x", "- x",
                                          "'q'", "yes", "x@y", " lead", "trail ", "", "hwcaPlaceholderUser0",
                                          "hwcaPlaceholderCaData0", "line\nbreak", "system:node:w3"};
  const std::vector<std::string> clusters = {"kubernetes", "a: b", "c #d", "hwcaPlaceholderUser0", "hwcaPlaceholderCertData0"};
  const std::vector<std::string> servers = {"https://127.0.0.1:6443", "https://[::1]:6443", "hwcaPlaceholderKeyData0"};
  size_t checked = 0;
  for (const auto& cluster : clusters)
    for (const auto& server : servers)
      for (const auto& user : users) {
        INFO("cluster '" << cluster << "', server '" << server << "', user '" << user << "'");
        const std::string want =
            emit_kubeconfig(cluster, server, b64(ca), user, {{"client-certificate-data", b64(cert)}, {"client-key-data", b64(key)}});
        CHECK(render_kubeconfig(cluster, server, ca, user, cert, key) == want);
        ++checked;
      }
  CHECK(checked == clusters.size() * servers.size() * users.size());
}

namespace {

// A real ledger whose record_batch fails from the `fail_from`-th call on (a full disk in the middle of a
// bulk run); everything else goes through.
class FailingLedger final : public Ledger {
 public:
  FailingLedger(Ledger& real, int fail_from) : Ledger(real.path()), m_real(real), m_fail_from(fail_from) {}
  void record(const X509* c, const std::string& p, const std::string& r, const std::string& id) override {
    m_real.record(c, p, r, id);
  }
  void record_batch(const std::vector<BatchItem>& items) override {
    if (++m_calls >= m_fail_from) throw Error(ErrorKind::Io, "ledger: disk full (test)");
    m_real.record_batch(items);
  }
  void record_event(const std::string& k, const std::string& d) override { m_real.record_event(k, d); }
  LedgerEntry revoke(const std::string& s, const std::string& r, std::time_t t) override { return m_real.revoke(s, r, t); }
  std::optional<LedgerEntry> find(const std::string& s) const override { return m_real.find(s); }
  std::optional<LedgerEntry> find_by_request_id(const std::string& id) const override { return m_real.find_by_request_id(id); }
  std::vector<LedgerEntry> request_ids_with_prefix(const std::string& p) const override {
    return m_real.request_ids_with_prefix(p);
  }
  void mark_orphaned(const std::string& s, const std::string& w) override { m_real.mark_orphaned(s, w); }
  std::vector<LedgerEntry> revoked_by(const std::string& i) const override { return m_real.revoked_by(i); }
  long long next_crl_number(const std::string& k, const std::string& i) override { return m_real.next_crl_number(k, i); }
  AuditEntry append_audit(const std::string& k, const std::string& d) override { return m_real.append_audit(k, d); }
  std::optional<AuditEntry> audit_head() const override { return m_real.audit_head(); }
  std::vector<AuditEntry> audit_entries() const override { return m_real.audit_entries(); }
  std::vector<AuditCheckpoint> audit_checkpoints() const override { return m_real.audit_checkpoints(); }
  long long add_audit_checkpoint(const AuditCheckpoint& c) override { return m_real.add_audit_checkpoint(c); }
  std::optional<AuditCheckpoint> add_audit_checkpoint_if_due(
      long long every, const std::function<AuditCheckpoint(const AuditEntry& head)>& sign) override {
    return m_real.add_audit_checkpoint_if_due(every, sign);
  }
  std::vector<LedgerEntry> list() const override { return m_real.list(); }
  std::vector<LedgerEvent> events() const override { return m_real.events(); }
  bool has_serial(const std::string& s) const override { return m_real.has_serial(s); }
  int schema_version() const override { return m_real.schema_version(); }

 private:
  Ledger& m_real;
  std::atomic<int> m_calls{0};
  const int m_fail_from;
};

}  // namespace

TEST_CASE_METHOD(LayoutRun, "k8s layout: a ledger failure in one part of a multi-part run leaves every recorded certificate in its file") {
  // 1,000 workers: 8 worker parts, several at a time. From the 6th ledger batch on, recording fails: part 0
  // takes one batch per CA, so the first worker parts are recorded and written, a later one fails.
  std::string yaml = seed_yaml();
  std::string workers;
  for (int i = 2; i <= 1000; ++i)
    workers += "  - {name: w" + std::to_string(i) + ", ip: 10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "}\n";
  yaml.insert(yaml.find("apiServerCertSANs"), workers);
  ClusterSpec s = ClusterSpec::parse(yaml, "big.yaml");
  FailingLedger failing(*ledger, 6);
  Error e = error_of([&] { init_cluster(s, keys, failing, opt); });
  CHECK(e.kind() == ErrorKind::Io);
  CHECK_THAT(e.what(), Catch::Matchers::Contains("disk full (test)"));

  // Every row the ledger holds names a file that holds its certificate; and some worker parts got there.
  size_t rows = 0, worker_rows = 0;
  for (const auto& row : ledger->list()) {
    auto req = parse_file_request_id(row.request_id);
    REQUIRE(req);
    ++rows;
    if (req->path.find("/nodes/w") != std::string::npos) ++worker_rows;
    INFO(req->path);
    REQUIRE(std::filesystem::exists(req->path));
    std::string file = hwca::read_file(req->path);
    std::string pem = req->path.size() > 5 && req->path.substr(req->path.size() - 5) == ".conf"
                          ? parse_kubeconfig(file, req->path).cert_pem
                          : file;
    CHECK(pem == row.pem);
  }
  CHECK(worker_rows > 0);
  CHECK(rows < make_plan(s).certs.size());
  // No temporaries are left, and the report's lines are in part order (w2 before w1000).
  for (const auto& f : std::filesystem::recursive_directory_iterator(opt.out))
    CHECK(f.path().filename().string().find(".tmp.") == std::string::npos);
  std::vector<int> order;
  for (const auto& line : lines)
    if (line.rfind("issued w", 0) == 0) order.push_back(std::stoi(line.substr(8)));
  CHECK(std::is_sorted(order.begin(), order.end()));

  // The next run, with a ledger that works, completes the cluster and orphans nothing.
  InitResult r = init_cluster(s, keys, *ledger, opt);
  CHECK(r.orphaned == 0);
  CHECK(ledger->list().size() == make_plan(s).certs.size());
}

namespace {

// What parsing a cluster file gave: the spec (compared field by field, ClusterSpec::operator==) or the
// error's text.
struct Outcome {
  std::optional<ClusterSpec> spec;
  std::string error;
  bool operator==(const Outcome&) const = default;
};

Outcome outcome(const std::function<ClusterSpec()>& parse) {
  try {
    return {parse(), ""};
  } catch (const Error& e) {
    return {std::nullopt, e.what()};
  }
}

}  // namespace

TEST_CASE("k8s cluster file: the workers list read from the parser's events gives what the whole tree gives") {
  const std::string head = "name: kubernetes\ncontrolPlane:\n  - {name: cp1, ip: 10.0.0.1}\n  - {name: cp2, ip: 10.0.0.2}\n";
  std::string many = "workers:\n";
  for (int i = 1; i <= 3000; ++i)
    many += "  - {name: w" + std::to_string(i) + ", ip: 10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "}\n";
  struct Case {
    std::string desc, yaml;
    bool streamed;  // the events are used (else parse() reads the whole tree)
  };
  const std::vector<Case> cases = {
      {"flow entries, workers before cas", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\n  - {name: w2, ip: 10.0.1.2}\n" + kCas, true},
      {"flow entries, workers last", head + kCas + "workers:\n  - {name: w1, ip: 10.0.1.1}\n  - {name: w2, ip: 10.0.1.2}\n", true},
      {"workers last, no final line end", head + kCas + "workers:\n  - {name: w1, ip: 10.0.1.1}", true},
      {"block entries, keys in either order",
       head + "workers:\n  - name: w1\n    ip: 10.0.1.1\n  - ip: 10.0.1.2\n    name: w2\n" + kCas + "podSubnet: 10.50.0.0/16\n", true},
      {"one flow list", head + "workers: [{name: w1, ip: 10.0.1.1}, {name: \"w2\", ip: '10.0.1.2'}]\n" + kCas, true},
      {"indentless list", head + "workers:\n- {name: w1, ip: 10.0.1.1}\n- {name: w2, ip: 10.0.1.2}\n" + kCas, true},
      {"comments and blank lines", head + "workers:   # the nodes\n\n  # first\n  - {name: w1, ip: 10.0.1.1}  # one\n\n  - {name: w2, ip: 10.0.1.2}\n# after\n" + kCas, true},
      {"CRLF line ends", "name: kubernetes\r\ncontrolPlane:\r\n  - {name: cp1, ip: 10.0.0.1}\r\nworkers:\r\n  - {name: w1, ip: 10.0.1.1}\r\n  - name: w2\r\n    ip: 10.0.1.2\r\ncas:\r\n  kubernetes-ca: {key: \"pkcs11:token=t;object=k\"}\r\n  etcd-ca: {key: \"pkcs11:token=t;object=e\"}\r\n  front-proxy-ca: {key: \"pkcs11:token=t;object=f\"}\r\n", true},
      {"UTF-8 before and inside the list", "# nœuds du cluster — ünïcode\n" + head +
                                                "workers:\n  - {name: w1, ip: 10.0.1.1}  # première\n  - {name: w2, ip: 10.0.1.2}\n" + kCas +
                                                "podSubnet: 10.60.0.0/16  # après\n", true},
      {"IPv6, normalised", head + "workers:\n  - {name: w1, ip: \"2001:DB8:0:0::1\"}\n  - {name: w2, ip: \"::ffff:10.0.1.2\"}\n" + kCas, true},
      {"3,000 workers", head + many + kCas, true},
      {"etcd members and workers", head + "etcd:\n  - {name: e1, ip: 10.0.2.1}\nworkers:\n  - {name: w1, ip: 10.0.1.1}\n" + kCas, true},
      // Read by the whole tree: the same result, or the same error with its line.
      {"an anchor and an alias", head + "workers:\n  - &w1 {name: w1, ip: 10.0.1.1}\n" + kCas + "etcd: [*w1]\n", false},
      {"an unknown field in an entry", head + "workers:\n  - {name: w1, ip: 10.0.1.1, zone: a}\n" + kCas, false},
      {"a field twice in an entry", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\n  - {name: w2, name: w3, ip: 10.0.1.2}\n" + kCas, false},
      {"an entry without ip", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\n  - {name: w2}\n" + kCas, false},
      {"an empty ip", head + "workers:\n  - {name: w1, ip: }\n" + kCas, false},
      {"two workers of one name", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\n  - {name: w1, ip: 10.0.1.2}\n" + kCas, false},
      {"a worker named like a control-plane node", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\n  - {name: cp2, ip: 10.0.1.2}\n" + kCas, false},
      {"a bad IP", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\n  - {name: w2, ip: 10.0.1.256}\n" + kCas, false},
      {"a bad name", head + "workers:\n  - {name: W_2, ip: 10.0.1.2}\n" + kCas, false},
      {"a list as an ip", head + "workers:\n  - {name: w1, ip: [10.0.1.1]}\n" + kCas, false},
      {"a scalar entry", head + "workers:\n  - w1\n" + kCas, false},
      {"workers: with nothing", head + "workers:\n" + kCas, false},
      {"workers: []", head + "workers: []\n" + kCas, false},
      {"workers as a map", head + "workers: {w1: 10.0.1.1}\n" + kCas, false},
      {"a quoted key", head + "\"workers\":\n  - {name: w1, ip: 10.0.1.1}\n" + kCas, false},
      {"workers twice", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\nworkers:\n  - {name: w2, ip: 10.0.1.2}\n" + kCas, false},
      {"a flow map at the top", "{name: kubernetes, controlPlane: [{name: cp1, ip: 10.0.0.1}], workers: [{name: w1, ip: 10.0.1.1}], "
                                "cas: {kubernetes-ca: {key: \"pkcs11:token=t;object=k\"}, etcd-ca: {key: \"pkcs11:token=t;object=e\"}, "
                                "front-proxy-ca: {key: \"pkcs11:token=t;object=f\"}}}\n", false},
      {"a tag on a name", head + "workers:\n  - {name: !!str w1, ip: 10.0.1.1}\n" + kCas, false},
      {"a syntax error in the list", head + "workers:\n  - {name: w1, ip: 10.0.1.1\n  - {name: w2, ip: 10.0.1.2}\n" + kCas, false},
      {"a syntax error after the list", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\ncas: [\n", false},
      {"an error elsewhere", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\nserviceSubnet: 10.254.0.0\n" + kCas, false},
      {"an unknown top-level field", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\nworker: []\n" + kCas, false},
      {"a second document", head + "workers:\n  - {name: w1, ip: 10.0.1.1}\n" + kCas + "---\nname: other\n", true},
  };
  for (const auto& c : cases) {
    INFO(c.desc);
    const Outcome whole = outcome([&] { return ClusterSpec::parse_whole(c.yaml, "c.yaml"); });
    const Outcome chosen = outcome([&] { return ClusterSpec::parse(c.yaml, "c.yaml"); });
    INFO("whole tree: " << (whole.spec ? "a spec" : whole.error) << "; parse(): " << (chosen.spec ? "a spec" : chosen.error));
    CHECK(chosen == whole);
    auto streamed = ClusterSpec::parse_streamed(c.yaml, "c.yaml");
    CHECK(streamed.has_value() == c.streamed);
    if (streamed) CHECK(streamed == whole.spec);
    if (c.streamed) CHECK(whole.spec.has_value());
  }
}
