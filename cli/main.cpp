// hwca: a certificate authority whose CA keys live in hardware.
// main() owns every library handle (the key registry, and through it each PKCS#11 module) and tears
// them down in reverse order before OpenSSL's own cleanup runs.
#include "cli/args.h"
#include "cli/context.h"
#include "core/base/error.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace hwca::cli {
// cmd_custody.cpp: rebuilds the PIN from Shamir share files and makes it the PIN of every key opened.
void apply_pin_shares(const std::string& list);
}  // namespace hwca::cli

namespace {

std::string one_line(std::string text) {
  for (auto& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

int report(const std::string& message, int code) {
  std::cerr << "hwca: error: " << one_line(message) << std::endl;
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args = hwca::cli::normalize_go_flags(argc, argv);
  std::vector<const char*> cargs;
  cargs.reserve(args.size());
  for (const auto& a : args) cargs.push_back(a.c_str());

  std::unique_ptr<hwca::tokens::Registry> registry;  // outlives every Signer made below
  int rc = 0;
  try {
    hwca::cli::use_embedded_softhsm_default();
    registry = hwca::tokens::Registry::with_builtin_backends();
    hwca::cli::Context ctx{*registry, {}, {}};

    CLI::App app{"hwca: a certificate authority whose CA keys live in a PKCS#11 token or a TPM.\n"
                 "Options take Go's spellings too: -ca=x, -ca x, --ca=x, --ca x."};
    app.set_version_flag("--version", "hwca 0.1.0");
    app.require_subcommand(1);
    app.fallthrough();
    app.add_option("--ledger", ctx.ledger_path, "ledger: a SQLite file (default $HWCA_HOME/ledger.db, $HWCA_HOME=./.hwca) or postgresql://USER@HOST:PORT/DB");
    std::string pin_shares;
    app.add_option("--pin-shares", pin_shares,
                   "custodians' share files (a,b,c) that rebuild the token PIN (see `hwca custody split`)");
    hwca::cli::add_key_commands(app, ctx);
    hwca::cli::add_token_commands(app, ctx);
    hwca::cli::add_ca_commands(app, ctx);
    hwca::cli::add_sign_command(app, ctx);
    hwca::cli::add_gencert_command(app, ctx);
    hwca::cli::add_ledger_commands(app, ctx);
    hwca::cli::add_k8s_commands(app, ctx);
    hwca::cli::add_ceremony_commands(app, ctx);
    hwca::cli::add_custody_commands(app, ctx);
    hwca::cli::add_revocation_commands(app, ctx);
    hwca::cli::add_serve_command(app, ctx);

    try {
      app.parse(static_cast<int>(cargs.size()), cargs.data());
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
      return report(e.what(), 2);
    }
    if (!ctx.action) return report("no command given (try --help)", 2);
    if (!pin_shares.empty()) hwca::cli::apply_pin_shares(pin_shares);
    ctx.action();
  } catch (const hwca::Error& e) {
    rc = report(e.what(), e.kind() == hwca::ErrorKind::Usage ? 2 : 1);
  } catch (const std::exception& e) {
    rc = report(std::string("internal error: ") + e.what(), 1);
  }
  registry.reset();
  return rc;
}
