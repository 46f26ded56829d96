#include "core/engine.h"

#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "core/base/signing_run.h"

#include <openssl/err.h>

#include <optional>
#include <regex>
#include <string>

namespace hwca::core {

namespace {

// A profile's name_whitelist, compiled once per thread and pattern: building a std::regex costs more
// than the rest of plan() together, and a server or a batch issues many certificates with one profile.
const std::regex& name_whitelist_regex(const std::string& pattern) {
  thread_local std::string cached_pattern;
  thread_local std::optional<std::regex> cached;
  if (!cached || cached_pattern != pattern) {
    std::regex compiled = compile_name_whitelist(pattern);
    cached = std::move(compiled);
    cached_pattern = pattern;
  }
  return *cached;
}

}  // namespace

Issuer::Issuer(const X509* ca_cert, EVP_PKEY* ca_key, Ledger& ledger) : m_ca_cert(ca_cert), m_ca_key(ca_key), m_ledger(ledger) {
  if (!m_ca_key) throw Error(ErrorKind::Internal, "Issuer: no CA key");
}

CertTemplate Issuer::plan(const IssueRequest& request) const {
  if (!request.profile) throw Error(ErrorKind::Internal, "IssueRequest without a profile");
  if (!request.public_key) throw Error(ErrorKind::Internal, "IssueRequest without a public key");
  const Profile& profile = *request.profile;

  CertTemplate t;
  t.subject.reset(request.subject ? X509_NAME_dup(request.subject.get()) : X509_NAME_new());
  if (!t.subject) throw_openssl(ErrorKind::Internal, "copying the subject");
  t.sans = request.sans;

  // Usages.
  Usages usages = profile.resolve_usages();
  if (profile.key_encipherment_only_for_rsa && !EVP_PKEY_is_a(request.public_key, "RSA"))
    usages.key_usage &= ~static_cast<unsigned>(X509v3_KU_KEY_ENCIPHERMENT);
  t.key_usage = usages.key_usage;
  t.key_usage_critical = true;
  t.ext_key_usage = usages.ext_key_usage;

  // Validity.
  std::time_t not_before = now_rounded_to_minute() - static_cast<std::time_t>(profile.backdate.value_or(std::chrono::minutes(5)).count());
  std::time_t not_after = 0;
  if (profile.not_before) not_before = *profile.not_before;
  if (profile.not_after) {
    not_after = *profile.not_after;
  } else {
    profile.check_expiry();
    not_after = not_before + static_cast<std::time_t>(profile.expiry.count());
  }
  if (m_ca_cert) {
    std::time_t ca_not_after = asn1_time_to_time_t(X509_get0_notAfter(m_ca_cert));
    if (ca_not_after <= now())
      throw Error(ErrorKind::Policy, "the CA certificate expired at " + iso8601(ca_not_after));
    if (not_after > ca_not_after) not_after = ca_not_after;
  }
  if (not_after <= not_before)
    throw Error(ErrorKind::Policy, "profile '" + profile.name + "': the certificate would end (" + iso8601(not_after) +
                                       ") before it begins (" + iso8601(not_before) + ")");
  t.not_before = not_before;
  t.not_after = not_after;

  // Names allowed by the profile (Go's Regexp.MatchString: a match anywhere unless anchored).
  if (profile.name_whitelist) {
    const std::regex& re = name_whitelist_regex(*profile.name_whitelist);
    auto check = [&](const std::string& n) {
      if (!std::regex_search(n, re))
        throw Error(ErrorKind::Policy, "profile '" + profile.name + "': name '" + n + "' is not allowed by name_whitelist");
    };
    check(common_name(t.subject.get()));
    for (const auto& dns : t.sans.dns) check(dns);
  }

  // CA constraint: only a profile's ca_constraint makes a CA (a CSR asking for CA:TRUE is not enough).
  t.basic_constraints = true;
  if (profile.ca_constraint && profile.ca_constraint->is_ca) {
    t.is_ca = true;
    const CaConstraint& cc = *profile.ca_constraint;
    t.path_len = cc.max_path_len_zero ? 0 : (cc.max_path_len > 0 ? cc.max_path_len : -1);
    if (!m_ca_cert && request.path_len) t.path_len = *request.path_len < 0 ? -1 : *request.path_len;
  } else {
    t.is_ca = false;
    t.path_len = -1;
  }

  t.subject_key_id = true;
  t.authority_key_id = m_ca_cert ? true : request.authority_key_id_on_self_signed;
  return t;
}

void Issuer::check_issuer() const {
  if (m_ca_cert && X509_check_ca(const_cast<X509*>(m_ca_cert)) == 0) {
    ERR_clear_error();
    throw Error(ErrorKind::Policy, "the issuer certificate is not a CA certificate (no basicConstraints CA:TRUE)");
  }
}

// Serial numbers: 160 random bits, so a collision is not expected; the ledger's UNIQUE constraint is
// what guarantees it (across processes too). On a Conflict the certificate is built again under a
// fresh serial: the same serial is never issued twice.
X509_ptr Issuer::issue(const IssueRequest& request) {
  CertTemplate t = plan(request);
  check_issuer();
  for (int attempt = 0;; ++attempt) {
    ASN1_INTEGER_ptr serial = random_serial();
    X509_ptr cert = build_certificate(t, serial.get(), request.public_key, m_ca_cert, m_ca_key);
    try {
      m_ledger.record(cert.get(), request.profile->name, request.requester, request.request_id);
      return cert;
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::Conflict || attempt >= 3) throw;
      // A request already answered is not a serial collision: drawing again would not help.
      if (!request.request_id.empty() && m_ledger.find_by_request_id(request.request_id)) throw;
    }
  }
}

std::vector<X509_ptr> Issuer::issue_batch(const std::vector<const IssueRequest*>& requests,
                                          std::vector<std::string>* pems) {
  std::vector<CertTemplate> plans;
  plans.reserve(requests.size());
  for (const IssueRequest* r : requests) plans.push_back(plan(*r));
  check_issuer();
  for (int attempt = 0;; ++attempt) {
    std::vector<X509_ptr> certs;
    std::vector<Ledger::BatchItem> items;
    certs.reserve(requests.size());
    items.reserve(requests.size());
    // In three passes: the certificates, then their signatures back to back, then the checks. A device
    // that signs one request at a time (a TPM, behind its connection's lock) stays with this thread for
    // the signatures (SigningRun) and goes from one to the next while other threads do their CPU work,
    // instead of passing its lock to and fro.
    for (size_t i = 0; i < requests.size(); ++i) {
      ASN1_INTEGER_ptr serial = random_serial();
      certs.push_back(unsigned_certificate(plans[i], serial.get(), requests[i]->public_key, m_ca_cert));
    }
    {
      SigningRun run;
      for (auto& cert : certs) sign_certificate(cert.get(), m_ca_key);
    }
    if (pems) pems->assign(requests.size(), std::string());
    for (size_t i = 0; i < requests.size(); ++i) {
      check_certificate_signature(certs[i].get(), m_ca_cert, requests[i]->public_key);
      items.push_back({certs[i].get(), requests[i]->profile->name, requests[i]->requester, requests[i]->request_id,
                       pems ? &(*pems)[i] : nullptr});
    }
    try {
      m_ledger.record_batch(items);
      return certs;
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::Conflict || attempt >= 3) throw;
    }
  }
}

void check_key_matches_cert(const X509* ca_cert, EVP_PKEY* ca_key) {
  EVP_PKEY* cert_key = X509_get0_pubkey(ca_cert);
  if (!cert_key || !ca_key) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, "the CA key does not match the CA certificate's public key");
  }
  bool same = false;
  try {
    same = same_public_key(cert_key, ca_key);
  } catch (const Error&) {
    same = false;
  }
  if (!same) {
    // A key with a legacy method (libp11) may not export its public half as DER the same way; compare
    // with OpenSSL's own comparison as a second opinion.
    same = EVP_PKEY_eq(cert_key, ca_key) == 1;
    drain_openssl_errors();
  }
  if (!same) throw Error(ErrorKind::BadInput, "the CA key does not match the CA certificate's public key");
}

}  // namespace hwca::core
