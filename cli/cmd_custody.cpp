// Placeholder until these commands land.
#include "cli/context.h"

namespace hwca::cli {

void add_custody_commands(CLI::App& /*app*/, Context& /*ctx*/) {}

}  // namespace hwca::cli
