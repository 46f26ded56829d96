// hwca sign: issue a certificate for a CSR through the CA key.
//   hwca sign --ca ca.pem --ca-key URI --csr leaf.csr --profile server --bare leaf     (writes leaf.pem)
//   hwca sign -ca=ca.pem -ca-key=URI -config=ca-config.json -profile=kubernetes x.csr  (cfssl JSON on stdout)
#include "cli/issue.h"
#include "core/base/error.h"
#include "core/files.h"

#include <memory>

namespace hwca::cli {

namespace {

struct SignOptions {
  std::string ca, ca_key, csr, positional, config, profile, hostname, bare, out;
  bool hostname_given = false;
  bool strict_profile = false;
  bool allow_file_ca_key = false;
};

}  // namespace

void add_sign_command(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<SignOptions>();
  auto* sign = app.add_subcommand("sign", "sign a CSR (PEM or DER) with the CA key");
  sign->add_option("--ca", opts->ca, "CA certificate (PEM)");
  sign->add_option("--ca-key", opts->ca_key, "CA key URI");
  sign->add_option("--csr", opts->csr, "certificate request (PEM or DER; - for stdin)");
  sign->add_option("csr", opts->positional, "certificate request, as cfssl takes it");
  sign->add_option("--config", opts->config, "cfssl ca-config.json");
  sign->add_option("--profile", opts->profile, "profile: server, client, peer, or one from -config");
  auto* host = sign->add_option("--hostname", opts->hostname, "comma-separated hosts; replace the CSR's SANs");
  sign->add_option("--bare", opts->bare, "write NAME.pem instead of printing cfssl JSON");
  sign->add_option("--out", opts->out, "write the certificate PEM to this file");
  sign->add_flag("--strict-profile", opts->strict_profile, "a profile missing from -config is an error");
  sign->add_flag("--allow-file-ca-key", opts->allow_file_ca_key, "accept a file: CA key (not for production)");
  sign->callback([opts, &ctx, host] {
    opts->hostname_given = host->count() > 0 && !opts->hostname.empty();
    ctx.action = [opts, &ctx] {
      std::string csr_path = !opts->csr.empty() ? opts->csr : opts->positional;
      if (csr_path.empty()) throw Error(ErrorKind::Usage, "sign needs a CSR (--csr FILE, or a file argument; - for stdin)");
      if (!opts->csr.empty() && !opts->positional.empty())
        throw Error(ErrorKind::Usage, "give the CSR once (--csr or a file argument)");
      if (!opts->bare.empty() && !opts->out.empty()) throw Error(ErrorKind::Usage, "give --bare or --out, not both");
      if (!opts->bare.empty()) core::check_bare_output(opts->bare);
      if (!opts->out.empty()) core::check_output_path(opts->out);

      std::string profile_name = opts->profile;
      if (profile_name.empty() && opts->config.empty() && (!opts->bare.empty() || !opts->out.empty()))
        profile_name = "server";
      ProfileChoice choice = choose_profile(opts->config, profile_name, opts->strict_profile);
      choice.profile.check_expiry();
      choice.profile.resolve_usages();

      const std::string csr_input = read_input(csr_path);
      X509_REQ_ptr csr = csr_from_pem_or_der(csr_input, csr_path == "-" ? "the CSR on stdin" : csr_path);
      core::verify_csr_signature(csr.get());
      LoadedCa ca = load_ca(ctx, opts->ca, opts->ca_key, opts->allow_file_ca_key);
      auto ledger = ctx.open_ledger();

      core::IssueRequest req;
      const X509_NAME* name = X509_REQ_get_subject_name(csr.get());
      req.subject.reset(X509_NAME_dup(name));
      req.sans = opts->hostname_given ? core::SubjectAltNames::classify(split_hosts(opts->hostname))
                                      : core::SubjectAltNames::of_csr(csr.get());
      EVP_PKEY* pub = X509_REQ_get0_pubkey(csr.get());
      if (!pub) throw Error(ErrorKind::BadInput, csr_path + ": the CSR has no usable public key");
      req.public_key = pub;
      req.profile = &choice.profile;
      req.requester = requester("sign");
      req.requested_ca = core::csr_requests_ca(csr.get());
      core::Issuer issuer(ca.cert.get(), ca.key->pkey(), *ledger);
      X509_ptr cert = issuer.issue(req);
      warn_if_validity_capped(cert.get(), choice.profile);
      std::string pem = x509_to_pem(cert.get());
      deliver_or_orphan(*ledger, cert.get(), [&] {
        if (!opts->bare.empty()) core::write_bare(opts->bare, {pem, {}, {}});
        else if (!opts->out.empty()) core::write_file_atomic(opts->out, pem, 0644);
        // cfssl sign echoes the request back as "csr", verbatim when it was PEM.
        else print_cfssl_json(pem, csr_input.find("-----BEGIN") != std::string::npos ? csr_input : csr_to_pem(csr.get()), {});
      });
    };
  });
}

}  // namespace hwca::cli
