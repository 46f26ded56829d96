// The issuance engine: the one path every certificate takes.
//   request -> serial (random, unique in the ledger) -> X.509 template -> issuer's signature
//   -> ledger record (one transaction) -> certificate handed back.
// The engine is handed the issuer's EVP_PKEY; it never learns where the key lives.
#pragma once

#include "core/base/ossl.h"
#include "core/ledger.h"
#include "core/profile.h"
#include "core/x509.h"

#include <optional>
#include <string>
#include <vector>

namespace hwca::core {

struct IssueRequest {
  X509_NAME_ptr subject;
  SubjectAltNames sans;
  EVP_PKEY* public_key = nullptr;  // the subject's public key (not owned)
  const Profile* profile = nullptr;
  std::string requester;           // who asked: "cli:gencert", "serve:127.0.0.1", ...
  std::string request_id;          // optional, unique in the ledger (Ledger::record): "k8s-csr:<uid>"
  // Self-signed roots only: the CSR JSON's ca.pathlen / pathlenzero.
  std::optional<int> path_len;
  bool authority_key_id_on_self_signed = true;  // cfssl's -initca omits it
  bool requested_ca = false;  // the CSR asked for CA:TRUE; honoured only with a ca_constraint
};

class Issuer {
 public:
  // `ca_cert` null: the issuer is the request itself (self-signed root with `ca_key`).
  Issuer(const X509* ca_cert, EVP_PKEY* ca_key, Ledger& ledger);

  // Applies the profile (usages, validity from now rounded to the minute minus backdate, capped at the
  // CA's notAfter, name_whitelist, CA constraint), builds and signs the certificate, records it in the
  // ledger and returns it. Nothing is returned unless it was recorded.
  X509_ptr issue(const IssueRequest& request);

  // Several certificates signed one after another and recorded in ONE ledger transaction (one fsync),
  // all or nothing: none is returned unless all were recorded. For bulk work (a whole cluster). When
  // `pems` is given, it receives each certificate's PEM as the ledger recorded it (no second encoding).
  std::vector<X509_ptr> issue_batch(const std::vector<const IssueRequest*>& requests,
                                    std::vector<std::string>* pems = nullptr);

  // The template issue() would build (for tests and dry runs).
  CertTemplate plan(const IssueRequest& request) const;

 private:
  void check_issuer() const;
  const X509* m_ca_cert;
  EVP_PKEY* m_ca_key;
  Ledger& m_ledger;
};

// Error(BadInput) unless `ca_key` is the private half of `ca_cert`'s public key.
void check_key_matches_cert(const X509* ca_cert, EVP_PKEY* ca_key);

}  // namespace hwca::core
