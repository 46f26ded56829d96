#include "core/k8s_bootstrap.h"

#include "core/base/error.h"
#include "core/files.h"
#include "core/k8s_layout.h"
#include "core/x509.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <set>
#include <sys/stat.h>

namespace hwca::core::k8s {

namespace {

constexpr size_t kAlphabetSize = 36;
constexpr unsigned kAcceptBelow = 252;  // the largest multiple of 36 that is <= 256
static_assert(kAcceptBelow % kAlphabetSize == 0 && kAcceptBelow + kAlphabetSize > 256);

std::string base64(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  if (n < 0) throw_openssl(ErrorKind::Internal, "base64");
  out.resize(static_cast<size_t>(n));
  return out;
}

bool all_token_chars(const std::string& s) {
  for (char ch : s)
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) return false;
  return true;
}

std::string emitted(const YAML::Emitter& e, const char* what) {
  if (!e.good()) throw Error(ErrorKind::Internal, std::string("emitting ") + what + ": " + e.GetLastError());
  return std::string(e.c_str()) + "\n";
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void make_folder(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return;
  if (errno == EEXIST) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
    throw Error(ErrorKind::Io, path + " exists and is not a folder");
  }
  throw Error(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Io, "cannot create " + path + ": " + std::strerror(errno));
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

}  // namespace

std::optional<char> token_char_from_byte(unsigned char b) {
  if (b >= kAcceptBelow) return std::nullopt;
  return kBootstrapTokenAlphabet[b % kAlphabetSize];
}

std::string random_token_string(size_t length) {
  std::string out;
  out.reserve(length);
  std::array<unsigned char, 64> buf{};
  // Each byte is accepted with probability 252/256, so a handful of rounds is always enough; the bound
  // only guards against a broken generator.
  for (int round = 0; out.size() < length; ++round) {
    if (round >= 1000) throw Error(ErrorKind::Internal, "RAND_bytes keeps returning bytes >= 252");
    if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1) throw_openssl(ErrorKind::Internal, "RAND_bytes");
    for (unsigned char b : buf) {
      if (out.size() == length) break;
      if (auto ch = token_char_from_byte(b)) out += *ch;
    }
  }
  OPENSSL_cleanse(buf.data(), buf.size());
  return out;
}

BootstrapToken BootstrapToken::generate() { return BootstrapToken{random_token_string(6), random_token_string(16)}; }

BootstrapToken BootstrapToken::parse(const std::string& text, const std::string& what) {
  const auto first = text.find_first_not_of(" \t\r\n");
  const auto last = text.find_last_not_of(" \t\r\n");
  const std::string t = first == std::string::npos ? std::string() : text.substr(first, last - first + 1);
  if (t.size() != 23 || t[6] != '.' || !all_token_chars(t.substr(0, 6)) || !all_token_chars(t.substr(7)))
    throw Error(ErrorKind::BadInput, what + ": not a bootstrap token (want [a-z0-9]{6}.[a-z0-9]{16})");
  return BootstrapToken{t.substr(0, 6), t.substr(7)};
}

std::string render_bootstrap_secret(const BootstrapToken& token, const BootstrapSecretOptions& options) {
  // The fields kubeadm's encodeTokenSecretData writes, in the order `kubectl get secret -o yaml` prints them.
  std::string groups;
  for (const auto& g : options.extra_groups) groups += (groups.empty() ? "" : ",") + g;
  std::vector<std::pair<std::string, std::string>> data;
  if (!groups.empty()) data.emplace_back("auth-extra-groups", groups);
  if (!options.description.empty()) data.emplace_back("description", options.description);
  if (options.expiration) data.emplace_back("expiration", iso8601(*options.expiration));
  data.emplace_back("token-id", token.id);
  data.emplace_back("token-secret", token.secret);
  data.emplace_back("usage-bootstrap-authentication", "true");
  data.emplace_back("usage-bootstrap-signing", "true");

  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "apiVersion" << YAML::Value << "v1";
  e << YAML::Key << "kind" << YAML::Value << "Secret";
  e << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "name" << YAML::Value << "bootstrap-token-" + token.id;
  e << YAML::Key << "namespace" << YAML::Value << "kube-system";
  e << YAML::EndMap;
  e << YAML::Key << "type" << YAML::Value << kBootstrapTokenSecretType;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : data) e << YAML::Key << k << YAML::Value << base64(v);
  e << YAML::EndMap;
  e << YAML::EndMap;
  return emitted(e, "the bootstrap token Secret");
}

std::string render_bootstrap_kubeconfig(const std::string& cluster_name, const std::string& server, const std::string& ca_pem,
                                        const BootstrapToken& token) {
  // kubeadm's kubeconfig.CreateWithToken: the same document as every other kubeconfig, with a token.
  return emit_kubeconfig(cluster_name, server, base64(ca_pem), kBootstrapTokenUser, {{"token", token.str()}});
}

std::vector<BootstrapFile> bootstrap_files(const ClusterSpec& spec, const std::string& ca_pem, const BootstrapToken& token,
                                           const BootstrapSecretOptions& options) {
  std::vector<BootstrapFile> files;
  files.push_back({kBootstrapTokenFile, token.str() + "\n"});
  files.push_back({kBootstrapSecretFile, render_bootstrap_secret(token, options)});
  const std::string kubeconfig = render_bootstrap_kubeconfig(spec.name, spec.server_url(), ca_pem, token);
  for (const Node& n : spec.all_nodes()) {
    if (!is_dns_label(n.name)) throw Error(ErrorKind::BadInput, "node name " + n.name + " is not a DNS label");
    files.push_back({"nodes/" + n.name + "/" + kBootstrapKubeconfigFile, kubeconfig});
  }
  return files;
}

void check_output_folder(const std::string& out) {
  if (out.empty()) throw Error(ErrorKind::BadInput, "empty output folder name");
  struct stat st {};
  if (::stat(out.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::BadInput, out + " exists and is not a folder");
    return;
  }
  const std::string parent = parent_of(out);
  if (!parent.empty() && (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)))
    throw Error(ErrorKind::NotFound, "the folder " + parent + " (where " + out + " would be made) does not exist");
}

void make_output_folder(const std::string& out) {
  check_output_folder(out);
  make_folder(out);
}

void write_bootstrap_files(const std::string& out, const std::vector<BootstrapFile>& files, bool force,
                           const std::function<void()>& before_commit) {
  // Refuse before anything is created.
  check_output_folder(out);
  if (!force) {
    for (const auto& f : files) {
      const std::string path = out + "/" + f.path;
      if (!exists(path)) continue;
      std::string held;
      if (f.path == kBootstrapTokenFile) {
        try {
          held = " (token " + BootstrapToken::parse(read_file(path), path).id + ")";
        } catch (const Error&) {
        }
      }
      throw Error(ErrorKind::Conflict, path + " already exists" + held +
                                           "; a new token replaces the token and every bootstrap-kubelet.conf: pass --force "
                                           "(the old token stays valid in the cluster until its Secret expires or is deleted)");
    }
  }
  std::set<std::string> folders;
  for (const auto& f : files) {
    std::string rel = parent_of(f.path);
    while (!rel.empty()) {
      folders.insert(rel);
      rel = parent_of(rel);
    }
  }
  make_output_folder(out);
  for (const auto& rel : folders) make_folder(out + "/" + rel);  // std::set orders "nodes" before "nodes/x"
  AtomicBatch batch;
  for (const auto& f : files) batch.add(out + "/" + f.path, f.content, 0600);
  if (before_commit) before_commit();
  batch.commit();
}

}  // namespace hwca::core::k8s
