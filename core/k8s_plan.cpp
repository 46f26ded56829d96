#include "core/k8s_plan.h"

#include "core/base/error.h"

#include <openssl/obj_mac.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <set>
#include <string_view>

namespace hwca::core::k8s {

namespace {

void add_unique(std::vector<std::string>& list, const std::string& value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(value);
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : sep) + i;
  return out;
}

}  // namespace

std::string CertSpec::primary_path() const {
  std::string dir = node.empty() ? "" : "nodes/" + node + "/";
  return dir + (kubeconfig.empty() ? "pki/" + base + ".crt" : kubeconfig);
}

X509_NAME_ptr CertSpec::subject() const {
  std::vector<NameAttribute> attrs;
  for (const auto& o : organizations) attrs.push_back({NID_organizationName, o, false});
  attrs.push_back({NID_commonName, cn, false});
  return make_name(attrs);
}

Profile CertSpec::profile() const {
  Profile p;
  p.name = "k8s:" + name;
  p.expiry = validity;
  if (is_ca) {
    // kubeadm's NewSelfSignedCACert: KeyEncipherment|DigitalSignature|CertSign; hwca adds cRLSign so
    // that the CA's CRLs verify (a documented difference).
    p.usages = {"digital signature", "key encipherment", "cert sign", "crl sign"};
    p.ca_constraint = CaConstraint{true, 0, false};
  } else {
    p.usages = {"digital signature", "key encipherment"};
    if (server_auth) p.usages.push_back("server auth");
    if (client_auth) p.usages.push_back("client auth");
    // RFC 5480: an EC key cannot encipher keys; only RSA leaves carry keyEncipherment.
    p.key_encipherment_only_for_rsa = true;
  }
  return p;
}

Usages CertSpec::usages(bool rsa_key) const {
  Usages u = profile().resolve_usages();
  if (!is_ca && !rsa_key) u.key_usage &= ~static_cast<unsigned>(X509v3_KU_KEY_ENCIPHERMENT);
  return u;
}

const CertSpec* Plan::find(const std::string& id) const {
  for (const auto& c : certs)
    if (c.id == id) return &c;
  return nullptr;
}

const CertSpec& Plan::ca(CaRole role) const {
  for (const auto& c : certs)
    if (c.is_ca && c.ca == role) return c;
  throw Error(ErrorKind::Internal, "plan without a CA");
}

std::vector<std::string> apiserver_kubelet_client_orgs(const ClusterSpec& s) {
  if (!s.version_at_least(1, 29)) return {"system:masters"};
  // The O was dropped (access through the kubeadm:apiserver-kubelet-client ClusterRoleBinding) in
  // v1.33.12, v1.34.8, v1.35.5, v1.36.1 and every later minor.
  int m = s.version_minor, p = s.version_patch;
  if (s.version_major > 1 || m >= 37 || (m == 36 && p >= 1) || (m == 35 && p >= 5) || (m == 34 && p >= 8) ||
      (m == 33 && p >= 12))
    return {};
  return {"kubeadm:cluster-admins"};
}

std::vector<std::string> admin_orgs(const ClusterSpec& s) {
  return s.version_at_least(1, 29) ? std::vector<std::string>{"kubeadm:cluster-admins"}
                                   : std::vector<std::string>{"system:masters"};
}

std::vector<std::string> etcd_client_orgs(const ClusterSpec& s) {
  return s.version_at_least(1, 29) ? std::vector<std::string>{} : std::vector<std::string>{"system:masters"};
}

SubjectAltNames apiserver_sans(const ClusterSpec& s) {
  SubjectAltNames sans;
  for (const Node& n : s.control_plane) add_unique(sans.dns, n.name);
  for (const char* d : {"kubernetes", "kubernetes.default", "kubernetes.default.svc"}) add_unique(sans.dns, d);
  add_unique(sans.dns, "kubernetes.default.svc." + s.dns_domain);
  add_unique(sans.ips, s.first_service_ip());
  for (const Node& n : s.control_plane) add_unique(sans.ips, n.ip);
  std::string host = s.endpoint_host();
  add_unique(is_ip_literal(host) ? sans.ips : sans.dns, host);
  for (const auto& extra : s.api_server_cert_sans) add_unique(is_ip_literal(extra) ? sans.ips : sans.dns, extra);
  return sans;
}

SubjectAltNames etcd_sans(const Node& node) {
  SubjectAltNames sans;
  add_unique(sans.dns, node.name);
  add_unique(sans.dns, "localhost");
  add_unique(sans.ips, node.ip);
  add_unique(sans.ips, "127.0.0.1");
  add_unique(sans.ips, "::1");
  return sans;
}

Plan make_plan(const ClusterSpec& s) {
  Plan plan;
  const std::string D = s.install_dir;
  const Node& init_node = s.control_plane.front();

  auto ca = [&](CaRole role, const std::string& base, const std::string& cn) {
    CertSpec c;
    c.id = ca_role_name(role);
    c.name = role == CaRole::Kubernetes ? "ca" : ca_role_name(role);
    c.is_ca = true;
    c.ca = role;
    c.cn = cn;
    c.sans.dns = {cn};  // NewSelfSignedCACert: DNSNames = [CommonName]
    c.validity = s.ca_validity;
    c.base = base;
    plan.certs.push_back(c);
  };
  ca(CaRole::Kubernetes, "ca", "kubernetes");
  ca(CaRole::Etcd, "etcd/ca", "etcd-ca");
  ca(CaRole::FrontProxy, "front-proxy-ca", "front-proxy-ca");

  auto leaf = [&](const std::string& name, const std::string& node, CaRole role, const std::string& cn,
                  std::vector<std::string> orgs, bool server, bool client) -> CertSpec& {
    CertSpec c;
    c.name = name;
    c.id = node.empty() ? name : name + "@" + node;
    c.node = node;
    c.ca = role;
    c.cn = cn;
    c.organizations = std::move(orgs);
    c.server_auth = server;
    c.client_auth = client;
    c.validity = s.leaf_validity;
    plan.certs.push_back(c);
    return plan.certs.back();
  };

  // §1.2 leaves.
  leaf("apiserver", "", CaRole::Kubernetes, "kube-apiserver", {}, true, false).base = "apiserver";
  plan.certs.back().sans = apiserver_sans(s);
  leaf("apiserver-kubelet-client", "", CaRole::Kubernetes, "kube-apiserver-kubelet-client",
       apiserver_kubelet_client_orgs(s), false, true)
      .base = "apiserver-kubelet-client";
  leaf("front-proxy-client", "", CaRole::FrontProxy, "front-proxy-client", {}, false, true).base = "front-proxy-client";
  leaf("etcd-healthcheck-client", "", CaRole::Etcd, "kube-etcd-healthcheck-client", etcd_client_orgs(s), false, true)
      .base = "etcd/healthcheck-client";
  leaf("apiserver-etcd-client", "", CaRole::Etcd, "kube-apiserver-etcd-client", etcd_client_orgs(s), false, true)
      .base = "apiserver-etcd-client";
  for (const Node& n : s.etcd) {
    leaf("etcd-server", n.name, CaRole::Etcd, n.name, {}, true, true).base = "etcd/server";
    plan.certs.back().sans = etcd_sans(n);
    leaf("etcd-peer", n.name, CaRole::Etcd, n.name, {}, true, true).base = "etcd/peer";
    plan.certs.back().sans = etcd_sans(n);
  }
  // §2 kubeconfig client certificates.
  leaf("admin.conf", "", CaRole::Kubernetes, "kubernetes-admin", admin_orgs(s), false, true).kubeconfig = "admin.conf";
  if (s.version_at_least(1, 29))
    leaf("super-admin.conf", "", CaRole::Kubernetes, "kubernetes-super-admin", {"system:masters"}, false, true)
        .kubeconfig = "super-admin.conf";
  leaf("controller-manager.conf", "", CaRole::Kubernetes, "system:kube-controller-manager", {}, false, true)
      .kubeconfig = "controller-manager.conf";
  leaf("scheduler.conf", "", CaRole::Kubernetes, "system:kube-scheduler", {}, false, true).kubeconfig = "scheduler.conf";
  const auto nodes = s.all_nodes();
  for (const Node& n : nodes) {
    leaf("kubelet.conf", n.name, CaRole::Kubernetes, "system:node:" + n.name, {"system:nodes"}, false, true).kubeconfig =
        "kubelet.conf";
    // The kubelet's serving certificate, as the kubernetes.io/kubelet-serving signer would issue it.
    leaf("kubelet", n.name, CaRole::Kubernetes, "system:node:" + n.name, {"system:nodes"}, true, false).base = "kubelet";
    plan.certs.back().sans.dns = {n.name};
    plan.certs.back().sans.ips = {n.ip};
  }
  // The seed document's extras.
  if (s.seed_extras) {
    leaf("flanneld", "", CaRole::Etcd, "flanneld", {}, false, true).base = "flanneld";
    leaf("kube-proxy.conf", "", CaRole::Kubernetes, "system:kube-proxy", {}, false, true).kubeconfig = "kube-proxy.conf";
    leaf("etcd-etcdctl-client", "", CaRole::Etcd, "etcdctl", {}, false, true).base = "etcd/etcdctl-client";
  }

  // Folders, CA certificates, copies, kubeconfigs and flags, per node, then the top level (the init node).
  plan.folders = {"pki", "pki/etcd", "flags", "nodes"};
  std::vector<std::string> etcd_endpoints, initial_cluster;
  for (const Node& n : s.etcd) {
    add_unique(etcd_endpoints, https_url(n.ip, s.etcd_client_port));
    initial_cluster.push_back(n.name + "=" + https_url(n.ip, s.etcd_peer_port));
  }

  auto place_node = [&](const Node& n, const std::string& dir, bool top) {
    bool cp = s.is_control_plane(n.name), member = s.is_etcd_member(n.name);
    auto copy = [&](const std::string& cert_id, const std::string& base) {
      const CertSpec* c = plan.find(cert_id);
      if (!c) throw Error(ErrorKind::Internal, "plan: no certificate " + cert_id);
      std::string crt = dir + "pki/" + base + ".crt";
      if (c->primary_path() == crt) return;
      plan.copies.push_back({crt, cert_id, false});
      plan.copies.push_back({dir + "pki/" + base + ".key", cert_id, true});
    };
    auto kubeconfig = [&](const std::string& file, const std::string& cert_id, const std::string& server) {
      plan.kubeconfigs.push_back({dir + file, cert_id, server});
    };
    auto ca_copy = [&](const std::string& path, CaRole role) {
      if (!top) plan.ca_copies.push_back({dir + path, role});
    };
    if (!top) {
      plan.folders.push_back(dir.substr(0, dir.size() - 1));
      plan.folders.push_back(dir + "pki");
      if (member || cp || s.seed_extras) plan.folders.push_back(dir + "pki/etcd");  // a worker has nothing there
      plan.folders.push_back(dir + "flags");
    }
    ca_copy("pki/ca.crt", CaRole::Kubernetes);
    copy("kubelet@" + n.name, "kubelet");
    kubeconfig("kubelet.conf", "kubelet.conf@" + n.name, s.server_url());
    if (member || cp || s.seed_extras) ca_copy("pki/etcd/ca.crt", CaRole::Etcd);
    if (member) {
      copy("etcd-server@" + n.name, "etcd/server");
      copy("etcd-peer@" + n.name, "etcd/peer");
      copy("etcd-healthcheck-client", "etcd/healthcheck-client");
      if (s.seed_extras) copy("etcd-etcdctl-client", "etcd/etcdctl-client");
    }
    if (cp) {
      ca_copy("pki/front-proxy-ca.crt", CaRole::FrontProxy);
      for (const char* b : {"apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client"})
        copy(b, b);
      if (!top) plan.sa_dirs.push_back(dir + "pki");
      kubeconfig("admin.conf", "admin.conf", s.server_url());
      kubeconfig("controller-manager.conf", "controller-manager.conf", s.local_server_url(n));
      kubeconfig("scheduler.conf", "scheduler.conf", s.local_server_url(n));
    }
    if (s.seed_extras) {
      copy("flanneld", "flanneld");
      kubeconfig("kube-proxy.conf", "kube-proxy.conf", s.server_url());
    }
    if (top) {
      if (s.version_at_least(1, 29)) kubeconfig("super-admin.conf", "super-admin.conf", s.server_url());
      if (s.seed_extras && !member) copy("etcd-etcdctl-client", "etcd/etcdctl-client");
    }

    // Flags: the exact flags that use these files once the folder is installed at installDir.
    auto flags = [&](const std::string& component, std::vector<std::string> list) {
      plan.flags.push_back({dir + "flags/" + component + ".flags", std::move(list)});
    };
    if (member) {
      std::vector<std::string> listen_client = {https_url(n.ip, s.etcd_client_port)};
      add_unique(listen_client, https_url("127.0.0.1", s.etcd_client_port));
      flags("etcd", {"--name=" + n.name,
                     "--data-dir=/var/lib/etcd",
                     "--listen-client-urls=" + join(listen_client, ","),
                     "--advertise-client-urls=" + https_url(n.ip, s.etcd_client_port),
                     "--listen-peer-urls=" + https_url(n.ip, s.etcd_peer_port),
                     "--initial-advertise-peer-urls=" + https_url(n.ip, s.etcd_peer_port),
                     "--initial-cluster=" + join(initial_cluster, ","),
                     "--initial-cluster-state=new",
                     "--initial-cluster-token=" + s.name + "-etcd",
                     "--cert-file=" + D + "/pki/etcd/server.crt",
                     "--key-file=" + D + "/pki/etcd/server.key",
                     "--trusted-ca-file=" + D + "/pki/etcd/ca.crt",
                     "--client-cert-auth=true",
                     "--peer-cert-file=" + D + "/pki/etcd/peer.crt",
                     "--peer-key-file=" + D + "/pki/etcd/peer.key",
                     "--peer-trusted-ca-file=" + D + "/pki/etcd/ca.crt",
                     "--peer-client-cert-auth=true"});
    }
    if (cp) {
      flags("kube-apiserver", {"--advertise-address=" + n.ip,
                               "--secure-port=" + std::to_string(s.api_server_port),
                               "--client-ca-file=" + D + "/pki/ca.crt",
                               "--tls-cert-file=" + D + "/pki/apiserver.crt",
                               "--tls-private-key-file=" + D + "/pki/apiserver.key",
                               "--kubelet-client-certificate=" + D + "/pki/apiserver-kubelet-client.crt",
                               "--kubelet-client-key=" + D + "/pki/apiserver-kubelet-client.key",
                               "--kubelet-certificate-authority=" + D + "/pki/ca.crt",
                               "--etcd-servers=" + join(etcd_endpoints, ","),
                               "--etcd-cafile=" + D + "/pki/etcd/ca.crt",
                               "--etcd-certfile=" + D + "/pki/apiserver-etcd-client.crt",
                               "--etcd-keyfile=" + D + "/pki/apiserver-etcd-client.key",
                               "--service-cluster-ip-range=" + s.service_subnet,
                               "--service-account-issuer=https://kubernetes.default.svc." + s.dns_domain,
                               "--service-account-key-file=" + D + "/pki/sa.pub",
                               "--service-account-signing-key-file=" + D + "/pki/sa.key",
                               "--proxy-client-cert-file=" + D + "/pki/front-proxy-client.crt",
                               "--proxy-client-key-file=" + D + "/pki/front-proxy-client.key",
                               "--requestheader-client-ca-file=" + D + "/pki/front-proxy-ca.crt",
                               "--requestheader-allowed-names=front-proxy-client",
                               "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                               "--requestheader-group-headers=X-Remote-Group",
                               "--requestheader-username-headers=X-Remote-User",
                               "--enable-bootstrap-token-auth=true",
                               "--authorization-mode=Node,RBAC",
                               "--allow-privileged=true"});
      flags("kube-controller-manager", {"--kubeconfig=" + D + "/controller-manager.conf",
                                        "--authentication-kubeconfig=" + D + "/controller-manager.conf",
                                        "--authorization-kubeconfig=" + D + "/controller-manager.conf",
                                        "--bind-address=127.0.0.1",
                                        "--client-ca-file=" + D + "/pki/ca.crt",
                                        "--requestheader-client-ca-file=" + D + "/pki/front-proxy-ca.crt",
                                        "--root-ca-file=" + D + "/pki/ca.crt",
                                        "--service-account-private-key-file=" + D + "/pki/sa.key",
                                        "--service-cluster-ip-range=" + s.service_subnet,
                                        "--cluster-cidr=" + s.pod_subnet,
                                        "--allocate-node-cidrs=true",
                                        "--cluster-name=" + s.name,
                                        "--controllers=*,-csrsigning",
                                        "--use-service-account-credentials=true",
                                        "--leader-elect=true"});
      flags("kube-scheduler", {"--kubeconfig=" + D + "/scheduler.conf",
                               "--authentication-kubeconfig=" + D + "/scheduler.conf",
                               "--authorization-kubeconfig=" + D + "/scheduler.conf",
                               "--bind-address=127.0.0.1",
                               "--leader-elect=true"});
    }
    flags("kubelet", {"--kubeconfig=" + D + "/kubelet.conf",
                      "--client-ca-file=" + D + "/pki/ca.crt",
                      "--tls-cert-file=" + D + "/pki/kubelet.crt",
                      "--tls-private-key-file=" + D + "/pki/kubelet.key",
                      "--rotate-certificates=false",
                      "--cluster-dns=" + s.cluster_dns_ip(),
                      "--cluster-domain=" + s.dns_domain,
                      "--hostname-override=" + n.name,
                      "--node-ip=" + n.ip});
    if (s.seed_extras) {
      flags("kube-proxy", {"--kubeconfig=" + D + "/kube-proxy.conf",
                           "--cluster-cidr=" + s.pod_subnet,
                           "--hostname-override=" + n.name});
      flags("flanneld", {"-etcd-cafile=" + D + "/pki/etcd/ca.crt",
                         "-etcd-certfile=" + D + "/pki/flanneld.crt",
                         "-etcd-keyfile=" + D + "/pki/flanneld.key",
                         "-etcd-endpoints=" + join(etcd_endpoints, ","),
                         "-etcd-prefix=/kubernetes/network"});
    }
  };
  for (const Node& n : nodes) place_node(n, "nodes/" + n.name + "/", false);
  plan.sa_dirs.insert(plan.sa_dirs.begin(), "pki");
  place_node(init_node, "", true);
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Crash consistency

std::string file_request_id(long long run, const std::string& abs_path) {
  return std::string(kFileRequestIdPrefix) + std::to_string(run) + ":" + abs_path;
}

std::optional<FileRequest> parse_file_request_id(const std::string& id) {
  if (id.compare(0, kFileRequestIdPrefix.size(), kFileRequestIdPrefix) != 0) return std::nullopt;
  size_t at = kFileRequestIdPrefix.size(), colon = id.find(':', at);
  if (colon == std::string::npos || colon == at || colon - at > 18) return std::nullopt;
  FileRequest r;
  for (size_t i = at; i < colon; ++i) {
    if (id[i] < '0' || id[i] > '9') return std::nullopt;
    r.run = r.run * 10 + (id[i] - '0');
  }
  r.path = id.substr(colon + 1);
  if (r.run <= 0 || r.path.empty() || r.path[0] != '/') return std::nullopt;
  return r;
}

std::vector<Orphan> find_orphans(const std::string& abs_path, const std::vector<FileRow>& rows, const OnDisk& disk) {
  std::vector<Orphan> out;
  auto orphan = [&](const FileRow& r, const std::string& now) {
    out.push_back({r.serial, abs_path, r.run,
                   "k8s init run " + std::to_string(r.run) + " recorded it but stopped before writing " + abs_path + " (" +
                       now + "): it never reached the file"});
  };
  switch (disk.state) {
    case OnDisk::State::Unknown:
      break;
    case OnDisk::State::Missing: {
      const FileRow* newest = nullptr;
      for (const auto& r : rows)
        if (!newest || r.run > newest->run) newest = &r;
      if (newest && newest->status == "issued") orphan(*newest, "the file does not exist");
      break;
    }
    case OnDisk::State::Holds: {
      const FileRow* current = nullptr;
      for (const auto& r : rows)
        if (r.serial == disk.serial) current = &r;
      if (!current) break;  // a certificate recorded for another file, or not by this ledger
      for (const auto& r : rows)
        if (r.run > current->run && r.status == "issued")
          orphan(r, "it holds " + disk.serial + " of run " + std::to_string(current->run));
      std::sort(out.begin(), out.end(), [](const Orphan& a, const Orphan& b) { return a.run < b.run; });
      break;
    }
  }
  return out;
}

FileRows::FileRows(const std::vector<LedgerEntry>& entries, const std::string& abs_out) {
  const std::string prefix = abs_out + "/";
  for (const auto& e : entries) {
    if (e.request_id.empty()) continue;
    auto r = parse_file_request_id(e.request_id);
    if (!r || r->path.compare(0, prefix.size(), prefix) != 0) continue;
    m_max_run = std::max(m_max_run, r->run);
    m_rows[r->path].push_back({r->run, e.serial, e.status});
    ++m_count;
  }
}

std::vector<Orphan> FileRows::orphans(const std::string& abs_path, const OnDisk& disk) const {
  auto it = m_rows.find(abs_path);
  if (it == m_rows.end()) return {};
  return find_orphans(abs_path, it->second, disk);
}

void FileRows::marked(const std::string& abs_path, const std::string& serial) {
  auto it = m_rows.find(abs_path);
  if (it == m_rows.end()) return;
  for (auto& r : it->second)
    if (r.serial == serial) r.status = "orphaned";
}

}  // namespace hwca::core::k8s
