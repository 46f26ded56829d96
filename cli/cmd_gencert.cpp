// hwca gencert: cfssl's gencert with the CA key in a token.
//   hwca gencert -initca -ca-key=URI ca-csr.json | cfssljson -bare ca      (root key generated in the token)
//   hwca gencert -ca=ca.pem -ca-key=URI -config=ca-config.json -profile=kubernetes csr.json | cfssljson -bare x
//   hwca gencert ... --bare NAME                                          (writes NAME.pem, NAME-key.pem, NAME.csr)
#include "cli/issue.h"
#include "core/base/error.h"
#include "core/files.h"

#include <memory>

namespace hwca::cli {

namespace {

struct GencertOptions {
  std::string csr_json, ca, ca_key, config, profile, hostname, bare;
  bool hostname_given = false;
  bool initca = false;
  bool strict_profile = false;
  bool allow_file_ca_key = false;
};

// The CA key for -initca: opened when it exists in the device, generated there from the CSR JSON's
// key spec when it does not.
std::unique_ptr<tokens::Signer> initca_key(const Context& ctx, const GencertOptions& opts, const KeySpec& spec,
                                           const std::string& what) {
  if (opts.ca_key.empty())
    throw Error(ErrorKind::Usage, "-initca needs -ca-key=<key URI>: hwca generates the CA key inside a token or TPM");
  ctx.check_key_uri(opts.ca_key, true, opts.allow_file_ca_key);
  auto& backend = ctx.registry.backend_for(opts.ca_key);
  if (!backend.exists(opts.ca_key)) return backend.generate(opts.ca_key, tokens::GenerateOptions{spec});
  auto key = backend.open(opts.ca_key);
  KeySpec have = KeySpec::of(key->public_key());
  if (!(have == spec))
    throw Error(ErrorKind::BadInput, "the existing key " + opts.ca_key.substr(0, opts.ca_key.find('?')) + " is " +
                                         have.name() + " but " + what + " asks for " + spec.name());
  return key;
}

void run_gencert(const Context& ctx, const GencertOptions& opts) {
  if (opts.csr_json.empty()) throw Error(ErrorKind::Usage, "gencert needs a CSR JSON file (or - for stdin)");
  if (!opts.bare.empty()) core::check_bare_output(opts.bare);
  const std::string what = opts.csr_json == "-" ? "the CSR JSON on stdin" : opts.csr_json;
  core::CfsslCsr req_json = core::CfsslCsr::parse(read_input(opts.csr_json), what);
  if (req_json.ca && !opts.initca) throw Error(ErrorKind::BadInput, what + ": ca section only permitted in initca");

  core::IssueRequest req;
  req.subject = req_json.subject();
  req.sans = core::SubjectAltNames::classify(opts.hostname_given ? split_hosts(opts.hostname) : req_json.hosts);

  if (opts.initca) {
    if (!opts.ca.empty()) throw Error(ErrorKind::Usage, "-initca makes a new root: do not pass -ca");
    core::Profile profile = core::initca_profile();
    if (!opts.config.empty() || !opts.profile.empty())
      warn("-initca uses cfssl's CA policy; -config and -profile are ignored");
    if (req_json.ca && !req_json.ca->expiry.empty()) profile.expiry = core::parse_go_duration(req_json.ca->expiry);
    profile.check_expiry();
    if (req_json.ca && (req_json.ca->pathlen > 0 || req_json.ca->pathlenzero))
      req.path_len = req_json.ca->pathlenzero ? 0 : req_json.ca->pathlen;
    auto key = initca_key(ctx, opts, req_json.key, what);
    auto ledger = ctx.open_ledger();
    X509_REQ_ptr csr = core::make_csr(req.subject.get(), req.sans, key->pkey());
    req.public_key = key->public_key();
    req.profile = &profile;
    req.requester = requester("gencert -initca");
    req.authority_key_id_on_self_signed = false;  // as cfssl's -initca
    core::Issuer issuer(nullptr, key->pkey(), *ledger);
    X509_ptr cert = issuer.issue(req);
    std::string cert_pem = x509_to_pem(cert.get());
    std::string csr_pem = csr_to_pem(csr.get());
    deliver_or_orphan(*ledger, cert.get(), [&] {
      if (!opts.bare.empty()) core::write_bare(opts.bare, {cert_pem, {}, csr_pem});
      else print_cfssl_json(cert_pem, csr_pem, {});
    });
    return;
  }

  ProfileChoice choice = choose_profile(opts.config, opts.profile, opts.strict_profile);
  choice.profile.check_expiry();
  choice.profile.resolve_usages();
  LoadedCa ca = load_ca(ctx, opts.ca, opts.ca_key, opts.allow_file_ca_key);
  auto ledger = ctx.open_ledger();
  EVP_PKEY_ptr leaf_key = generate_software_key(req_json.key);
  X509_REQ_ptr csr = core::make_csr(req.subject.get(), req.sans, leaf_key.get());
  req.public_key = leaf_key.get();
  req.profile = &choice.profile;
  req.requester = requester("gencert");
  core::Issuer issuer(ca.cert.get(), ca.key->pkey(), *ledger);
  X509_ptr cert = issuer.issue(req);
  warn_if_validity_capped(cert.get(), choice.profile);
  std::string cert_pem = x509_to_pem(cert.get());
  std::string csr_pem = csr_to_pem(csr.get());
  std::string key_pem = private_key_to_traditional_pem(leaf_key.get());
  deliver_or_orphan(*ledger, cert.get(), [&] {
    if (!opts.bare.empty()) core::write_bare(opts.bare, {cert_pem, key_pem, csr_pem});
    else print_cfssl_json(cert_pem, csr_pem, key_pem);
  });
}

}  // namespace

void add_gencert_command(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<GencertOptions>();
  auto* cmd = app.add_subcommand("gencert", "generate a key and certificate from a cfssl CSR JSON (cfssl gencert)");
  cmd->add_option("csrjson", opts->csr_json, "CSR JSON file, or - for stdin");
  cmd->add_flag("--initca", opts->initca, "make a self-signed root; its key is generated in the token -ca-key names");
  cmd->add_option("--ca", opts->ca, "CA certificate (PEM)");
  cmd->add_option("--ca-key", opts->ca_key, "CA key URI (pkcs11:..., tpm2:...)");
  cmd->add_option("--config", opts->config, "cfssl ca-config.json");
  cmd->add_option("--profile", opts->profile, "profile in -config (falls back to default, as cfssl)");
  auto* host = cmd->add_option("--hostname", opts->hostname, "comma-separated hosts; replace the CSR JSON's hosts");
  cmd->add_option("--bare", opts->bare, "write NAME.pem, NAME-key.pem, NAME.csr instead of printing JSON");
  cmd->add_flag("--strict-profile", opts->strict_profile, "a profile missing from -config is an error");
  cmd->add_flag("--allow-file-ca-key", opts->allow_file_ca_key, "accept a file: CA key (not for production)");
  cmd->callback([opts, &ctx, host] {
    opts->hostname_given = host->count() > 0 && !opts->hostname.empty();
    ctx.action = [opts, &ctx] { run_gencert(ctx, *opts); };
  });
}

}  // namespace hwca::cli
