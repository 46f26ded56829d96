// A kubeconfig (core/k8s_kubeconfig.h), as `hwca k8s signer --kubeconfig` reads it: the current context's
// cluster (https server URL split into host, port and prefix; CA) and user (client certificate and key,
// or a token). Files it names are looked up under a folder that does not exist.
#include "fuzz.h"

#include "core/k8s_kubeconfig.h"

using namespace hwca::core::k8s;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    ClientConfig c = ClientConfig::parse(hwca::fuzz::bytes(data, size), "/nonexistent-hwca-fuzz/kubeconfig");
    if (c.host.empty() || c.port.empty()) __builtin_trap();  // parse() promises both
  });
  return 0;
}
