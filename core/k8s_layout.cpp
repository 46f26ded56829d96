#include "core/k8s_layout.h"

#include "core/base/error.h"
#include "core/engine.h"
#include "core/files.h"
#include "core/yaml_keys.h"

#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <utility>

namespace hwca::core::k8s {

namespace {

namespace fs = std::filesystem;

std::optional<std::string> try_read(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return read_file(path);
}

std::string strip_query(const std::string& uri) { return uri.substr(0, uri.find('?')); }

std::string base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string unbase64(const std::string& text, const std::string& what) {
  std::string in;
  for (char ch : text)
    if (ch != '\n' && ch != '\r' && ch != ' ') in += ch;
  if (in.size() % 4 != 0) throw Error(ErrorKind::BadInput, what + ": not valid base64");
  std::string out(in.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) throw Error(ErrorKind::BadInput, what + ": not valid base64");
  size_t len = static_cast<size_t>(n);
  if (!in.empty() && in.back() == '=') --len;
  if (in.size() > 1 && in[in.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

// True when the folder was made here (so it holds nothing yet), false when it was there.
bool make_folder(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return true;
  if (errno == EEXIST) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return false;
    throw Error(ErrorKind::Io, path + " exists and is not a folder");
  }
  throw Error(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Io, "cannot create " + path + ": " + std::strerror(errno));
}

struct CaState {
  X509_ptr cert;
  std::string pem;
  std::unique_ptr<CaKey> key;
};

struct Leaf {
  const CertSpec* spec = nullptr;
  std::string path;  // primary path, relative
  // What is on disk.
  std::optional<std::string> old_cert_pem, old_key_pem;
  X509_ptr old_cert;
  EVP_PKEY_ptr old_key;
  std::string load_error;
  OnDisk disk;  // what the primary file holds (crash consistency: orphaned rows)
  // What will be written.
  std::vector<std::string> reasons;
  bool issue = false;
  bool new_key = false;
  std::string cert_pem, key_pem;
  EVP_PKEY_ptr key;
  bool available = false;  // cert_pem / key_pem are set
};

bool issued_by(const X509* cert, const CaState& ca) {
  if (X509_check_issued(ca.cert.get(), const_cast<X509*>(cert)) != X509_V_OK) return false;
  EVP_PKEY* pub = X509_get0_pubkey(ca.cert.get());
  bool okv = pub && X509_verify(const_cast<X509*>(cert), pub) == 1;
  drain_openssl_errors();
  return okv;
}

std::string subject_text(const CertSpec& c) { return name_to_string(c.subject().get()); }

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

void load_existing(Leaf& leaf, const std::string& out) {
  const CertSpec& c = *leaf.spec;
  std::string full = out + "/" + leaf.path;
  leaf.disk = OnDisk::missing();
  try {
    if (c.kubeconfig.empty()) {
      leaf.old_cert_pem = try_read(full);
      if (leaf.old_cert_pem) leaf.disk = OnDisk::unknown();
      std::string key_path = full.substr(0, full.size() - 4) + ".key";
      leaf.old_key_pem = try_read(key_path);
    } else if (auto text = try_read(full)) {
      leaf.disk = OnDisk::unknown();
      KubeconfigCredentials cred = parse_kubeconfig(*text, leaf.path);
      leaf.old_cert_pem = cred.cert_pem;
      leaf.old_key_pem = cred.key_pem;
    }
    if (leaf.old_cert_pem) {
      leaf.old_cert = x509_from_pem(*leaf.old_cert_pem, leaf.path);
      leaf.disk = OnDisk::holds(serial_hex(X509_get0_serialNumber(leaf.old_cert.get())));
    }
    if (leaf.old_key_pem) leaf.old_key = private_key_from_pem(*leaf.old_key_pem, leaf.path + " (key)");
  } catch (const Error& e) {
    leaf.load_error = e.what();
    leaf.old_cert.reset();
    leaf.old_key.reset();
  }
}

// Why the certificate on disk cannot stay (empty: it can).
void compare(Leaf& leaf, const ClusterSpec& spec, const CaState& ca) {
  const CertSpec& c = *leaf.spec;
  auto& r = leaf.reasons;
  if (!leaf.load_error.empty()) {
    r.push_back("unreadable (" + leaf.load_error + ")");
    leaf.new_key = true;
    return;
  }
  if (!leaf.old_cert) {
    r.push_back("missing");
    leaf.new_key = !leaf.old_key;
    if (leaf.old_key && !(KeySpec::of(leaf.old_key.get()) == spec.leaf_key)) leaf.new_key = true;
    return;
  }
  if (!leaf.old_key) {
    r.push_back("key missing");
    leaf.new_key = true;
    return;
  }
  if (!same_public_key(X509_get0_pubkey(leaf.old_cert.get()), leaf.old_key.get())) {
    r.push_back("key does not match the certificate");
    leaf.new_key = true;
    return;
  }
  KeySpec have = KeySpec::of(leaf.old_key.get());
  if (!(have == spec.leaf_key)) {
    r.push_back("key algorithm changed: " + have.name() + " -> " + spec.leaf_key.name());
    leaf.new_key = true;
  }
  if (!issued_by(leaf.old_cert.get(), ca))
    r.push_back("not issued by the configured " + std::string(ca_role_name(c.ca)) + " (issuer " +
                name_to_string(X509_get_issuer_name(leaf.old_cert.get())) + ")");
  if (asn1_time_to_time_t(X509_get0_notAfter(leaf.old_cert.get())) <= now()) r.push_back("expired");
  std::string want = subject_text(c), got = name_to_string(X509_get_subject_name(leaf.old_cert.get()));
  if (want != got) r.push_back("subject changed: " + got + " -> " + want);
  auto old_sans = sorted(SubjectAltNames::of_cert(leaf.old_cert.get()).describe());
  auto new_sans = sorted(c.sans.describe());
  if (old_sans != new_sans) {
    std::string diff;
    for (const auto& s : new_sans)
      if (!std::binary_search(old_sans.begin(), old_sans.end(), s)) diff += (diff.empty() ? "+" : ", +") + s;
    for (const auto& s : old_sans)
      if (!std::binary_search(new_sans.begin(), new_sans.end(), s)) diff += (diff.empty() ? "-" : ", -") + s;
    r.push_back("SANs changed: " + diff);
  }
  Usages u = c.usages(EVP_PKEY_is_a(leaf.old_key.get(), "RSA") == 1);
  std::uint32_t ku = X509_get_key_usage(leaf.old_cert.get());
  std::uint32_t xku = X509_get_extended_key_usage(leaf.old_cert.get());
  std::uint32_t want_xku = (c.server_auth ? XKU_SSL_SERVER : 0u) | (c.client_auth ? XKU_SSL_CLIENT : 0u);
  if ((ku & 0xffffu) != u.key_usage || xku != want_xku) r.push_back("usages changed");
}

std::string path_of(const std::string& out, const std::string& rel) { return out + "/" + rel; }

// The node a path of the layout belongs to: NAME for "nodes/NAME" and "nodes/NAME/...", else empty.
std::string node_of(const std::string& rel) {
  if (rel.rfind("nodes/", 0) != 0) return "";
  auto slash = rel.find('/', 6);
  return rel.substr(6, slash == std::string::npos ? std::string::npos : slash - 6);
}

}  // namespace

namespace {

// yaml-cpp's emitter checks a scalar character by character against its regular expressions, which
// for three base64 blobs of several KB each is most of a kubeconfig's cost. A base64 text that starts
// with a letter or digit is always emitted as the same plain scalar, so the document is emitted with
// short plain placeholders and the blobs are put in their place: the bytes are the same.
bool plain_base64(const std::string& b64) {
  if (b64.empty() || !std::isalnum(static_cast<unsigned char>(b64[0]))) return false;
  for (char ch : b64)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '+' && ch != '/' && ch != '=') return false;
  return true;
}

std::string emit_cert_kubeconfig(const std::string& cluster_name, const std::string& server, const std::string& ca_b64,
                                 const std::string& user, const std::string& cert_b64, const std::string& key_b64) {
  return emit_kubeconfig(cluster_name, server, ca_b64, user, {{"client-certificate-data", cert_b64}, {"client-key-data", key_b64}});
}

}  // namespace

std::string render_kubeconfig(const std::string& cluster_name, const std::string& server, const std::string& ca_pem,
                              const std::string& user, const std::string& cert_pem, const std::string& key_pem) {
  std::string ca = base64(ca_pem), cert = base64(cert_pem), key = base64(key_pem);
  if (!plain_base64(ca) || !plain_base64(cert) || !plain_base64(key))
    return emit_cert_kubeconfig(cluster_name, server, ca, user, cert, key);
  static const std::string kCa = "hwcaPlaceholderCaData0", kCert = "hwcaPlaceholderCertData0",
                           kKey = "hwcaPlaceholderKeyData0", kUser = "hwcaPlaceholderUser0";
  // The user's name too, when it is emitted as the same plain scalar in the same places (the user and the
  // context's names are block mapping values): then one document per cluster and server serves every node
  // (this thread's last one is kept).
  thread_local std::string t_cluster, t_server, t_doc;
  auto plain_user = [&] {
    YAML::Emitter e;
    e << YAML::BeginMap << YAML::Key << "u" << YAML::Value << user << YAML::Key << "c" << YAML::Value
      << user + "@" + cluster_name << YAML::EndMap;
    return e.good() && std::string(e.c_str()) == "u: " + user + "\nc: " + user + "@" + cluster_name;
  };
  const bool by_template = user.find(kUser) == std::string::npos && plain_user();
  std::string doc;
  if (by_template && t_cluster == cluster_name && t_server == server && !t_doc.empty()) {
    doc = t_doc;
  } else {
    doc = emit_cert_kubeconfig(cluster_name, server, kCa, by_template ? kUser : user, kCert, kKey);
    if (by_template && doc.find("\ncurrent-context: " + kUser + "@" + cluster_name + "\n") == std::string::npos)
      return emit_cert_kubeconfig(cluster_name, server, ca, user, cert, key);  // the context's name is quoted
    if (by_template) {
      t_cluster = cluster_name;
      t_server = server;
      t_doc = doc;
    }
  }
  // Each placeholder must be there exactly as often as the document names it, else a name or server that
  // looks like one is in the way.
  auto fill = [&doc](const std::string& from, const std::string& to, size_t times) {
    std::vector<size_t> at;
    for (auto pos = doc.find(from); pos != std::string::npos; pos = doc.find(from, pos + from.size())) at.push_back(pos);
    if (at.size() != times) return false;
    for (auto it = at.rbegin(); it != at.rend(); ++it) doc.replace(*it, from.size(), to);
    return true;
  };
  if ((by_template && !fill(kUser, user, 4)) || !fill(kCa, ca, 1) || !fill(kCert, cert, 1) || !fill(kKey, key, 1))
    return emit_cert_kubeconfig(cluster_name, server, ca, user, cert, key);
  return doc;
}

std::string emit_kubeconfig(const std::string& cluster_name, const std::string& server, const std::string& ca_b64,
                            const std::string& user, const std::vector<std::pair<std::string, std::string>>& user_fields) {
  const std::string context = user + "@" + cluster_name;
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "apiVersion" << YAML::Value << "v1";
  e << YAML::Key << "clusters" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  e << YAML::Key << "cluster" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "certificate-authority-data" << YAML::Value << ca_b64;
  e << YAML::Key << "server" << YAML::Value << server;
  e << YAML::EndMap;
  e << YAML::Key << "name" << YAML::Value << cluster_name;
  e << YAML::EndMap << YAML::EndSeq;
  e << YAML::Key << "contexts" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  e << YAML::Key << "context" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "cluster" << YAML::Value << cluster_name;
  e << YAML::Key << "user" << YAML::Value << user;
  e << YAML::EndMap;
  e << YAML::Key << "name" << YAML::Value << context;
  e << YAML::EndMap << YAML::EndSeq;
  e << YAML::Key << "current-context" << YAML::Value << context;
  e << YAML::Key << "kind" << YAML::Value << "Config";
  e << YAML::Key << "preferences" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::EndMap;
  e << YAML::Key << "users" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  e << YAML::Key << "name" << YAML::Value << user;
  e << YAML::Key << "user" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : user_fields) e << YAML::Key << k << YAML::Value << v;
  e << YAML::EndMap;
  e << YAML::EndMap << YAML::EndSeq;
  e << YAML::EndMap;
  if (!e.good()) throw Error(ErrorKind::Internal, "emitting a kubeconfig: " + e.GetLastError());
  return std::string(e.c_str()) + "\n";
}

KubeconfigCredentials parse_kubeconfig(const std::string& yaml, const std::string& what) {
  KubeconfigCredentials out;
  try {
    YAML::Node root = YAML::Load(yaml);
    refuse_duplicate_keys(root, what);
    if (!root.IsMap()) throw Error(ErrorKind::BadInput, what + ": not a kubeconfig");
    std::string current = root["current-context"] ? root["current-context"].as<std::string>() : "";
    auto find_named = [&](const char* list, const std::string& name) -> YAML::Node {
      YAML::Node seq = root[list];
      if (seq && seq.IsSequence())
        for (const auto& item : seq)
          if (item["name"] && item["name"].as<std::string>() == name) return item;
      if (seq && seq.IsSequence() && seq.size() == 1 && name.empty()) return seq[0];
      return YAML::Node(YAML::NodeType::Undefined);
    };
    YAML::Node ctx = find_named("contexts", current);
    std::string cluster_name, user_name;
    if (ctx && ctx["context"]) {
      cluster_name = ctx["context"]["cluster"] ? ctx["context"]["cluster"].as<std::string>() : "";
      user_name = ctx["context"]["user"] ? ctx["context"]["user"].as<std::string>() : "";
    }
    YAML::Node cluster = find_named("clusters", cluster_name);
    YAML::Node user = find_named("users", user_name);
    if (cluster && cluster["cluster"]) {
      const YAML::Node cl = cluster["cluster"];
      if (cl["server"]) out.server = cl["server"].as<std::string>();
      if (cl["certificate-authority-data"])
        out.ca_pem = unbase64(cl["certificate-authority-data"].as<std::string>(), what + ": certificate-authority-data");
    }
    if (user && user["user"]) {
      const YAML::Node u = user["user"];
      if (u["client-certificate-data"])
        out.cert_pem = unbase64(u["client-certificate-data"].as<std::string>(), what + ": client-certificate-data");
      else if (u["client-certificate"])
        out.cert_pem = read_file(u["client-certificate"].as<std::string>());
      if (u["client-key-data"]) out.key_pem = unbase64(u["client-key-data"].as<std::string>(), what + ": client-key-data");
      else if (u["client-key"])
        out.key_pem = read_file(u["client-key"].as<std::string>());
    }
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::BadInput, what + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (out.cert_pem.empty()) throw Error(ErrorKind::BadInput, what + ": no client certificate in the current context's user");
  return out;
}

namespace {

// The plan, streamed: part 0 is everything but the worker-only nodes (the CAs, the cluster-wide leaves,
// the control-plane and etcd nodes, the top level); parts 1.. are `kWorkersPerPart` worker-only nodes
// each, so that a 50,000-certificate cluster is never held in memory at once. A part's certificates are
// recorded (kMaxBatch per ledger transaction) before any of its files is renamed into place; its files
// are then written as one AtomicBatch (one syncfs for the temporaries, one after the renames). Worker
// parts run one per core, and one more, at once. A process killed between the two leaves at most the certificates of the
// parts in flight recorded but unwritten (orphaned by the next run, one ledger transaction each): a part
// is one ledger transaction's worth, which costs no measurable time against 1,024 workers per part (2,000
// and 10,000 workers, this machine).
constexpr size_t kWorkersPerPart = 128;  // about 256 certificates and 640 files
constexpr size_t kMaxBatch = 256;        // certificates per ledger transaction

class PlanParts {
 public:
  explicit PlanParts(const ClusterSpec& spec) : m_base(spec) {
    m_base.workers.clear();
    std::set<std::string> placed;
    for (const auto& n : m_base.all_nodes()) placed.insert(n.name);
    for (const auto& w : spec.workers)
      if (placed.insert(w.name).second) m_workers.push_back(w);
  }
  size_t count() const { return 1 + (m_workers.size() + kWorkersPerPart - 1) / kWorkersPerPart; }
  Plan make(size_t part) const {
    if (part == 0) return make_plan(m_base);
    ClusterSpec sub = m_base;
    size_t from = (part - 1) * kWorkersPerPart, to = std::min(m_workers.size(), from + kWorkersPerPart);
    sub.workers.assign(m_workers.begin() + static_cast<std::ptrdiff_t>(from), m_workers.begin() + static_cast<std::ptrdiff_t>(to));
    std::set<std::string> names;
    for (const auto& w : sub.workers) names.insert(w.name);
    Plan full = make_plan(sub);
    auto mine = [&](const std::string& path) { return names.count(node_of(path)) != 0; };
    Plan p;
    for (auto& c : full.certs)
      if (!c.is_ca && names.count(c.node)) p.certs.push_back(std::move(c));
    for (auto& k : full.kubeconfigs)
      if (mine(k.path)) p.kubeconfigs.push_back(std::move(k));
    for (auto& c : full.copies)
      if (mine(c.path)) p.copies.push_back(std::move(c));
    for (auto& c : full.ca_copies)
      if (mine(c.first)) p.ca_copies.push_back(std::move(c));
    for (auto& f : full.flags)
      if (mine(f.path)) p.flags.push_back(std::move(f));
    for (auto& f : full.folders)
      if (mine(f)) p.folders.push_back(std::move(f));
    return p;
  }
  bool is_worker_only(const std::string& node) const {
    for (const auto& w : m_workers)
      if (w.name == node) return true;
    return false;
  }

 private:
  ClusterSpec m_base;
  std::vector<Node> m_workers;
};

// Software leaf keys, generated on every core. Made early, the pool starts on one background thread while
// the CAs are opened or made in the device (a token generates a CA key on one core; with RSA that is the
// longest step of a small cluster); take() finishes the rest on every core. A pool that is never taken
// stops after the key it is generating.
class KeyPool {
 public:
  KeyPool(const KeySpec& spec, size_t count) : m_spec(spec), m_keys(count) {
    if (count > 0) m_thread = std::thread([this] { work(); });
  }
  ~KeyPool() { stop(); }
  KeyPool(const KeyPool&) = delete;
  KeyPool& operator=(const KeyPool&) = delete;

  // `max_helpers`: threads started beside this one (fewer when the parts themselves run on every core).
  std::vector<EVP_PKEY_ptr> take(size_t max_helpers = SIZE_MAX) {
    // This thread and the prefetch thread (if any) work too; helpers only for keys still to start.
    const size_t cores = std::max(1u, std::thread::hardware_concurrency());
    const size_t busy = m_thread.joinable() ? 1 : 0;
    const size_t started = std::min(m_next.load(), m_keys.size());
    const size_t helpers =
        std::min({cores > busy + 1 ? cores - busy - 1 : 0, m_keys.size() - started, max_helpers});
    std::vector<std::thread> threads;
    for (size_t i = 0; i < helpers; ++i) threads.emplace_back([this] { work(); });
    work();
    for (auto& t : threads) t.join();
    stop();
    if (m_failure) std::rethrow_exception(m_failure);
    return std::move(m_keys);
  }

 private:
  void work() {
    for (size_t i = m_next++; i < m_keys.size(); i = m_next++) {
      try {
        m_keys[i] = generate_software_key(m_spec);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m_mutex);
        if (!m_failure) m_failure = std::current_exception();
      }
    }
  }
  void stop() {
    m_next = m_keys.size();
    if (m_thread.joinable()) m_thread.join();
  }

  KeySpec m_spec;
  std::vector<EVP_PKEY_ptr> m_keys;
  std::atomic<size_t> m_next{0};
  std::mutex m_mutex;
  std::exception_ptr m_failure;
  std::thread m_thread;
};

}  // namespace

InitResult init_cluster(const ClusterSpec& spec, KeySource& keys, Ledger& ledger, const InitOptions& opt) {
  std::string out = opt.out;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out.empty()) throw Error(ErrorKind::Usage, "--out needs a folder");
  auto say = [&](const std::string& line) {
    if (opt.report) opt.report(line);
  };
  const PlanParts parts(spec);
  const Plan plan = parts.make(0);  // the CAs and everything but the worker-only nodes; kept throughout
  InitResult result;
  // What one part reports and counts: parts run on several threads (below), and their lines are reported
  // in part order.
  struct PartOut {
    InitResult counts;
    std::vector<std::string> lines;
  };
  auto flush = [&](PartOut& po) {
    PartOut mine = std::exchange(po, PartOut());  // counted and reported once, even if `say` throws
    result.issued += mine.counts.issued;
    result.kept += mine.counts.kept;
    result.files_written += mine.counts.files_written;
    result.files_unchanged += mine.counts.files_unchanged;
    result.orphaned += mine.counts.orphaned;
    result.stale_temporaries += mine.counts.stale_temporaries;
    for (const auto& line : mine.lines) say(line);
  };
  {
    // Refuse before anything is generated or signed when the folder cannot be made.
    struct stat st {};
    if (::stat(out.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::BadInput, out + " exists and is not a folder");
    } else {
      auto slash = out.rfind('/');
      std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : out.substr(0, slash));
      if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw Error(ErrorKind::NotFound, "cannot create " + out + ": the folder " + parent + " does not exist");
      if (opt.renew) throw Error(ErrorKind::NotFound, out + " does not exist: run `hwca k8s init` first");
    }
  }

  // Crash consistency (k8s_plan.h): the output folder's lock (taken once the folder exists), its absolute
  // path (request ids name files by it), and the rows earlier runs recorded for its files (one listing).
  std::unique_ptr<FolderLock> lock;
  auto take_lock = [&] {
    if (!lock)
      lock = std::make_unique<FolderLock>(out, out + " is in use by another `hwca k8s init` or `renew` (it holds the folder's lock)");
  };
  {
    struct stat st {};
    if (::stat(out.c_str(), &st) == 0) take_lock();
  }
  std::string abs_out;
  try {
    abs_out = fs::weakly_canonical(fs::absolute(out)).string();
  } catch (const fs::filesystem_error& e) {
    throw Error(ErrorKind::Io, out + ": " + e.code().message());
  }
  while (abs_out.size() > 1 && abs_out.back() == '/') abs_out.pop_back();
  FileRows rows(ledger.request_ids_with_prefix(std::string(kFileRequestIdPrefix)), abs_out);
  const long long run = rows.next_run();
  auto request_id = [&](const std::string& rel) { return file_request_id(run, abs_out + "/" + rel); };
  // Rows an earlier run recorded for `rel` but never wrote: marked orphaned before anything new is issued
  // for it (their certificates are then issued again, under new serials, like any missing file's).
  std::mutex rows_mutex;
  auto mark_orphans = [&](const std::string& rel, const OnDisk& disk, PartOut& po) {
    const std::string abs = abs_out + "/" + rel;
    std::lock_guard<std::mutex> guard(rows_mutex);
    for (const auto& o : rows.orphans(abs, disk)) {
      ledger.mark_orphaned(o.serial, o.why);
      rows.marked(abs, o.serial);
      ++po.counts.orphaned;
      po.lines.push_back("orphaned " + o.serial + " (" + rel + "): recorded by run " + std::to_string(o.run) +
                         ", which stopped before writing it");
    }
  };
  auto mark_orphans_now = [&](const std::string& rel, const OnDisk& disk) {  // reported at once
    PartOut po;
    mark_orphans(rel, disk, po);
    flush(po);
  };

  // Renew and init --only: the names must be known before anything happens.
  const bool only = !opt.renew && !opt.only.empty();
  const std::vector<std::string>& chosen = opt.renew ? opt.renew_names : opt.only;
  auto listed = [&](const std::string& n, const std::string& node, const std::string& name) {
    return n == name || (!node.empty() && n == node + "/" + name);
  };
  auto selected = [&](const CertSpec& c) {
    if (opt.renew && opt.renew_all) return true;
    for (const auto& n : chosen)
      if (listed(n, c.node, c.name)) return true;
    return false;
  };
  // What a name may select: any leaf; a CA only with init --only (renew never re-keys a CA).
  auto nameable = [&](const CertSpec& c) { return !c.is_ca || only; };
  if (opt.renew && !opt.renew_all && opt.renew_names.empty())
    throw Error(ErrorKind::Usage, "renew needs certificate names or --all");
  // Every worker-only node has the same certificates: the first part's names stand for all.
  std::set<std::string> worker_names;
  std::set<CaRole> worker_roles;
  if (parts.count() > 1)
    for (const auto& c : parts.make(1).certs) {
      worker_names.insert(c.name);
      worker_roles.insert(c.ca);
    }
  bool workers_selected = opt.renew && opt.renew_all;
  std::set<CaRole> needed;  // init --only: the CAs the selected certificates chain to
  for (const auto& n : chosen) {
    bool known = false;
    for (const auto& c : plan.certs) {
      if (nameable(c) && listed(n, c.node, c.name)) {
        known = true;
        needed.insert(c.ca);
      }
    }
    if (only && n == "sa") known = true;
    auto slash = n.find('/');
    if (worker_names.count(n) ||
        (slash != std::string::npos && worker_names.count(n.substr(slash + 1)) && parts.is_worker_only(n.substr(0, slash)))) {
      known = true;
      workers_selected = true;
      needed.insert(worker_roles.begin(), worker_roles.end());
    }
    if (!known) {
      std::set<std::string> all(worker_names);
      for (const auto& c : plan.certs)
        if (nameable(c)) all.insert(c.name);
      if (only) all.insert("sa");
      std::string list;
      for (const auto& x : all) list += (list.empty() ? "" : ", ") + x;
      throw Error(ErrorKind::Usage, std::string(opt.renew ? "renew" : "init --only") + ": unknown certificate '" + n +
                                        "' (known: " + list + "; or NODE/NAME)");
    }
  }
  const bool sa_selected = std::find(chosen.begin(), chosen.end(), "sa") != chosen.end();

  // The leaves of part 0 that will need a new key whatever the CAs turn out to be (neither file there):
  // their keys are generated while the CAs are opened or made.
  std::optional<KeyPool> prefetch;
  if (!opt.renew) {
    size_t certain = 0;
    struct stat st {};
    for (const auto& c : plan.certs) {
      if (c.is_ca || (only && !selected(c))) continue;
      const std::string full = path_of(out, c.primary_path());
      if (::stat(full.c_str(), &st) == 0) continue;
      if (c.kubeconfig.empty() && ::stat((full.substr(0, full.size() - 4) + ".key").c_str(), &st) == 0) continue;
      ++certain;
    }
    prefetch.emplace(spec.leaf_key, certain);
  }

  // 1. The three CAs: kept when their certificate and device key match; never re-keyed.
  std::map<CaRole, CaState> cas;
  for (CaRole role : {CaRole::Kubernetes, CaRole::Etcd, CaRole::FrontProxy}) {
    const CertSpec& c = plan.ca(role);
    const std::string uri = spec.ca_key(role);
    const std::string field = "cas." + std::string(ca_role_name(role)) + ".key";
    auto at = [&](const Error& e) { return Error(e.kind(), spec.where(field) + ": " + e.what()); };
    CaState st;
    std::optional<std::string> pem = try_read(path_of(out, c.primary_path()));
    if (only && !needed.count(role) && !pem) continue;  // init --only: a CA nothing selected needs is not made
    bool have_key = false;
    try {
      have_key = keys.exists(uri);
    } catch (const Error& e) {
      throw at(e);
    }
    if (pem) {
      st.cert = x509_from_pem(*pem, c.primary_path());
      mark_orphans_now(c.primary_path(), OnDisk::holds(serial_hex(X509_get0_serialNumber(st.cert.get()))));
      if (!have_key)
        throw Error(ErrorKind::Conflict, c.primary_path() + " exists but its key " + strip_query(uri) +
                                             " does not: hwca never re-keys a CA (restore the token, or move " + out +
                                             " away to start a new cluster)");
      try {
        st.key = keys.open(uri);
      } catch (const Error& e) {
        throw at(e);
      }
      try {
        check_key_matches_cert(st.cert.get(), st.key->public_key());
      } catch (const Error&) {
        throw Error(ErrorKind::Conflict, c.primary_path() + " does not belong to the key " + strip_query(uri) +
                                             ": hwca never re-keys a CA (point " + field + " at the CA's key, or move " +
                                             out + " away to start a new cluster)");
      }
      st.pem = *pem;
      ++result.kept;
    } else {
      if (opt.renew)
        throw Error(ErrorKind::NotFound, c.primary_path() + " is missing: run `hwca k8s init` first (renew never makes a CA)");
      mark_orphans_now(c.primary_path(), OnDisk::missing());
      std::string why;
      try {
        if (have_key) {
          st.key = keys.open(uri);
          why = "certificate missing; key found in the device";
        } else {
          st.key = keys.generate(uri, spec.ca_key_spec);
          why = "new " + spec.ca_key_spec.name() + " key generated in the device";
        }
      } catch (const Error& e) {
        throw at(e);
      }
      Profile profile = c.profile();
      IssueRequest req;
      req.subject = c.subject();
      req.sans = c.sans;
      req.public_key = st.key->public_key();
      req.profile = &profile;
      req.requester = opt.requester;
      req.request_id = request_id(c.primary_path());
      req.authority_key_id_on_self_signed = false;  // Go's x509 leaves AKI out of a self-signed certificate
      Issuer issuer(nullptr, st.key->pkey(), ledger);
      st.cert = issuer.issue(req);
      st.pem = x509_to_pem(st.cert.get());
      ++result.issued;
      say("issued " + c.name + " (" + c.primary_path() + ", key " + strip_query(uri) + "): " + why);
    }
    cas[role] = std::move(st);
  }

  // 2. Leaves of one part: what is on disk, and whether it can stay (renew refuses here).
  auto examine = [&](const Plan& p) {
    std::vector<Leaf> leaves;
    std::map<std::string, bool> node_folder;  // nodes/NAME -> exists; a missing one holds no file
    for (const auto& c : p.certs) {
      if (c.is_ca) continue;
      Leaf l;
      l.spec = &c;
      l.path = c.primary_path();
      const std::string node = node_of(l.path);
      bool folder_there = true;
      if (!node.empty()) {
        auto [it, fresh] = node_folder.emplace("nodes/" + node, false);
        struct stat st {};
        if (fresh) it->second = ::stat(path_of(out, it->first).c_str(), &st) == 0;
        folder_there = it->second;
      }
      if (folder_there) load_existing(l, out);
      else l.disk = OnDisk::missing();
      leaves.push_back(std::move(l));
    }
    for (auto& l : leaves) {
      if (only && !selected(*l.spec)) continue;  // left as it is (kept when it is there)
      const CaState& ca = cas.at(l.spec->ca);
      if (opt.renew) {
        if (!selected(*l.spec)) continue;
        if (!l.old_cert)
          throw Error(ErrorKind::NotFound, l.path + (l.load_error.empty() ? " is missing" : " is unreadable (" + l.load_error + ")") +
                                               ": run `hwca k8s init` first");
        if (!issued_by(l.old_cert.get(), ca))
          throw Error(ErrorKind::Policy, l.path + " was issued by " + name_to_string(X509_get_issuer_name(l.old_cert.get())) +
                                             ", not by the configured " + ca_role_name(l.spec->ca) + " (" +
                                             name_to_string(X509_get_subject_name(ca.cert.get())) +
                                             "): refusing to renew it");
        l.reasons.push_back(opt.reuse_keys ? "renewed (same key)" : "renewed (new key)");
        l.new_key = !opt.reuse_keys || !l.old_key || !same_public_key(X509_get0_pubkey(l.old_cert.get()), l.old_key.get());
      } else {
        compare(l, spec, ca);
      }
      l.issue = !l.reasons.empty();
    }
    return leaves;
  };
  // Renew refuses before anything is signed: every part is checked first.
  if (opt.renew)
    for (size_t i = 1; i < parts.count(); ++i) examine(parts.make(i));

  std::map<CaRole, std::unique_ptr<Issuer>> issuers;
  for (auto& [role, st] : cas) issuers[role] = std::make_unique<Issuer>(st.cert.get(), st.key->pkey(), ledger);

  // 3-4. New leaf keys (in parallel, every core), then the signatures through the hardware CAs, one
  // ledger transaction per CA and up to kMaxBatch certificates: recorded before any file of the part
  // appears.
  // A signing or ledger failure (a token gone, a full disk) stops the issuing: what was recorded until then
  // is still written (write_part skips what is not available), then the failure is thrown, so that a
  // failed run leaves no recorded certificate without its file.
  // `key_helpers` caps the threads a part's key generation starts. A part stops issuing at its own first
  // failure; the run's first failure, in time, is the one thrown in the end: with parts on several
  // threads, a device that broke under one part can fail another part's next request with a consequence
  // of the first error.
  std::mutex first_failure_mutex;
  std::exception_ptr first_failure;
  std::atomic<bool> stop{false};
  auto note_failure = [&](const std::exception_ptr& e) {
    std::lock_guard<std::mutex> guard(first_failure_mutex);
    if (!first_failure) first_failure = e;
    stop = true;
  };
  auto issue_leaves = [&](std::vector<Leaf>& leaves, PartOut& po, size_t key_helpers) {
    bool failed = false;
    std::vector<Leaf*> todo;
    for (auto& l : leaves)
      if (l.issue && l.new_key) todo.push_back(&l);
    // The prefetched keys first (only part 0 has any; surplus ones, if a file appeared meanwhile, are
    // dropped), then the rest on every core.
    std::vector<EVP_PKEY_ptr> ready;
    if (prefetch) {
      ready = prefetch->take();
      prefetch.reset();
    }
    if (ready.size() < todo.size()) {
      std::vector<EVP_PKEY_ptr> more = KeyPool(spec.leaf_key, todo.size() - ready.size()).take(key_helpers);
      std::move(more.begin(), more.end(), std::back_inserter(ready));
    }
    for (size_t i = 0; i < todo.size(); ++i) todo[i]->key = std::move(ready[i]);
    for (CaRole role : {CaRole::Kubernetes, CaRole::Etcd, CaRole::FrontProxy}) {
      if (failed) break;
      std::vector<Leaf*> batch;
      for (auto& l : leaves)
        if (l.issue && l.spec->ca == role) batch.push_back(&l);
      for (size_t from = 0; from < batch.size() && !failed; from += kMaxBatch) {
        size_t to = std::min(batch.size(), from + kMaxBatch);
        std::vector<Profile> profiles;
        std::vector<IssueRequest> reqs;
        profiles.reserve(to - from);
        reqs.reserve(to - from);
        std::vector<const IssueRequest*> ptrs;
        for (size_t i = from; i < to; ++i) {
          Leaf& l = *batch[i];
          if (!l.new_key) {
            l.key = std::move(l.old_key);
            l.key_pem = *l.old_key_pem;
          } else {
            l.key_pem = private_key_to_traditional_pem(l.key.get());
          }
          const CertSpec& c = *l.spec;
          profiles.push_back(c.profile());
          IssueRequest req;
          req.subject = c.subject();
          req.sans = c.sans;
          req.public_key = l.key.get();
          req.profile = &profiles.back();
          req.requester = opt.requester;
          req.request_id = request_id(l.path);
          reqs.push_back(std::move(req));
          ptrs.push_back(&reqs.back());
        }
        std::vector<X509_ptr> certs;
        std::vector<std::string> pems;
        try {
          certs = issuers.at(role)->issue_batch(ptrs, &pems);
        } catch (...) {
          failed = true;
          note_failure(std::current_exception());
          break;
        }
        for (size_t i = from; i < to; ++i) {
          Leaf& l = *batch[i];
          l.cert_pem = std::move(pems[i - from]);
          l.available = true;
          ++po.counts.issued;
        }
      }
    }
    for (auto& l : leaves) {
      if (l.issue) {
        if (l.available) {  // else a failure stopped the issuing first
          const CertSpec& c = *l.spec;
          std::string reasons;
          for (const auto& r : l.reasons) reasons += (reasons.empty() ? "" : "; ") + r;
          po.lines.push_back("issued " + (c.node.empty() ? c.name : c.node + "/" + c.name) + " (" + l.path + "): " + reasons);
        }
      } else if (l.old_cert && l.old_key) {
        l.cert_pem = *l.old_cert_pem;
        l.key_pem = *l.old_key_pem;
        l.available = true;
        ++po.counts.kept;
      }
      // The parsed forms are no longer needed.
      l.old_cert.reset();
      l.old_key.reset();
      l.key.reset();
      l.old_cert_pem.reset();
      l.old_key_pem.reset();
    }
  };

  // 6. A part's output files; what differs is written as one batch (temporaries, one syncfs, the
  // renames, one fsync per folder).
  std::optional<std::string> sa_key_pem;
  EVP_PKEY_ptr sa_key;
  std::map<std::string, const Leaf*> shared;  // the cluster-wide leaves (part 0), used by every part
  auto write_part = [&](const Plan& p, const std::vector<Leaf>& leaves, bool base, PartOut& po) {
    std::map<std::string, const Leaf*> by_id;
    for (const auto& l : leaves) by_id[l.spec->id] = &l;
    auto leaf_of = [&](const std::string& id) -> const Leaf* {
      auto it = by_id.find(id);
      if (it != by_id.end()) return it->second;
      return shared.at(id);
    };
    std::map<std::string, std::pair<std::string, mode_t>> files;
    if (base)
      for (const auto& [role, st] : cas) files[p.ca(role).primary_path()] = {st.pem, 0644};
    for (const auto& [path, role] : p.ca_copies)
      if (cas.count(role)) files[path] = {cas.at(role).pem, 0644};
    for (const auto& l : leaves) {
      if (!l.available || !l.spec->kubeconfig.empty()) continue;
      files[l.path] = {l.cert_pem, 0644};
      files[l.path.substr(0, l.path.size() - 4) + ".key"] = {l.key_pem, 0600};
    }
    for (const auto& cp : p.copies) {
      const Leaf* l = leaf_of(cp.cert_id);
      if (!l->available) continue;
      files[cp.path] = cp.key ? std::make_pair(l->key_pem, mode_t{0600}) : std::make_pair(l->cert_pem, mode_t{0644});
    }
    for (const auto& kc : p.kubeconfigs) {
      const Leaf* l = leaf_of(kc.cert_id);
      if (!l->available || !cas.count(l->spec->ca)) continue;
      files[kc.path] = {render_kubeconfig(spec.name, kc.server, cas.at(l->spec->ca).pem, l->spec->cn, l->cert_pem, l->key_pem),
                        0600};
    }
    if (base && sa_key) {
      for (const auto& dir : p.sa_dirs) {
        files[dir + "/sa.key"] = {*sa_key_pem, 0600};
        files[dir + "/sa.pub"] = {public_key_to_pem(sa_key.get()), 0644};
      }
    }
    for (const auto& f : p.flags) {
      if (only) break;  // init --only writes certificates, keys and kubeconfigs only
      std::string text;
      for (const auto& flag : f.flags) text += flag + "\n";
      files[f.path] = {text, 0644};
    }

    if (base) {
      struct stat out_st {};
      if (::stat(out.c_str(), &out_st) != 0) make_folder(out);
      take_lock();
    }
    // Folders made here hold nothing yet: no file in them needs comparing (we hold the folder's lock).
    std::set<std::string> made;
    for (const auto& folder : p.folders) {
      if (only) {  // init --only: just the folders its files go in (p.folders lists parents first).
        const std::string prefix = folder + "/";
        if (std::none_of(files.begin(), files.end(), [&](const auto& f) { return f.first.rfind(prefix, 0) == 0; }))
          continue;
      }
      if (make_folder(path_of(out, folder))) made.insert(folder);
    }
    // The temporaries a killed run left in the folders this part writes (not in the folders it just
    // made: those hold nothing).
    std::map<std::string, std::set<std::string>> names_by_folder;
    for (const auto& entry : files) {
      auto slash = entry.first.rfind('/');
      if (slash != std::string::npos && made.count(entry.first.substr(0, slash))) continue;
      std::string full = path_of(out, entry.first);
      slash = full.rfind('/');
      names_by_folder[full.substr(0, slash)].insert(full.substr(slash + 1));
    }
    int stale = 0;
    for (const auto& [folder, names] : names_by_folder) stale += static_cast<int>(remove_stale_temporaries(folder, names));
    if (stale > 0)
      po.lines.push_back("removed " + std::to_string(stale) + " temporar" + (stale == 1 ? "y" : "ies") + " left by an earlier run");
    po.counts.stale_temporaries += stale;
    // Each certificate's primary file (the CAs' first, a certificate before its key) is renamed into place
    // before any copy or kubeconfig that holds it: a certificate in no primary file reached no file.
    std::vector<const std::string*> order;
    std::set<std::string> first;
    auto put_first = [&](const std::string& rel) {
      auto it = files.find(rel);
      if (it != files.end() && first.insert(rel).second) order.push_back(&it->first);
    };
    if (base)
      for (const auto& entry : cas) put_first(p.ca(entry.first).primary_path());
    for (const auto& l : leaves) {
      put_first(l.path);
      if (l.spec->kubeconfig.empty()) put_first(l.path.substr(0, l.path.size() - 4) + ".key");
    }
    for (const auto& entry : files)
      if (!first.count(entry.first)) order.push_back(&entry.first);
    AtomicBatch batch;
    for (const std::string* relp : order) {
      const std::string& rel = *relp;
      const auto& content = files.at(rel);
      std::string full = path_of(out, rel);
      auto slash = rel.rfind('/');
      struct stat st {};
      if (!(slash != std::string::npos && made.count(rel.substr(0, slash))) && ::stat(full.c_str(), &st) == 0 &&
          S_ISREG(st.st_mode) && (st.st_mode & 0777) == content.second &&
          static_cast<size_t>(st.st_size) == content.first.size()) {
        std::optional<std::string> have = try_read(full);
        if (have && *have == content.first) {
          ++po.counts.files_unchanged;
          continue;
        }
      }
      batch.add(full, content.first, content.second);
    }
    po.counts.files_written += static_cast<int>(batch.commit());
  };

  // Part 0: the cluster-wide leaves, the control-plane and etcd nodes, the top level.
  PartOut po0;
  std::vector<Leaf> base_leaves = examine(plan);
  for (const auto& l : base_leaves) mark_orphans(l.path, l.disk, po0);
  issue_leaves(base_leaves, po0, SIZE_MAX);
  for (const auto& l : base_leaves)
    if (l.spec->node.empty()) shared[l.spec->id] = &l;

  // 5. The service-account key pair: reused when present.
  sa_key_pem = try_read(path_of(out, "pki/sa.key"));
  if (sa_key_pem) {
    sa_key = private_key_from_pem(*sa_key_pem, "pki/sa.key");
  } else if (!opt.renew && (!only || sa_selected)) {
    sa_key = generate_software_key(spec.leaf_key);
    sa_key_pem = private_key_to_traditional_pem(sa_key.get());
    po0.lines.push_back("generated pki/sa.key and pki/sa.pub (service-account key pair, " + spec.leaf_key.name() + ")");
  }
  write_part(plan, base_leaves, true, po0);
  flush(po0);
  if (first_failure) std::rethrow_exception(first_failure);

  // Parts 1..: the worker-only nodes, kWorkersPerPart at a time, a part per core (and one more) at once:
  // a part's token signatures, ledger commit and file-system work overlap another's. Each part still records its
  // certificates before any of its files appears; a failure lets the parts already started finish (their
  // recorded certificates are written) and starts no new one. Lines are reported in part order.
  if (parts.count() > 1 && (!only || workers_selected)) {
    const size_t n_parts = parts.count() - 1;
    // One more than the cores: a part waiting for the disk (its ledger commit, its syncfs) leaves its core
    // to another (10,000 workers, 2 cores: 4.5 s with three threads, 4.5-5.0 s with two).
    const size_t threads = std::min<size_t>(n_parts, std::max(1u, std::thread::hardware_concurrency()) + 1);
    std::mutex done_mutex;
    std::vector<std::optional<PartOut>> done(n_parts);
    size_t next_report = 0;
    std::atomic<size_t> next_part{0};
    auto run_parts = [&] {
      for (size_t i = next_part++; i < n_parts && !stop; i = next_part++) {
        PartOut po;
        try {
          const Plan p = parts.make(i + 1);
          std::vector<Leaf> leaves = examine(p);
          for (const auto& l : leaves) mark_orphans(l.path, l.disk, po);
          issue_leaves(leaves, po, threads > 1 ? 0 : SIZE_MAX);
          write_part(p, leaves, false, po);
        } catch (...) {
          note_failure(std::current_exception());
        }
        std::lock_guard<std::mutex> guard(done_mutex);
        done[i] = std::move(po);
        try {  // the report callback runs here, on this thread: what it throws must not end the process
          for (; next_report < n_parts && done[next_report]; ++next_report) flush(*done[next_report]);
        } catch (...) {
          note_failure(std::current_exception());
        }
      }
    };
    std::vector<std::thread> helpers;
    try {
      for (size_t t = 1; t < threads; ++t) helpers.emplace_back(run_parts);
    } catch (const std::system_error&) {
      // No more threads to be had: the ones started (and this one) do all the parts.
    }
    run_parts();
    for (auto& t : helpers) t.join();
    // After a failure, the parts that finished after a gap are reported too.
    for (; next_report < n_parts; ++next_report)
      if (done[next_report]) flush(*done[next_report]);
    if (first_failure) std::rethrow_exception(first_failure);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// check-expiration

std::vector<ExpirationEntry> scan_expiration(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw Error(ErrorKind::NotFound, dir + " is not a folder");

  // The CAs of the top level.
  std::vector<std::pair<std::string, X509_ptr>> cas;
  for (const auto& [name, rel] : std::vector<std::pair<std::string, std::string>>{
           {"ca", "pki/ca.crt"}, {"etcd-ca", "pki/etcd/ca.crt"}, {"front-proxy-ca", "pki/front-proxy-ca.crt"}}) {
    if (auto pem = try_read(dir + "/" + rel)) {
      try {
        cas.emplace_back(name, x509_from_pem(*pem, rel));
      } catch (const Error&) {
      }
    }
  }
  auto ca_of = [&](X509* cert) -> std::string {
    for (const auto& [name, ca] : cas) {
      if (X509_check_issued(ca.get(), cert) != X509_V_OK) continue;
      EVP_PKEY* pub = X509_get0_pubkey(ca.get());
      bool okv = pub && X509_verify(cert, pub) == 1;
      drain_openssl_errors();
      if (okv) return name;
    }
    return "";
  };

  std::vector<ExpirationEntry> top, nodes;
  std::set<std::string> seen;  // DER of each certificate listed
  auto add = [&](std::vector<ExpirationEntry>& list, const std::string& name, const std::string& rel, X509* cert) {
    std::string der = x509_to_der(cert);
    if (!seen.insert(der).second) return;
    ExpirationEntry e;
    e.name = name;
    e.path = rel;
    e.not_after = asn1_time_to_time_t(X509_get0_notAfter(cert));
    e.is_ca = X509_check_ca(cert) != 0;
    drain_openssl_errors();
    e.ca_name = ca_of(cert);
    list.push_back(e);
  };
  auto scan = [&](const std::string& base, const std::string& prefix, std::vector<ExpirationEntry>& list) {
    std::error_code ec;
    std::vector<std::string> rels;
    for (const char* sub : {"pki", "pki/etcd"}) {
      fs::path p = fs::path(base) / sub;
      if (!fs::is_directory(p, ec)) continue;
      for (const auto& entry : fs::directory_iterator(p, ec))
        if (entry.is_regular_file(ec) && entry.path().extension() == ".crt")
          rels.push_back(std::string(sub) + "/" + entry.path().filename().string());
    }
    for (const auto& entry : fs::directory_iterator(base, ec))
      if (entry.is_regular_file(ec) && entry.path().extension() == ".conf") rels.push_back(entry.path().filename().string());
    std::sort(rels.begin(), rels.end());
    struct Found {
      std::string name, rel;
      X509_ptr cert;
    };
    std::vector<Found> found;
    for (const auto& rel : rels) {
      std::string full = base + "/" + rel;
      std::string name;
      try {
        X509_ptr cert;
        if (rel.size() > 5 && rel.substr(rel.size() - 5) == ".conf") {
          name = rel;
          KubeconfigCredentials cred = parse_kubeconfig(read_file(full), prefix + rel);
          cert = x509_from_pem(cred.cert_pem, prefix + rel);
        } else {
          name = rel.substr(4, rel.size() - 8);  // strip "pki/" and ".crt"
          std::replace(name.begin(), name.end(), '/', '-');
          cert = x509_from_pem(read_file(full), prefix + rel);
        }
        found.push_back({name, rel, std::move(cert)});
      } catch (const Error&) {
        continue;  // not a certificate (kubeadm's check-expiration skips what it cannot read)
      }
    }
    // CAs first, then the rest, each alphabetically.
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.name < b.name; });
    for (int pass = 0; pass < 2; ++pass)
      for (auto& f : found) {
        bool is_ca = X509_check_ca(f.cert.get()) != 0;
        if (is_ca == (pass == 0))
          add(list, prefix.empty() ? f.name : prefix.substr(6, prefix.size() - 7) + "/" + f.name, prefix + f.rel, f.cert.get());
      }
  };
  scan(dir, "", top);
  std::error_code ec;
  std::vector<std::string> node_names;
  if (fs::is_directory(dir + "/nodes", ec))
    for (const auto& entry : fs::directory_iterator(dir + "/nodes", ec))
      if (entry.is_directory(ec)) node_names.push_back(entry.path().filename().string());
  std::sort(node_names.begin(), node_names.end());
  for (const auto& n : node_names) scan(dir + "/nodes/" + n, "nodes/" + n + "/", nodes);
  top.insert(top.end(), nodes.begin(), nodes.end());
  return top;
}

std::string kubeadm_date(std::time_t t) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%b %d, %Y %H:%M UTC", &tm);
  return buf;
}

std::string residual_time(std::time_t not_after, std::time_t now_t) {
  long long d = static_cast<long long>(not_after) - static_cast<long long>(now_t);
  if (d < -1) return "<invalid>";
  if (d < 0) return "0s";
  if (d < 60) return std::to_string(d) + "s";
  if (d < 3600) return std::to_string(d / 60) + "m";
  if (d < 86400) return std::to_string(d / 3600) + "h";
  if (d < 86400LL * 365) return std::to_string(d / 86400) + "d";
  return std::to_string(d / (86400LL * 365)) + "y";
}

}  // namespace hwca::core::k8s
