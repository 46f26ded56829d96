// cluster.yaml (core/k8s_cluster.h), as `hwca k8s init|plan|sign-csr --cluster` read it: parse, then
// the derived values the planner uses.
#include "fuzz.h"

#include "core/k8s_cluster.h"

using namespace hwca::core::k8s;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    ClusterSpec spec = ClusterSpec::parse(hwca::fuzz::bytes(data, size), "cluster.yaml");
    hwca::fuzz::accepts([&] { (void)spec.first_service_ip(); });
    hwca::fuzz::accepts([&] { (void)spec.cluster_dns_ip(); });
    hwca::fuzz::accepts([&] { (void)spec.server_url(); });
    hwca::fuzz::accepts([&] { (void)spec.endpoint_host(); });
    hwca::fuzz::accepts([&] { (void)spec.endpoint_port(); });
    for (CaRole role : {CaRole::Kubernetes, CaRole::Etcd, CaRole::FrontProxy}) (void)spec.ca_key(role);
    for (const Node& node : spec.all_nodes()) {
      hwca::fuzz::accepts([&] { (void)spec.local_server_url(node); });
      (void)spec.find_node(node.name);
      (void)spec.is_control_plane(node.name);
      (void)spec.is_etcd_member(node.name);
    }
    (void)spec.where("serviceSubnet");
    (void)spec.version_at_least(1, 24);
  });
  return 0;
}
