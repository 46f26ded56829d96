#include "core/base/process.h"

#include <mutex>
#include <sys/prctl.h>
#include <sys/resource.h>

namespace hwca {

void protect_secrets_in_memory() noexcept {
  static std::once_flag once;
  std::call_once(once, [] {
    rlimit none{};
    none.rlim_cur = 0;
    none.rlim_max = 0;
    (void)::setrlimit(RLIMIT_CORE, &none);
    (void)::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  });
}

}  // namespace hwca
