// hwca k8s ...: placeholder until the Kubernetes commands land.
#include "cli/context.h"

namespace hwca::cli {

void add_k8s_commands(CLI::App& app, Context& ctx) {
  auto* k8s = app.add_subcommand("k8s", "the Kubernetes PKI from one cluster file");
  k8s->require_subcommand(1);
  add_k8s_sign_csr_command(*k8s, ctx);
}

}  // namespace hwca::cli
