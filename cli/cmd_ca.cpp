// hwca ca init: a self-signed root certificate for a key that already lives in a token.
#include "cli/issue.h"
#include "core/base/error.h"
#include "core/files.h"

#include <iostream>
#include <memory>

namespace hwca::cli {

namespace {

struct CaInitOptions {
  std::string key;
  std::string subject;
  std::string validity = "87600h";
  int pathlen = -1;
  std::string out;
  bool allow_file_ca_key = false;
};

}  // namespace

void add_ca_commands(CLI::App& app, Context& ctx) {
  auto* ca = app.add_subcommand("ca", "certificate authorities");
  ca->require_subcommand(1);
  auto opts = std::make_shared<CaInitOptions>();
  auto* init = ca->add_subcommand("init", "make a self-signed root certificate for a key in a token");
  init->add_option("--key", opts->key, "the root key's URI (generated with `hwca key generate`)")->required();
  init->add_option("--subject", opts->subject, "subject, e.g. '/CN=Example Root CA/O=Example'")->required();
  init->add_option("--validity", opts->validity, "Go duration (default 87600h = 10 years)");
  init->add_option("--pathlen", opts->pathlen, "basicConstraints pathLenConstraint (default: none)")
      ->check(CLI::Range(0, 16));
  init->add_option("--out", opts->out, "where the certificate goes (PEM)")->required();
  init->add_flag("--allow-file-ca-key", opts->allow_file_ca_key, "accept a file: key for the CA (not for production)");
  init->callback([opts, &ctx] {
    ctx.action = [opts, &ctx] {
      core::check_output_path(opts->out);
      core::Profile profile;
      profile.name = "root-ca";
      profile.usages = {"cert sign", "crl sign", "digital signature"};
      profile.expiry = core::parse_go_duration(opts->validity);
      profile.check_expiry();
      profile.ca_constraint = core::CaConstraint{true, 0, false};

      auto key = ctx.open_ca_key(opts->key, opts->allow_file_ca_key);
      auto ledger = ctx.open_ledger();
      core::IssueRequest req;
      req.subject = core::parse_subject(opts->subject);
      req.public_key = key->public_key();
      req.profile = &profile;
      req.requester = requester("ca init");
      if (opts->pathlen >= 0) req.path_len = opts->pathlen;
      req.authority_key_id_on_self_signed = true;
      core::Issuer issuer(nullptr, key->pkey(), *ledger);
      X509_ptr cert = issuer.issue(req);
      deliver_or_orphan(*ledger, cert.get(), [&] { core::write_file_atomic(opts->out, x509_to_pem(cert.get()), 0644); });
      std::cout << "root certificate " << opts->out << ": " << core::name_to_string(X509_get_subject_name(cert.get()))
                << ", serial " << serial_hex(X509_get0_serialNumber(cert.get())) << ", valid until "
                << core::iso8601(core::asn1_time_to_time_t(X509_get0_notAfter(cert.get()))) << std::endl;
    };
  });
}

}  // namespace hwca::cli
