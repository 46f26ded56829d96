// hwca key generate | show | import
#include "cli/context.h"
#include "core/base/error.h"

#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

namespace hwca::cli {

namespace {

struct KeyOptions {
  std::string uri;
  std::string algo = "ecdsa-p256";
  std::string output = "text";
  std::string from;
};

void print_description(const tokens::KeyDescription& d, const std::string& output) {
  if (output == "json") {
    nlohmann::ordered_json j;
    j["uri"] = d.uri;
    j["backend"] = d.backend;
    j["hardware"] = d.hardware;
    j["algorithm"] = d.algorithm;
    nlohmann::ordered_json attrs = nlohmann::ordered_json::object();
    for (const auto& [k, v] : d.attributes) {
      if (v == "true" || v == "false") attrs[k] = (v == "true");
      else attrs[k] = v;
    }
    j["attributes"] = attrs;
    if (d.public_key) j["public_key"] = public_key_to_pem(d.public_key.get());
    std::cout << j.dump(2) << std::endl;
    return;
  }
  std::cout << "key:        " << d.uri << "\n"
            << "backend:    " << d.backend << (d.hardware ? " (hardware)" : " (software)") << "\n"
            << "algorithm:  " << d.algorithm << "\n";
  for (const auto& [k, v] : d.attributes) {
    std::string label = k + ":";
    if (label.size() < 20) label.resize(20, ' ');
    std::cout << "  " << label << v << "\n";
  }
  std::cout.flush();
}

}  // namespace

void add_key_commands(CLI::App& app, Context& ctx) {
  auto* key = app.add_subcommand("key", "generate, describe and import keys");
  key->require_subcommand(1);
  auto opts = std::make_shared<KeyOptions>();

  auto* gen = key->add_subcommand("generate", "generate a key inside the token or TPM the URI names");
  gen->add_option("--key", opts->uri, "key URI (pkcs11:token=...;object=...?module-path=...&pin-source=file:...)")->required();
  gen->add_option("--algo", opts->algo, "ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072, rsa-4096");
  gen->add_option("--output", opts->output, "text (default) or json")->check(CLI::IsMember({"text", "json"}));
  gen->callback([opts, &ctx] {
    ctx.action = [opts, &ctx] {
      ctx.check_key_uri(opts->uri, false, true);
      tokens::GenerateOptions g{KeySpec::parse(opts->algo)};
      auto& backend = ctx.registry.backend_for(opts->uri);
      backend.generate(opts->uri, g).reset();
      auto ledger = ctx.open_ledger();
      ledger->record_event("key-generate", opts->uri + " " + g.spec.name());
      print_description(backend.describe(opts->uri), opts->output);
    };
  });

  auto* show = key->add_subcommand("show", "describe a key: algorithm and the device's own attributes");
  show->add_option("--key", opts->uri, "key URI")->required();
  show->add_option("--output", opts->output, "text (default) or json")->check(CLI::IsMember({"text", "json"}));
  show->callback([opts, &ctx] {
    ctx.action = [opts, &ctx] {
      ctx.check_key_uri(opts->uri, false, true);
      print_description(ctx.registry.backend_for(opts->uri).describe(opts->uri), opts->output);
    };
  });

  auto* imp = key->add_subcommand("import", "move an existing software key (a cfssl ca-key.pem) into a token");
  imp->add_option("--from", opts->from, "PEM private key file")->required();
  imp->add_option("--key", opts->uri, "where the key goes (key URI)")->required();
  imp->add_option("--output", opts->output, "text (default) or json")->check(CLI::IsMember({"text", "json"}));
  imp->callback([opts, &ctx] {
    ctx.action = [opts, &ctx] {
      ctx.check_key_uri(opts->uri, false, true);
      EVP_PKEY_ptr soft = private_key_from_pem(read_file(opts->from), opts->from);
      auto& backend = ctx.registry.backend_for(opts->uri);
      auto* importer = dynamic_cast<tokens::KeyImporter*>(&backend);
      if (!importer) throw Error(ErrorKind::BadInput, "the " + backend.scheme() + ": backend cannot import keys");
      auto ledger = ctx.open_ledger();  // opened first: an import that cannot be recorded is not done
      importer->import_key(opts->uri, soft.get()).reset();
      ledger->record_event("key-import", opts->uri + " from " + opts->from + " (" + KeySpec::of(soft.get()).name() +
                                             ", public key sha256:" + sha256_hex(public_key_der(soft.get())) + ")");
      print_description(backend.describe(opts->uri), opts->output);
      warn("the key was imported: the token marks it sensitive, but it existed outside hardware before; "
           "destroy " + opts->from + " and every copy of it");
    };
  });
}

}  // namespace hwca::cli
