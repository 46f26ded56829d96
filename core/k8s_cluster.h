// cluster.yaml: one file that describes a Kubernetes cluster's PKI (spec §1-2, issue "The whole
// Kubernetes PKI from one cluster file"). Parsed with yaml-cpp; errors name the file, line and field.
// The schema is documented in docs/kubernetes.md.
#pragma once

#include "core/base/algorithm.h"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hwca::core::k8s {

struct Node {
  std::string name;  // a DNS label (RFC 1123)
  std::string ip;    // IPv4 or IPv6, normalised (inet_ntop)
  int line = 0;      // where the entry is in the cluster file (0: not from a file)
  bool operator==(const Node&) const = default;
};

enum class CaRole { Kubernetes, Etcd, FrontProxy };
// "kubernetes-ca", "etcd-ca", "front-proxy-ca" (the keys under `cas:` in cluster.yaml).
const char* ca_role_name(CaRole role);

struct ClusterSpec {
  std::string file;                          // where it was read from (for messages)
  std::string name = "kubernetes";           // kubeconfig cluster name
  std::string kubernetes_version = "1.30";   // "MAJOR.MINOR[.PATCH]"; picks the O-field conventions (§1.2, §2)
  int version_major = 1, version_minor = 30, version_patch = 0;
  std::string control_plane_endpoint;        // host or host:port (the VIP); empty: first control-plane node
  int api_server_port = 6443;                // the apiserver's bind port (apiServerPort)
  std::string service_subnet = "10.96.0.0/12";
  std::string pod_subnet = "10.244.0.0/16";  // podSubnet: flanneld's network, --cluster-cidr
  std::string dns_domain = "cluster.local";
  std::vector<Node> control_plane;           // at least one
  std::vector<Node> etcd;                    // default: the control-plane nodes
  bool etcd_given = false;                   // `etcd:` was in the file
  std::vector<Node> workers;
  std::vector<std::string> api_server_cert_sans;
  KeySpec leaf_key{KeySpec::Type::Ec, 256};  // keyAlgorithm: ecdsa-p256 (default), rsa-2048, ...
  KeySpec ca_key_spec{KeySpec::Type::Ec, 256};  // caKeyAlgorithm: for CA keys generated in the device
  std::chrono::seconds ca_validity{std::chrono::hours(87600)};
  std::chrono::seconds leaf_validity{std::chrono::hours(8760)};
  std::string kubernetes_ca_key;             // key URIs of the three CAs; generated inside the device when absent
  std::string etcd_ca_key;
  std::string front_proxy_ca_key;
  // The seed document's extra certificates: flanneld, kube-proxy (+ kubeconfig), an etcdctl client.
  bool seed_extras = false;
  // installDir: where the output folder is installed on the nodes; the paths in flags/ start here.
  std::string install_dir = "/etc/kubernetes";
  int etcd_client_port = 2379;
  int etcd_peer_port = 2380;
  // Line of each field as read ("serviceSubnet", "cas.kubernetes-ca.key", ...), for later messages.
  std::map<std::string, int> lines;
  bool operator==(const ClusterSpec&) const = default;

  // Error(BadInput, "<file>:<line>: <field>: <reason>") for every malformed field.
  static ClusterSpec load(const std::string& path);
  static ClusterSpec parse(const std::string& yaml, const std::string& file);
  // What parse() does, always through yaml-cpp's node tree of the whole file. parse() reads the `workers`
  // list from the parser's events instead when it is a plain list of {name, ip} (a node tree costs about
  // 2.4 KB per worker: 60 MB for 25,000), and gives the same result; anything else, and every error,
  // goes through this.
  static ClusterSpec parse_whole(const std::string& yaml, const std::string& file);
  // The streamed reading alone: nullopt when the file is not of that form or has any error (tests).
  static std::optional<ClusterSpec> parse_streamed(const std::string& yaml, const std::string& file);

  const std::string& ca_key(CaRole role) const;
  // "<file>:<line>: <field>" for a field read from the file ("<file>: <field>" when unknown).
  std::string where(const std::string& field) const;
  // The first usable IP of the service subnet (10.254.0.1 for 10.254.0.0/16).
  std::string first_service_ip() const;
  // The tenth IP of the service subnet: the cluster DNS service, as kubeadm picks it (10.254.0.10).
  std::string cluster_dns_ip() const;
  // True when kubernetes_version >= major.minor.
  bool version_at_least(int major, int minor) const;
  // The control-plane endpoint's host and port (the first control-plane node's IP and the bind port when
  // no endpoint is given).
  std::string endpoint_host() const;
  int endpoint_port() const;
  // https://<endpoint>:<port> for kubeconfigs that use the control-plane endpoint.
  std::string server_url() const;
  // https://<ip>:<bind port>: a control-plane node's local API endpoint.
  std::string local_server_url(const Node& node) const;
  // Every node once, by name: control plane, then etcd members, then workers.
  std::vector<Node> all_nodes() const;
  const Node* find_node(const std::string& name) const;
  bool is_control_plane(const std::string& node) const;
  bool is_etcd_member(const std::string& node) const;

 private:
  struct StreamedNode {
    std::string name, ip;
    int line = 0;
  };
  static ClusterSpec parse_tree(const std::string& yaml, const std::string& file,
                                const std::vector<StreamedNode>* streamed_workers);
};

// "https://[::1]:6443" or "https://10.0.0.1:6443".
std::string https_url(const std::string& host, int port);
// True for an IPv4 or IPv6 literal.
bool is_ip_literal(const std::string& text);
// True for an RFC 1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters.
bool is_dns_label(const std::string& text);
// True for an RFC 1123 subdomain: dot-separated labels, at most 253 characters.
bool is_dns_subdomain(const std::string& text);

}  // namespace hwca::core::k8s
