// hwca ceremony run FILE | verify TRANSCRIPT
//
// A ceremony file (core/ceremony.h) is the only input: which token and key, what to generate or sign, where
// outputs go. Before touching the key hwca runs and prints pre-flight checks (token present and PIN accepted,
// key attributes sensitive / never-extractable / local, the issuer certificate matches the key, output folder
// empty), then does exactly what the file says, appends every step to the audit chain, signs a checkpoint
// with the audit key and writes transcript.json (signed by the audit key, which the ceremony's key endorses).
#include "cli/audit_key.h"
#include "cli/issue.h"
#include "core/base/error.h"
#include "core/ceremony.h"
#include "core/crl.h"
#include "core/files.h"
#include "core/shamir.h"
#include "tokens/pin.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <iostream>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

namespace hwca::cli {

namespace {

using Kind = core::CeremonySpec::Kind;

struct RunOptions {
  std::string file;
  bool check_only = false;
};

struct VerifyOptions {
  std::string transcript;
  std::string root;
  std::string cert;
  std::string files;
};

std::string strip_query(const std::string& uri) { return uri.substr(0, uri.find('?')); }

nlohmann::json readings_of(const tokens::KeyDescription& d) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : d.attributes) j[k] = v;
  j["backend"] = d.backend;
  j["algorithm"] = d.algorithm;
  j["hardware"] = d.hardware;
  return j;
}

class Ceremony {
 public:
  Ceremony(Context& ctx, core::CeremonySpec spec) : m_ctx(ctx), m_spec(std::move(spec)) {}

  void run(bool check_only) {
    m_started = core::iso8601(core::now());
    std::cout << "ceremony " << core::CeremonySpec::kind_name(m_spec.kind) << " from " << m_spec.file << " (sha256 "
              << m_spec.file_sha256 << ")" << std::endl;
    preflight();
    if (check_only) {
      std::cout << "pre-flight checks passed; nothing was done (--check)" << std::endl;
      return;
    }
    // mkdir -p
    for (size_t pos = 1; pos != std::string::npos;) {
      pos = m_spec.out_dir.find('/', pos + 1);
      std::string prefix = m_spec.out_dir.substr(0, pos);
      if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST)
        throw Error(ErrorKind::Io, "cannot create " + prefix + ": " + std::strerror(errno));
    }
    perform();
    finish();
  }

 private:
  // --- pre-flight --------------------------------------------------------------------------------
  void check(const std::string& what, const std::function<std::string()>& fn) {
    std::string detail;
    try {
      detail = fn();
    } catch (const Error& e) {
      std::cout << "pre-flight: " << what << ": FAILED" << std::endl;
      throw Error(ErrorKind::Policy, "pre-flight check failed: " + what + ": " + e.what());
    }
    std::cout << "pre-flight: " << what << ": ok" << (detail.empty() ? "" : " (" + detail + ")") << std::endl;
    m_preflight.push_back({{"check", what}, {"result", "ok"}, {"detail", detail}});
  }

  static std::string require_hardware_key(const tokens::KeyDescription& d) {
    if (!d.hardware) throw Error(ErrorKind::Policy, "the key is not in hardware (" + d.backend + ")");
    std::vector<std::pair<std::string, std::string>> wanted = {{"sensitive", "true"},         {"extractable", "false"},
                                                               {"never-extractable", "true"}, {"local", "true"},
                                                               {"key-value-readable", "false"}, {"fixedTPM", "true"},
                                                               {"fixedParent", "true"},       {"sensitiveDataOrigin", "true"}};
    std::string seen;
    int matched = 0;
    for (const auto& [name, value] : wanted) {
      auto got = d.attribute(name);
      if (!got) continue;
      if (*got != value) throw Error(ErrorKind::Policy, "the key's " + name + " is " + *got + ", expected " + value);
      seen += (seen.empty() ? "" : ", ") + name + "=" + value;
      ++matched;
    }
    if (matched < 2) throw Error(ErrorKind::Policy, "the token reports too few key attributes to check");
    return seen;
  }

  void preflight() {
    const bool generates = m_spec.generate.has_value();
    m_ctx.check_key_uri(m_spec.key_uri, true, false);
    if (m_spec.audit_key_uri) m_ctx.check_key_uri(*m_spec.audit_key_uri, false, false);
    m_audit_uri = m_spec.audit_key_uri ? *m_spec.audit_key_uri : audit_key_uri_for(m_spec.key_uri);
    if (!m_spec.pin_shares.empty()) {
      check("custodians' shares rebuild the PIN", [&] {
        core::SecretBytes pin = core::combine_share_files(m_spec.pin_shares);
        tokens::set_pin_override(pin.data(), pin.size());
        return std::to_string(m_spec.pin_shares.size()) + " share files";
      });
    }
    if (m_spec.kind == Kind::Intermediate || m_spec.kind == Kind::Crl) {
      check("issuer certificate " + m_spec.issuer_certificate + " is a CA certificate", [&] {
        m_issuer = x509_from_pem(read_file(m_spec.issuer_certificate), m_spec.issuer_certificate);
        if (X509_check_ca(m_issuer.get()) == 0) throw Error(ErrorKind::Policy, "not a CA certificate");
        return core::name_to_string(X509_get_subject_name(m_issuer.get()));
      });
    }
    auto& backend = m_ctx.registry.backend_for(m_spec.key_uri);
    check("token present and PIN accepted for " + strip_query(m_spec.key_uri), [&] {
      bool exists = backend.exists(m_spec.key_uri);
      if (generates && exists) throw Error(ErrorKind::Conflict, "the key already exists; this ceremony generates it");
      if (!generates && !exists) throw Error(ErrorKind::NotFound, "the key does not exist");
      return generates ? std::string("key absent, will be generated: ") + *m_spec.generate : std::string("key present");
    });
    if (generates) {
      check("algorithm " + *m_spec.generate, [&] { return KeySpec::parse(*m_spec.generate).name(); });
    } else {
      check("key attributes", [&] { return require_hardware_key(backend.describe(m_spec.key_uri)); });
    }
    check("audit key " + strip_query(m_audit_uri), [&] {
      auto& ab = m_ctx.registry.backend_for(m_audit_uri);
      m_audit_exists = ab.exists(m_audit_uri);
      if (m_audit_exists) return require_hardware_key(ab.describe(m_audit_uri)) + "; present";
      return std::string("absent, will be generated (ecdsa-p256)");
    });
    if (m_issuer) {
      check("the key matches the issuer certificate", [&] {
        m_key = backend.open(m_spec.key_uri);
        core::check_key_matches_cert(m_issuer.get(), m_key->public_key());
        return "sha256:" + sha256_hex(public_key_der(m_key->public_key()));
      });
    }
    if (m_spec.kind == Kind::Intermediate) {
      check("CSR " + m_spec.csr + " is signed by its key", [&] {
        m_csr_bytes = read_file(m_spec.csr);
        m_csr = csr_from_pem_or_der(m_csr_bytes, m_spec.csr);
        core::verify_csr_signature(m_csr.get());
        return core::name_to_string(X509_REQ_get_subject_name(m_csr.get()));
      });
    }
    if (m_spec.kind == Kind::Root || m_spec.kind == Kind::Intermediate) {
      check("validity " + m_spec.validity, [&] {
        auto d = core::parse_go_duration(m_spec.validity);
        if (d.count() <= 0) throw Error(ErrorKind::BadInput, "must be positive");
        return std::to_string(d.count() / 86400) + " days";
      });
    }
    if (m_spec.kind == Kind::Root) check("subject", [&] { return core::name_to_string(core::parse_subject(m_spec.subject).get()); });
    if (m_spec.kind == Kind::Crl) {
      check("next update " + m_spec.next_update, [&] {
        if (core::parse_go_duration(m_spec.next_update).count() <= 0) throw Error(ErrorKind::BadInput, "must be positive");
        return std::string();
      });
    }
    check("output folder " + m_spec.out_dir + " is empty", [&] {
      struct stat st {};
      if (::stat(m_spec.out_dir.c_str(), &st) != 0) {
        if (errno != ENOENT) throw Error(ErrorKind::Io, std::strerror(errno));
        return std::string("will be created");
      }
      if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::BadInput, "not a folder");
      DIR* d = ::opendir(m_spec.out_dir.c_str());
      if (!d) throw Error(ErrorKind::Io, std::strerror(errno));
      bool empty = true;
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) empty = false;
      ::closedir(d);
      if (!empty) throw Error(ErrorKind::Conflict, "not empty");
      return std::string();
    });
    check("ledger", [&] {
      m_ledger = m_spec.ledger.empty() ? m_ctx.open_ledger() : core::Ledger::open(m_spec.ledger);
      return m_ledger->path();
    });
  }

  // --- steps -------------------------------------------------------------------------------------
  struct Io {
    std::string name;
    std::string sha256;
  };

  void step(const std::string& action, const std::string& detail, const std::vector<Io>& inputs,
            const std::vector<Io>& outputs, const nlohmann::json& readings) {
    nlohmann::json s{{"n", m_steps.size() + 1}, {"at", core::iso8601(core::now())}, {"action", action}, {"detail", detail}};
    s["inputs"] = nlohmann::json::array();
    for (const auto& i : inputs) s["inputs"].push_back({{"name", i.name}, {"sha256", i.sha256}});
    s["outputs"] = nlohmann::json::array();
    for (const auto& o : outputs) s["outputs"].push_back({{"name", o.name}, {"sha256", o.sha256}});
    s["token"] = readings.is_null() ? nlohmann::json::object() : readings;
    m_ledger->append_audit("ceremony-step", nlohmann::json{{"ceremony", core::CeremonySpec::kind_name(m_spec.kind)},
                                                           {"file_sha256", m_spec.file_sha256},
                                                           {"step", s}}
                                                .dump());
    std::cout << "step " << m_steps.size() + 1 << ": " << action << (detail.empty() ? "" : ": " + detail) << std::endl;
    m_steps.push_back(std::move(s));
  }

  Io write_output(const std::string& name, const std::string& data, mode_t mode) {
    core::write_file_atomic(m_spec.out_dir + "/" + name, data, mode);
    return {name, sha256_hex(data)};
  }

  void perform() {
    auto& backend = m_ctx.registry.backend_for(m_spec.key_uri);
    Io ceremony_file{m_spec.file, m_spec.file_sha256};
    if (m_spec.generate) {
      KeySpec ks = KeySpec::parse(*m_spec.generate);
      m_key = backend.generate(m_spec.key_uri, tokens::GenerateOptions{ks});
      m_ledger->record_event("key-generate", m_spec.key_uri + " " + ks.name() + " (ceremony, public key sha256:" +
                                                 sha256_hex(public_key_der(m_key->public_key())) + ")");
      auto d = backend.describe(m_spec.key_uri);
      require_hardware_key(d);  // the token honoured the template
      step("generate-key", strip_query(m_spec.key_uri) + " " + ks.name(), {ceremony_file}, {}, readings_of(d));
    } else {
      if (!m_key) m_key = backend.open(m_spec.key_uri);
      step("open-key", strip_query(m_spec.key_uri), {ceremony_file}, {}, readings_of(backend.describe(m_spec.key_uri)));
    }
    m_audit = open_audit_key(m_ctx, m_audit_uri, true, m_ledger.get(), m_key->public_key());
    step(m_audit_exists ? "open-audit-key" : "generate-audit-key", strip_query(m_audit_uri), {}, {},
         readings_of(m_ctx.registry.backend_for(m_audit_uri).describe(m_audit_uri)));
    std::string message = core::audit_endorsement_message(m_audit->public_key());
    std::string endorsement = core::sign_bytes(m_key->pkey(), message);
    if (!core::verify_bytes(m_key->public_key(), message, endorsement))
      throw Error(ErrorKind::Token, "the key's endorsement of the audit key does not verify");
    m_endorsement = to_hex(endorsement);
    step("endorse-audit-key", "the ceremony's key signs the audit key's public key sha256:" +
                                  sha256_hex(public_key_der(m_audit->public_key())), {}, {}, nullptr);

    switch (m_spec.kind) {
      case Kind::Root: issue_root(); break;
      case Kind::Intermediate: issue_intermediate(); break;
      case Kind::Crl: make_crl(); break;
      case Kind::Key: key_outputs(); break;
    }
  }

  void issue_root() {
    core::Profile profile;
    profile.name = "root-ca";
    profile.usages = {"cert sign", "crl sign", "digital signature"};
    profile.expiry = core::parse_go_duration(m_spec.validity);
    profile.ca_constraint = core::CaConstraint{true, 0, false};
    core::IssueRequest req;
    req.subject = core::parse_subject(m_spec.subject);
    req.public_key = m_key->public_key();
    req.profile = &profile;
    req.requester = requester("ceremony root");
    if (m_spec.pathlen) req.path_len = *m_spec.pathlen;
    core::Issuer issuer(nullptr, m_key->pkey(), *m_ledger);
    X509_ptr cert = issuer.issue(req);
    Io out = write_output(m_spec.out_certificate, x509_to_pem(cert.get()), 0644);
    step("issue-root-certificate",
         core::name_to_string(X509_get_subject_name(cert.get())) + ", serial " + serial_hex(X509_get0_serialNumber(cert.get())) +
             ", until " + core::iso8601(core::asn1_time_to_time_t(X509_get0_notAfter(cert.get()))),
         {}, {out}, nullptr);
  }

  void issue_intermediate() {
    core::Profile profile;
    profile.name = "intermediate-ca";
    profile.usages = {"cert sign", "crl sign", "digital signature"};
    profile.expiry = core::parse_go_duration(m_spec.validity);
    int pathlen = m_spec.pathlen.value_or(0);
    profile.ca_constraint = core::CaConstraint{true, pathlen, pathlen == 0};
    core::IssueRequest req;
    req.subject = m_spec.subject.empty() ? X509_NAME_ptr(X509_NAME_dup(X509_REQ_get_subject_name(m_csr.get())))
                                         : core::parse_subject(m_spec.subject);
    req.public_key = X509_REQ_get0_pubkey(m_csr.get());
    req.profile = &profile;
    req.requester = requester("ceremony intermediate");
    req.requested_ca = true;
    core::Issuer issuer(m_issuer.get(), m_key->pkey(), *m_ledger);
    X509_ptr cert = issuer.issue(req);
    std::string why = core::verify_chain(cert.get(), {m_issuer.get()});
    if (!why.empty()) throw Error(ErrorKind::Internal, "the new intermediate does not verify against the issuer: " + why);
    Io out = write_output(m_spec.out_certificate, x509_to_pem(cert.get()), 0644);
    step("issue-intermediate-certificate",
         core::name_to_string(X509_get_subject_name(cert.get())) + ", serial " + serial_hex(X509_get0_serialNumber(cert.get())) +
             ", pathlen " + std::to_string(pathlen) + ", until " +
             core::iso8601(core::asn1_time_to_time_t(X509_get0_notAfter(cert.get()))),
         {{m_spec.csr, sha256_hex(m_csr_bytes)}, {m_spec.issuer_certificate, sha256_hex(x509_to_pem(m_issuer.get()))}},
         {out}, nullptr);
  }

  void make_crl() {
    std::string issuer = core::name_to_string(X509_get_subject_name(m_issuer.get()));
    core::CrlRequest req;
    req.issuer = m_issuer.get();
    req.issuer_key = m_key->pkey();
    for (const auto& e : m_ledger->revoked_by(issuer))
      req.revoked.push_back({e.serial, core::parse_iso8601(e.revoked_at), core::revocation_reason_code(e.revocation_reason)});
    req.this_update = core::now();
    req.next_update = req.this_update + static_cast<std::time_t>(core::parse_go_duration(m_spec.next_update).count());
    req.number = m_ledger->next_crl_number(core::key_id(m_key->public_key()), issuer);
    X509_CRL_ptr crl = core::build_crl(req);
    std::string bytes = m_spec.der ? core::crl_to_der(crl.get()) : core::crl_to_pem(crl.get());
    Io out = write_output(m_spec.out_crl, bytes, 0644);
    step("issue-crl",
         "number " + std::to_string(req.number) + ", " + std::to_string(req.revoked.size()) + " revoked, next update " +
             core::iso8601(req.next_update),
         {{m_spec.issuer_certificate, sha256_hex(x509_to_pem(m_issuer.get()))}}, {out}, nullptr);
  }

  void key_outputs() {
    Io pub = write_output(m_spec.out_public_key, public_key_to_pem(m_key->public_key()), 0644);
    step("export-public-key", "sha256:" + sha256_hex(public_key_der(m_key->public_key())), {}, {pub}, nullptr);
    if (!m_spec.csr_subject.empty()) {
      X509_NAME_ptr subject = core::parse_subject(m_spec.csr_subject);
      X509_REQ_ptr csr = core::make_csr(subject.get(), {}, m_key->pkey(), true);
      Io out = write_output(m_spec.out_csr, csr_to_pem(csr.get()), 0644);
      step("make-csr", core::name_to_string(subject.get()) + " (asks for CA:TRUE)", {}, {out}, nullptr);
    }
  }

  void finish() {
    m_ledger->append_audit("ceremony-end", nlohmann::json{{"ceremony", core::CeremonySpec::kind_name(m_spec.kind)},
                                                          {"file_sha256", m_spec.file_sha256},
                                                          {"steps", m_steps.size()}}
                                               .dump());
    core::AuditCheckpoint cp = sign_audit_checkpoint(*m_ledger, *m_audit);
    std::cout << "audit checkpoint #" << cp.id << " over entry " << cp.entry_id << std::endl;

    nlohmann::json t;
    t["format"] = "hwca-ceremony-transcript-v1";
    t["ceremony"] = core::CeremonySpec::kind_name(m_spec.kind);
    t["ceremony_file"] = {{"name", m_spec.file}, {"sha256", m_spec.file_sha256}};
    t["hwca_version"] = "0.1.0";
    t["started_at"] = m_started;
    t["finished_at"] = core::iso8601(core::now());
    t["operator"] = requester("ceremony");
    t["preflight"] = m_preflight;
    t["steps"] = m_steps;
    t["key"] = {{"uri", strip_query(m_spec.key_uri)},
                {"public_key", public_key_to_pem(m_key->public_key())},
                {"public_key_sha256", sha256_hex(public_key_der(m_key->public_key()))}};
    t["audit"] = {{"key_uri", strip_query(m_audit_uri)},
                  {"public_key", public_key_to_pem(m_audit->public_key())},
                  {"public_key_sha256", sha256_hex(public_key_der(m_audit->public_key()))},
                  {"endorsement", m_endorsement},
                  {"ledger", m_ledger->path()},
                  {"checkpoint", {{"id", cp.id}, {"entry_id", cp.entry_id}, {"head_hash", cp.head_hash}}}};
    std::string signature = core::sign_bytes(m_audit->pkey(), core::transcript_signing_bytes(t));
    std::string path = m_spec.out_dir + "/transcript.json";
    core::write_file_atomic(path, core::transcript_file(t, to_hex(signature), m_audit->public_key()), 0644);
    // Read back and verify, as `ceremony verify` will.
    core::verify_transcript(path, nullptr, nullptr, "");
    std::cout << "transcript " << path << " signed by audit key sha256:" << sha256_hex(public_key_der(m_audit->public_key()))
              << std::endl;
  }

  Context& m_ctx;
  core::CeremonySpec m_spec;
  std::string m_started;
  std::string m_audit_uri;
  bool m_audit_exists = false;
  X509_ptr m_issuer;
  X509_REQ_ptr m_csr;
  std::string m_csr_bytes;
  std::unique_ptr<core::Ledger> m_ledger;
  std::unique_ptr<tokens::Signer> m_key;
  std::unique_ptr<tokens::Signer> m_audit;
  std::string m_endorsement;
  nlohmann::json m_preflight = nlohmann::json::array();
  nlohmann::json m_steps = nlohmann::json::array();
};

}  // namespace

void add_ceremony_commands(CLI::App& app, Context& ctx) {
  auto* ceremony = app.add_subcommand("ceremony", "key ceremonies: one reviewed YAML file in, a signed transcript out");
  ceremony->require_subcommand(1);

  auto r = std::make_shared<RunOptions>();
  auto* run = ceremony->add_subcommand("run", "run a ceremony file (root, intermediate, crl, key)");
  run->add_option("file", r->file, "the ceremony file (YAML)")->required();
  run->add_flag("--check", r->check_only, "run the pre-flight checks only");
  run->callback([r, &ctx] {
    ctx.action = [r, &ctx] {
      core::CeremonySpec spec = core::parse_ceremony(read_config_file(r->file), r->file);
      Ceremony c(ctx, std::move(spec));
      c.run(r->check_only);
      tokens::clear_pin_override();
    };
  });

  auto v = std::make_shared<VerifyOptions>();
  auto* verify = ceremony->add_subcommand("verify", "verify a ceremony transcript offline");
  verify->add_option("transcript", v->transcript, "transcript.json")->required();
  verify->add_option("--root", v->root, "the root certificate (PEM)");
  verify->add_option("--cert", v->cert, "key ceremonies: the certificate later issued for the ceremony's key");
  verify->add_option("--files", v->files, "folder holding the output files (default: the transcript's folder)");
  verify->callback([v, &ctx] {
    ctx.action = [v] {
      X509_ptr root, cert;
      if (!v->root.empty()) root = x509_from_pem(read_file(v->root), v->root);
      if (!v->cert.empty()) cert = x509_from_pem(read_file(v->cert), v->cert);
      core::TranscriptCheck c = core::verify_transcript(v->transcript, root.get(), cert.get(), v->files);
      std::cout << "transcript " << v->transcript << " (" << c.ceremony << " ceremony)" << std::endl;
      for (const auto& line : c.lines) std::cout << "  " << line << std::endl;
      std::cout << "transcript verified" << std::endl;
    };
  });
}

}  // namespace hwca::cli
