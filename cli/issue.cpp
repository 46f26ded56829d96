#include "cli/issue.h"

#include "core/base/error.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <iostream>
#include <map>
#include <unistd.h>

namespace hwca::cli {

LoadedCa load_ca(const Context& ctx, const std::string& ca_path, const std::string& ca_key_uri, bool allow_file_ca_key) {
  if (ca_path.empty()) throw Error(ErrorKind::Usage, "missing -ca (the CA certificate)");
  if (ca_key_uri.empty()) throw Error(ErrorKind::Usage, "missing -ca-key (the CA key URI)");
  LoadedCa ca;
  ca.cert = x509_from_pem(read_file(ca_path), ca_path);
  ca.key = ctx.open_ca_key(ca_key_uri, allow_file_ca_key);
  core::check_key_matches_cert(ca.cert.get(), ca.key->public_key());
  return ca;
}

ProfileChoice choose_profile(const std::string& config_path, const std::string& name, bool strict) {
  ProfileChoice choice;
  if (config_path.empty() && (name == "server" || name == "client" || name == "peer")) {
    choice.profile = core::builtin_profile(name);
    return choice;
  }
  choice.config = config_path.empty() ? core::CfsslConfig::builtin()
                                      : core::CfsslConfig::parse(read_file(config_path), config_path);
  std::string warning;
  choice.profile = choice.config.select(name, strict, &warning);
  if (!warning.empty()) warn(warning);
  return choice;
}

std::vector<std::string> split_hosts(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    if (!item.empty()) out.push_back(item);
    start = end + 1;
  }
  return out;
}

std::string requester(const std::string& command) {
  std::string who = "cli:" + command + " uid=" + std::to_string(::getuid());
  if (const char* user = std::getenv("USER")) who += std::string(" user=") + user;
  return who;
}

void warn_if_validity_capped(const X509* cert, const core::Profile& profile) {
  if (profile.not_after || profile.expiry.count() <= 0) return;
  std::time_t nb = core::asn1_time_to_time_t(X509_get0_notBefore(cert));
  std::time_t na = core::asn1_time_to_time_t(X509_get0_notAfter(cert));
  if (na - nb < profile.expiry.count())
    warn("the certificate's validity was cut to end with its CA's (" + core::iso8601(na) + "), short of the profile's " +
         core::format_go_duration(profile.expiry));
}

void print_cfssl_json(const std::string& cert, const std::string& csr, const std::string& key) {
  std::map<std::string, std::string> out;  // Go marshals map keys sorted: cert, csr, key
  if (!cert.empty()) out["cert"] = cert;
  if (!csr.empty()) out["csr"] = csr;
  if (!key.empty()) out["key"] = key;
  std::cout << nlohmann::json(out).dump() << std::endl;
  if (!std::cout) throw Error(ErrorKind::Io, "cannot write to standard output");
}

void deliver_or_orphan(core::Ledger& ledger, const X509* cert, const std::function<void()>& deliver) {
  try {
    deliver();
  } catch (const Error& e) {
    const std::string serial = serial_hex(X509_get0_serialNumber(cert));
    std::string note;
    try {
      ledger.mark_orphaned(serial, std::string("never delivered: ") + e.what());
      note = "; certificate " + serial + " is in the ledger, marked orphaned";
    } catch (const Error& e2) {
      note = "; certificate " + serial + " is in the ledger and could not be marked orphaned (" + e2.what() + ")";
    }
    throw Error(e.kind(), e.what() + note);
  }
}

}  // namespace hwca::cli
