// hwca revoke | crl | audit verify | audit checkpoint
#include "cli/audit_key.h"
#include "cli/issue.h"
#include "core/base/error.h"
#include "core/crl.h"
#include "core/files.h"

#include <nlohmann/json.hpp>
#include <openssl/pem.h>

#include <iostream>
#include <memory>

namespace hwca::cli {

namespace {

struct RevokeOptions {
  std::string serial;
  std::string reason = "unspecified";
  std::string audit_key;
};

struct CrlOptions {
  std::string ca;
  std::string ca_key;
  std::string next_update = "168h";
  std::string out;
  bool der = false;
  bool allow_file_ca_key = false;
  std::string audit_key;
  bool no_checkpoint = false;
};

struct AuditOptions {
  std::string audit_pubkey;
  std::string audit_key;
  std::string output = "text";
};

// Signs a checkpoint when an audit key is at hand: the one named, else `<ca-object>-audit` when it exists.
void checkpoint_if_possible(Context& ctx, core::Ledger& ledger, const std::string& named, const std::string& ca_key_uri,
                            const EVP_PKEY* ca_public) {
  std::string uri = named;
  if (uri.empty()) {
    std::string scheme = ca_key_uri.empty() ? std::string() : tokens::Registry::scheme_of(ca_key_uri);
    if (scheme != "pkcs11" && (scheme != "tpm2" || ca_key_uri.rfind("tpm2:file=", 0) != 0)) return;
    uri = audit_key_uri_for(ca_key_uri);
    if (!ctx.registry.backend_for(uri).exists(uri)) return;
  }
  auto key = open_audit_key(ctx, uri, false, &ledger, ca_public);
  auto cp = sign_audit_checkpoint(ledger, *key);
  if (cp.entry_id > 0)
    std::cerr << "audit checkpoint #" << cp.id << " signed over entry " << cp.entry_id << std::endl;
}

EVP_PKEY_ptr read_public_key(const std::string& path) {
  std::string pem = read_file(path);
  BIO_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY_ptr key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    // A certificate works too.
    drain_openssl_errors();
    X509_ptr cert = x509_from_pem(pem, path);
    key = share(X509_get0_pubkey(cert.get()));
  }
  if (!key) throw Error(ErrorKind::BadInput, path + " holds no public key");
  return key;
}

}  // namespace

void add_revocation_commands(CLI::App& app, Context& ctx) {
  // hwca revoke
  auto ropts = std::make_shared<RevokeOptions>();
  auto* revoke = app.add_subcommand("revoke", "mark a certificate revoked in the ledger (the next CRL lists it)");
  revoke->add_option("--serial", ropts->serial, "the certificate's serial number (hex; 0x and colons allowed)")->required();
  std::string reasons;
  for (const auto& n : core::revocation_reason_names()) reasons += (reasons.empty() ? "" : ", ") + n;
  revoke->add_option("--reason", ropts->reason, "RFC 5280 reason: " + reasons + " (default unspecified)");
  revoke->add_option("--audit-key", ropts->audit_key, "audit key URI: sign a checkpoint after the revocation");
  revoke->callback([ropts, &ctx] {
    ctx.action = [ropts, &ctx] {
      std::string serial = core::normalize_serial(ropts->serial);
      int code = core::revocation_reason_code(ropts->reason);
      if (code == 8)
        throw Error(ErrorKind::Policy, "removeFromCRL is only meaningful in delta CRLs, which hwca does not issue");
      if (!ropts->audit_key.empty()) ctx.check_key_uri(ropts->audit_key, false, true);
      auto ledger = ctx.open_ledger();
      core::LedgerEntry e = ledger->revoke(serial, ropts->reason, core::now());
      if (!ropts->audit_key.empty()) checkpoint_if_possible(ctx, *ledger, ropts->audit_key, "", nullptr);
      std::cout << "revoked " << e.serial << " (" << e.subject << ", issued by " << e.issuer << "): " << e.revocation_reason
                << " at " << e.revoked_at << std::endl;
    };
  });

  // hwca crl
  auto copts = std::make_shared<CrlOptions>();
  auto* crl = app.add_subcommand("crl", "make a CRL v2 of the ledger's revoked certificates, signed through the token");
  crl->add_option("--ca", copts->ca, "the CA certificate (PEM)")->required();
  crl->add_option("--ca-key", copts->ca_key, "the CA key URI")->required();
  crl->add_option("--next-update", copts->next_update, "Go duration until nextUpdate (default 168h)");
  crl->add_option("--out", copts->out, "where the CRL goes (PEM unless --der)")->required();
  crl->add_flag("--der", copts->der, "write DER instead of PEM");
  crl->add_flag("--allow-file-ca-key", copts->allow_file_ca_key, "accept a file: key for the CA (not for production)");
  crl->add_option("--audit-key", copts->audit_key, "audit key URI (default: <ca-object>-audit on the CA's token, when present)");
  crl->add_flag("--no-checkpoint", copts->no_checkpoint, "do not sign an audit checkpoint afterwards");
  crl->callback([copts, &ctx] {
    ctx.action = [copts, &ctx] {
      core::check_output_path(copts->out);
      auto validity = core::parse_go_duration(copts->next_update);
      if (validity.count() <= 0) throw Error(ErrorKind::Usage, "--next-update must be a positive duration");
      if (!copts->audit_key.empty()) ctx.check_key_uri(copts->audit_key, false, true);
      LoadedCa ca = load_ca(ctx, copts->ca, copts->ca_key, copts->allow_file_ca_key);
      auto ledger = ctx.open_ledger();
      std::string issuer = core::name_to_string(X509_get_subject_name(ca.cert.get()));
      std::vector<core::RevokedCertificate> revoked;
      for (const auto& e : ledger->revoked_by(issuer)) {
        core::RevokedCertificate r;
        r.serial_hex = e.serial;
        r.revoked_at = core::parse_iso8601(e.revoked_at);
        r.reason = core::revocation_reason_code(e.revocation_reason);
        revoked.push_back(r);
      }
      core::CrlRequest req;
      req.issuer = ca.cert.get();
      req.issuer_key = ca.key->pkey();
      req.revoked = revoked;
      req.this_update = core::now();
      req.next_update = req.this_update + static_cast<std::time_t>(validity.count());
      req.number = ledger->next_crl_number(core::key_id(ca.key->public_key()), issuer);
      X509_CRL_ptr out = core::build_crl(req);
      std::string bytes = copts->der ? core::crl_to_der(out.get()) : core::crl_to_pem(out.get());
      core::write_file_atomic(copts->out, bytes, 0644);
      ledger->append_audit("crl-issued", nlohmann::json{{"issuer", issuer},
                                                         {"number", req.number},
                                                         {"revoked", revoked.size()},
                                                         {"this_update", core::iso8601(req.this_update)},
                                                         {"next_update", core::iso8601(req.next_update)},
                                                         {"sha256", sha256_hex(core::crl_to_der(out.get()))}}
                                             .dump());
      if (!copts->no_checkpoint)
        checkpoint_if_possible(ctx, *ledger, copts->audit_key, copts->ca_key, ca.key->public_key());
      std::cout << "CRL " << copts->out << ": number " << req.number << ", " << revoked.size() << " revoked, next update "
                << core::iso8601(req.next_update) << std::endl;
    };
  });

  // hwca audit verify | checkpoint
  auto aopts = std::make_shared<AuditOptions>();
  auto* audit = app.add_subcommand("audit", "the tamper-evident audit chain in the ledger");
  audit->require_subcommand(1);
  auto* verify = audit->add_subcommand("verify", "walk the audit chain and its signed checkpoints");
  verify->add_option("--audit-pubkey", aopts->audit_pubkey,
                     "the audit key's public key or a certificate for it (PEM): every checkpoint must be signed by it");
  verify->add_option("--output", aopts->output, "text (default) or json")->check(CLI::IsMember({"text", "json"}));
  verify->callback([aopts, &ctx] {
    ctx.action = [aopts, &ctx] {
      EVP_PKEY_ptr trusted;
      if (!aopts->audit_pubkey.empty()) trusted = read_public_key(aopts->audit_pubkey);
      auto ledger = ctx.open_ledger();
      core::AuditReport r = core::verify_audit_chain(ledger->audit_entries(), ledger->audit_checkpoints(), trusted.get());
      if (aopts->output == "json") {
        nlohmann::ordered_json j{{"intact", r.intact},
                                 {"entries", r.entries},
                                 {"checkpoints", r.checkpoints},
                                 {"first_bad_id", r.first_bad_id},
                                 {"problem", r.problem},
                                 {"last_signed_id", r.last_signed_id},
                                 {"unsigned_entries", r.unsigned_entries},
                                 {"audit_keys", r.audit_keys}};
        std::cout << j.dump(2) << std::endl;
        if (!r.intact) throw Error(ErrorKind::Policy, r.summary());
        return;
      }
      if (!r.intact) throw Error(ErrorKind::Policy, r.summary());
      std::cout << r.summary() << std::endl;
      for (const auto& k : r.audit_keys) std::cout << "audit key sha256:" << k << std::endl;
    };
  });
  auto* checkpoint = audit->add_subcommand("checkpoint", "sign the chain head with the audit key");
  checkpoint->add_option("--audit-key", aopts->audit_key, "the audit key URI")->required();
  checkpoint->callback([aopts, &ctx] {
    ctx.action = [aopts, &ctx] {
      auto ledger = ctx.open_ledger();
      auto key = open_audit_key(ctx, aopts->audit_key, false, ledger.get(), nullptr);
      auto cp = sign_audit_checkpoint(*ledger, *key);
      if (cp.entry_id == 0) {
        std::cout << "the audit chain is empty: nothing to sign" << std::endl;
        return;
      }
      std::cout << "audit checkpoint #" << cp.id << ": entry " << cp.entry_id << ", head " << cp.head_hash << std::endl;
    };
  });
}

}  // namespace hwca::cli
