// hwca k8s sign-csr: placeholder until it lands.
#include "cli/context.h"

namespace hwca::cli {

void add_k8s_sign_csr_command(CLI::App& /*k8s*/, Context& /*ctx*/) {}

}  // namespace hwca::cli
