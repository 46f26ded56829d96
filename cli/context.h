// What every subcommand shares: the key registry (owned by main), the ledger location, and the few
// helpers that wire core/ to tokens/. cli/ is the only place that includes both.
#pragma once

#include "core/ledger.h"
#include "core/profile.h"
#include "core/x509.h"
#include "tokens/backend.h"

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>

namespace hwca::cli {

// How a ledger will be used: by one command, or by a long-running server (automatic audit checkpoints,
// cli/audit_auto.h, are then signed on a background thread instead of the caller's).
enum class LedgerUse { Command, Server };

struct Context {
  tokens::Registry& registry;
  std::string ledger_path;  // empty: core::default_ledger_path()
  // The action chosen by the parsed subcommand; run by main after parsing.
  std::function<void()> action;

  // The ledger, wrapped for automatic audit checkpoints when HWCA_AUDIT_EVERY / HWCA_AUDIT_KEY are set.
  std::unique_ptr<core::Ledger> open_ledger(LedgerUse use = LedgerUse::Command) const;
  // Opens a key named on the command line: refuses pin-value (it would be in argv) and, when the key
  // is a CA key, a file: key unless `allow_file_ca_key`. A plain path gets a hint instead of a guess.
  // Refuses a CA key that is the configured audit key (HWCA_AUDIT_KEY).
  std::unique_ptr<tokens::Signer> open_ca_key(const std::string& uri, bool allow_file_ca_key) const;
  void check_key_uri(const std::string& uri, bool ca_key, bool allow_file_ca_key) const;
};

// Prints a warning line on stderr: "hwca: warning: ...".
void warn(const std::string& message);

// One subcommand family per file.
void add_key_commands(CLI::App& app, Context& ctx);
void add_token_commands(CLI::App& app, Context& ctx);
void add_ca_commands(CLI::App& app, Context& ctx);
void add_sign_command(CLI::App& app, Context& ctx);
void add_gencert_command(CLI::App& app, Context& ctx);
void add_ledger_commands(CLI::App& app, Context& ctx);
// hwca k8s init | check-expiration | renew (cmd_k8s.cpp); it calls add_k8s_sign_csr_command for its
// `sign-csr` subcommand (cmd_k8s_sign_csr.cpp).
void add_k8s_commands(CLI::App& app, Context& ctx);
void add_k8s_sign_csr_command(CLI::App& k8s, Context& ctx);
// hwca k8s bootstrap-token create | manifests (cmd_k8s_bootstrap.cpp).
void add_k8s_bootstrap_commands(CLI::App& k8s, Context& ctx);
// hwca k8s signer (cmd_k8s_signer.cpp): the long-running CSR signer.
void add_k8s_signer_command(CLI::App& k8s, Context& ctx);
// hwca ceremony | custody | revoke | crl | audit (cmd_ceremony.cpp, cmd_custody.cpp, cmd_revoke.cpp).
void add_ceremony_commands(CLI::App& app, Context& ctx);
void add_custody_commands(CLI::App& app, Context& ctx);
void add_revocation_commands(CLI::App& app, Context& ctx);
// hwca serve (cmd_serve.cpp): cfssl's remote signing API.
void add_serve_command(CLI::App& app, Context& ctx);

// If SOFTHSM2_CONF is unset and $HWCA_HOME/softhsm2.conf exists, points SOFTHSM2_CONF at it (the
// embedded default token). An existing SOFTHSM2_CONF is always honoured.
void use_embedded_softhsm_default();

// Reads a file or "-" (stdin) whole.
std::string read_input(const std::string& path);

}  // namespace hwca::cli
