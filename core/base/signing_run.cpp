#include "core/base/signing_run.h"

#include <vector>

namespace hwca {

namespace {

struct RunState {
  int depth = 0;
  std::vector<SigningRun::Device*> kept;
};

thread_local RunState t_run;

}  // namespace

SigningRun::SigningRun() { ++t_run.depth; }

SigningRun::~SigningRun() {
  if (--t_run.depth > 0) return;
  std::vector<Device*> kept;
  kept.swap(t_run.kept);
  for (Device* device : kept) device->release_after_run();
}

bool SigningRun::keep(Device& device) noexcept {
  if (t_run.depth == 0) return false;
  try {
    t_run.kept.push_back(&device);
  } catch (...) {
    return false;  // no memory to note it: the device releases itself now
  }
  return true;
}

}  // namespace hwca
