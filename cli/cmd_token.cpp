// hwca token init: initialise a PKCS#11 token (SoftHSM2's free slot) with PINs read from files.
#include "cli/context.h"
#include "core/base/error.h"

#include <openssl/crypto.h>

#include <cstdlib>
#include <iostream>
#include <memory>

namespace hwca::cli {

namespace {

struct TokenOptions {
  std::string uri;
  std::string so_pin_source;
};

std::string read_so_pin(const std::string& source) {
  std::string pin;
  if (!source.empty()) {
    std::string path = source.rfind("file:", 0) == 0 ? source.substr(5) : source;
    pin = read_file(path);
    while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
  } else if (const char* env = std::getenv("HWCA_SO_PIN")) {
    pin = env;
  } else {
    throw Error(ErrorKind::Usage, "token init needs the security officer PIN: --so-pin-source file:PATH or HWCA_SO_PIN");
  }
  if (pin.empty()) throw Error(ErrorKind::BadInput, "the security officer PIN is empty");
  return pin;
}

}  // namespace

void add_token_commands(CLI::App& app, Context& ctx) {
  auto* token = app.add_subcommand("token", "PKCS#11 token housekeeping");
  token->require_subcommand(1);
  auto opts = std::make_shared<TokenOptions>();
  auto* init = token->add_subcommand("init", "initialise a token in a free slot; user PIN from the URI's pin-source");
  init->add_option("--token", opts->uri, "pkcs11:token=LABEL?module-path=...&pin-source=file:USER-PIN")->required();
  init->add_option("--so-pin-source", opts->so_pin_source, "file:PATH holding the security officer PIN (or HWCA_SO_PIN)");
  init->callback([opts, &ctx] {
    ctx.action = [opts, &ctx] {
      ctx.check_key_uri(opts->uri, false, true);
      auto& backend = ctx.registry.backend_for(opts->uri);
      auto* initializer = dynamic_cast<tokens::TokenInitializer*>(&backend);
      if (!initializer) throw Error(ErrorKind::BadInput, "the " + backend.scheme() + ": backend has no tokens to initialise");
      std::string so_pin = read_so_pin(opts->so_pin_source);
      try {
        initializer->init_token(opts->uri, so_pin);
      } catch (...) {
        OPENSSL_cleanse(so_pin.data(), so_pin.size());
        throw;
      }
      OPENSSL_cleanse(so_pin.data(), so_pin.size());
      std::cout << "initialised token for " << opts->uri.substr(0, opts->uri.find('?')) << std::endl;
    };
  });
}

}  // namespace hwca::cli
