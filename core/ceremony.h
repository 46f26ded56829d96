// Key ceremonies: the ceremony file (YAML, the only input of a ceremony) and its transcript (JSON, signed by
// the audit key, which the ceremony's CA key endorses). cli/cmd_ceremony.cpp runs a ceremony against the
// token; this file parses, canonicalises and verifies, offline, without any token.
//
// Transcript file: {"signature": {...}, "transcript": {...}} written as nlohmann::json's dump(2) (keys sorted,
// two-space indent) plus a newline. That form is canonical: `verify` refuses a file that is not byte for byte
// the canonical form of what it parses, so any changed byte is detected, inside or outside values.
//   signature.value = audit key's signature over "hwca-ceremony-transcript-v1\n" + transcript.dump()
//   transcript.audit.endorsement = CA key's signature over the audit key's SubjectPublicKeyInfo (see
//     audit_endorsement_message): the CA key vouches for the audit key, and the root certificate vouches
//     for the CA key. So `verify` needs only the root certificate.
#pragma once

#include "core/base/ossl.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace hwca::core {

struct CeremonySpec {
  enum class Kind { Root, Intermediate, Crl, Key };
  Kind kind = Kind::Root;
  std::string file;         // the ceremony file as given
  std::string base_dir;     // relative paths below resolve against the ceremony file's folder
  std::string file_sha256;  // of the file's bytes

  // key: the key the ceremony uses (root, intermediate and crl: the signing CA key; key: the new key).
  std::string key_uri;
  std::optional<std::string> generate;   // algorithm ("ecdsa-p384") when the ceremony generates the key
  std::vector<std::string> pin_shares;   // share files of the token's user PIN (resolved paths)
  std::optional<std::string> audit_key_uri;  // default: <object>-audit on the same token
  std::string ledger;                    // empty: the default ledger

  // certificate (root, intermediate).
  std::string subject;                   // root: required; intermediate: overrides the CSR's subject
  std::string validity;                  // Go duration
  std::optional<int> pathlen;
  // intermediate, crl: the issuer's certificate (resolved path).
  std::string issuer_certificate;
  // intermediate: the CSR to sign; key: the CSR to make (subject).
  std::string csr;
  std::string csr_subject;
  // crl
  std::string next_update = "720h";
  bool der = false;

  // outputs: a folder that must be empty (or absent), and file names inside it.
  std::string out_dir;
  std::string out_certificate;
  std::string out_crl;
  std::string out_csr;
  std::string out_public_key;

  static std::string kind_name(Kind k);
};

// Parses and checks a ceremony file: unknown fields, missing fields and fields that do not belong to the
// ceremony's kind are Error(BadInput) naming the file and the field.
CeremonySpec parse_ceremony(const std::string& yaml_text, const std::string& path);

// What the CA key signs to endorse an audit key.
std::string audit_endorsement_message(const EVP_PKEY* audit_public_key);
// What the audit key signs: the canonical transcript bytes.
std::string transcript_signing_bytes(const nlohmann::json& transcript);
// The transcript file's bytes for a transcript and its signature (hex) by `audit_public_key`.
std::string transcript_file(const nlohmann::json& transcript, const std::string& signature_hex, const EVP_PKEY* audit_key);

struct TranscriptCheck {
  std::string ceremony;             // "root", ...
  std::vector<std::string> lines;   // what was checked, for people
};

// Verifies a transcript file offline. `root` (optional for key ceremonies) is the root certificate; `cert`
// (key ceremonies) a certificate later issued for the ceremony's key, checked against `root`. Output files
// named in the transcript are re-hashed in `files_dir` (default: the transcript's folder).
// Error(Policy) with the first thing that does not hold.
TranscriptCheck verify_transcript(const std::string& path, const X509* root, const X509* cert,
                                  const std::string& files_dir);

}  // namespace hwca::core
