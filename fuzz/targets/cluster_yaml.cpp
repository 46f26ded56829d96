// cluster.yaml (core/k8s_cluster.h), as `hwca k8s init|plan|sign-csr --cluster` read it: parse, then
// the derived values the planner uses.
#include "fuzz.h"

#include "core/k8s_cluster.h"

#include <optional>
#include <string>

using namespace hwca::core::k8s;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = hwca::fuzz::bytes(data, size);
  // parse() may read `workers` from the parser's events instead of the whole node tree: it must give
  // exactly what the whole tree gives, the same spec or the same error, and the streamed reading alone
  // never throws.
  std::optional<ClusterSpec> whole, chosen;
  std::string whole_error, chosen_error;
  try {
    whole = ClusterSpec::parse_whole(text, "cluster.yaml");
  } catch (const hwca::Error& e) {
    whole_error = e.what();
  }
  try {
    chosen = ClusterSpec::parse(text, "cluster.yaml");
  } catch (const hwca::Error& e) {
    chosen_error = e.what();
  }
  HWCA_FUZZ_CHECK(chosen == whole && chosen_error == whole_error);
  const std::optional<ClusterSpec> streamed = ClusterSpec::parse_streamed(text, "cluster.yaml");
  HWCA_FUZZ_CHECK(!streamed || streamed == whole);

  if (!chosen) return 0;  // refused with a hwca::Error: checked above
  hwca::fuzz::accepts([&] {
    const ClusterSpec& spec = *chosen;
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
