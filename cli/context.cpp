#include "cli/context.h"

#include "cli/audit_auto.h"
#include "core/base/error.h"

#include <cstdlib>
#include <iostream>
#include <iterator>
#include <sys/stat.h>

namespace hwca::cli {

std::unique_ptr<core::Ledger> Context::open_ledger(LedgerUse use) const {
  auto settings = auto_checkpoint_settings();  // a bad setting fails before the ledger is touched
  auto ledger = core::Ledger::open(ledger_path.empty() ? core::default_ledger_path() : ledger_path);
  if (!settings) return ledger;
  return with_auto_checkpoints(*this, std::move(ledger), *settings,
                               use == LedgerUse::Server ? CheckpointMode::Background : CheckpointMode::Inline);
}

void Context::check_key_uri(const std::string& uri, bool ca_key, bool allow_file_ca_key) const {
  if (uri.empty()) throw Error(ErrorKind::Usage, "the key URI is empty");
  if (uri.find(':') == std::string::npos) {
    throw Error(ErrorKind::BadInput,
                "'" + uri + "' is not a key URI; hwca keeps CA keys in hardware: move a cfssl key file in with "
                "`hwca key import --from " + uri + " --key 'pkcs11:...'` (or pass file:" + uri +
                " with --allow-file-ca-key)");
  }
  tokens::refuse_pin_value_on_command_line(uri);
  if (ca_key && tokens::Registry::scheme_of(uri) == "file" && !allow_file_ca_key) {
    throw Error(ErrorKind::Policy, "refusing a software CA key (" + uri +
                                       "); CA keys belong in a token or TPM (pass --allow-file-ca-key to override)");
  }
}

std::unique_ptr<tokens::Signer> Context::open_ca_key(const std::string& uri, bool allow_file_ca_key) const {
  check_key_uri(uri, true, allow_file_ca_key);
  auto key = registry.backend_for(uri).open(uri);
  refuse_audit_key_as_ca_key(*this, key->public_key());
  return key;
}

void warn(const std::string& message) { std::cerr << "hwca: warning: " << message << std::endl; }

void use_embedded_softhsm_default() {
  if (std::getenv("SOFTHSM2_CONF") != nullptr) return;
  std::string conf = core::hwca_home() + "/softhsm2.conf";
  struct stat st {};
  if (::stat(conf.c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::setenv("SOFTHSM2_CONF", conf.c_str(), 0);
}

std::string read_input(const std::string& path) {
  if (path == "-") {
    // Bounded as read_file is: an endless stdin (< /dev/zero) is an error, not a hang.
    constexpr std::size_t kMaxInput = 64u * 1024 * 1024;
    std::string data;
    char buf[65536];
    while (std::cin.read(buf, sizeof buf) || std::cin.gcount() > 0) {
      data.append(buf, static_cast<std::size_t>(std::cin.gcount()));
      if (data.size() > kMaxInput) throw Error(ErrorKind::BadInput, "standard input: larger than 64 MiB; not an input hwca reads");
    }
    if (std::cin.bad()) throw Error(ErrorKind::Io, "cannot read standard input");
    return data;
  }
  return read_file(path);
}

}  // namespace hwca::cli
