#include "core/k8s_cluster.h"

#include "core/base/error.h"
#include "core/profile.h"
#include "core/yaml_keys.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <sstream>

namespace hwca::core::k8s {

namespace {

struct Ctx {
  const std::string& file;
  [[noreturn]] void fail(const YAML::Node& node, const std::string& field, const std::string& reason) const {
    int line = node.IsDefined() ? node.Mark().line + 1 : 0;
    if (line > 0) throw Error(ErrorKind::BadInput, file + ":" + std::to_string(line) + ": " + field + ": " + reason);
    throw Error(ErrorKind::BadInput, file + ": " + field + ": " + reason);
  }
};

int line_of(const YAML::Node& node) { return node.Mark().line >= 0 ? node.Mark().line + 1 : 0; }

std::string scalar(const Ctx& c, const YAML::Node& node, const std::string& field) {
  if (!node.IsScalar()) c.fail(node, field, "must be a single value");
  return node.Scalar();
}

bool boolean(const Ctx& c, const YAML::Node& node, const std::string& field) {
  std::string v = scalar(c, node, field);
  if (v == "true" || v == "True" || v == "yes") return true;
  if (v == "false" || v == "False" || v == "no") return false;
  c.fail(node, field, "must be true or false (got '" + v + "')");
}

int port(const Ctx& c, const YAML::Node& node, const std::string& field) {
  std::string v = scalar(c, node, field);
  if (v.empty() || v.size() > 5 || v.find_first_not_of("0123456789") != std::string::npos)
    c.fail(node, field, "'" + v + "' is not a port number");
  int p = std::stoi(v);
  if (p < 1 || p > 65535) c.fail(node, field, "'" + v + "' is not a port number (1-65535)");
  return p;
}

// Parses an IPv4 or IPv6 literal; returns the address bytes (4 or 16) or an empty vector.
std::vector<unsigned char> ip_bytes(const std::string& text) {
  std::array<unsigned char, 16> buf{};
  if (text.find(':') == std::string::npos) {
    if (::inet_pton(AF_INET, text.c_str(), buf.data()) == 1) return {buf.begin(), buf.begin() + 4};
  } else if (::inet_pton(AF_INET6, text.c_str(), buf.data()) == 1) {
    return {buf.begin(), buf.end()};
  }
  return {};
}

std::string ip_text(const std::vector<unsigned char>& bytes) {
  char out[INET6_ADDRSTRLEN] = {};
  int family = bytes.size() == 4 ? AF_INET : AF_INET6;
  if (!::inet_ntop(family, bytes.data(), out, sizeof out)) throw Error(ErrorKind::Internal, "inet_ntop failed");
  return out;
}

struct Cidr {
  std::vector<unsigned char> base;
  int prefix = 0;
};

// Parses "a.b.c.d/n" or "x::/n"; nullopt with a reason otherwise.
std::optional<Cidr> parse_cidr(const std::string& text, std::string& why) {
  auto slash = text.find('/');
  if (slash == std::string::npos) {
    why = "'" + text + "' is not a CIDR (want address/prefix, such as 10.96.0.0/12)";
    return std::nullopt;
  }
  Cidr c;
  c.base = ip_bytes(text.substr(0, slash));
  std::string p = text.substr(slash + 1);
  int bits = static_cast<int>(c.base.size()) * 8;
  if (c.base.empty() || p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(p) > bits) {
    why = "'" + text + "' is not a CIDR (want address/prefix, such as 10.96.0.0/12)";
    return std::nullopt;
  }
  c.prefix = std::stoi(p);
  for (int i = c.prefix; i < bits; ++i) {
    if (c.base[static_cast<size_t>(i / 8)] & (0x80 >> (i % 8))) {
      Cidr masked = c;
      for (int j = c.prefix; j < bits; ++j)
        masked.base[static_cast<size_t>(j / 8)] &= static_cast<unsigned char>(~(0x80 >> (j % 8)));
      why = "'" + text + "' has host bits set (did you mean " + ip_text(masked.base) + "/" + p + "?)";
      return std::nullopt;
    }
  }
  return c;
}

// The n-th address of a subnet (n small).
std::string indexed_ip(const std::string& cidr, unsigned n) {
  std::string why;
  auto c = parse_cidr(cidr, why);
  if (!c) throw Error(ErrorKind::BadInput, why);
  std::vector<unsigned char> b = c->base;
  unsigned carry = n;
  for (size_t i = b.size(); i-- > 0 && carry;) {
    unsigned v = b[i] + carry;
    b[i] = static_cast<unsigned char>(v & 0xff);
    carry = v >> 8;
  }
  return ip_text(b);
}

std::string normalised_ip(const Ctx& c, const YAML::Node& node, const std::string& field) {
  std::string v = scalar(c, node, field);
  auto b = ip_bytes(v);
  if (b.empty()) c.fail(node, field, "'" + v + "' is not an IP address");
  return ip_text(b);
}

std::chrono::seconds duration(const Ctx& c, const YAML::Node& node, const std::string& field) {
  std::string v = scalar(c, node, field);
  std::chrono::seconds d{0};
  try {
    d = parse_go_duration(v);
  } catch (const Error& e) {
    c.fail(node, field, e.what());
  }
  if (d.count() <= 0) c.fail(node, field, "must be a positive duration (got '" + v + "')");
  return d;
}

void check_keys(const Ctx& c, const YAML::Node& map, const std::string& prefix, const std::set<std::string>& known) {
  for (auto it = map.begin(); it != map.end(); ++it) {
    std::string key = it->first.IsScalar() ? it->first.Scalar() : "?";
    if (!known.count(key)) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      c.fail(it->first, prefix + key, "unknown field (known: " + list + ")");
    }
  }
}

std::vector<Node> nodes(const Ctx& c, const YAML::Node& seq, const std::string& field) {
  std::vector<Node> out;
  if (seq.IsNull()) return out;
  if (!seq.IsSequence()) c.fail(seq, field, "must be a list of {name, ip}");
  for (size_t i = 0; i < seq.size(); ++i) {
    const YAML::Node n = seq[i];
    std::string f = field + "[" + std::to_string(i) + "]";
    if (!n.IsMap()) c.fail(n, f, "must be a map with name and ip");
    check_keys(c, n, f + ".", {"name", "ip"});
    if (!n["name"]) c.fail(n, f + ".name", "missing");
    if (!n["ip"]) c.fail(n, f + ".ip", "missing");
    Node node;
    node.name = scalar(c, n["name"], f + ".name");
    if (!is_dns_label(node.name))
      c.fail(n["name"], f + ".name", "'" + node.name + "' is not a DNS label (lowercase letters, digits and '-', at most 63)");
    node.ip = normalised_ip(c, n["ip"], f + ".ip");
    node.line = line_of(n);
    out.push_back(node);
  }
  return out;
}

}  // namespace

const char* ca_role_name(CaRole role) {
  switch (role) {
    case CaRole::Kubernetes: return "kubernetes-ca";
    case CaRole::Etcd: return "etcd-ca";
    case CaRole::FrontProxy: return "front-proxy-ca";
  }
  return "?";
}

bool is_ip_literal(const std::string& text) { return !ip_bytes(text).empty(); }

bool is_dns_label(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char ch : s)
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) return false;
  return s.front() != '-' && s.back() != '-';
}

bool is_dns_subdomain(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string label = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!is_dns_label(label)) return false;
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

std::string https_url(const std::string& host, int port) {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "https://" + h + ":" + std::to_string(port);
}

ClusterSpec ClusterSpec::load(const std::string& path) { return parse(read_config_file(path), path); }

ClusterSpec ClusterSpec::parse(const std::string& yaml, const std::string& file) {
  if (std::optional<ClusterSpec> s = parse_streamed(yaml, file)) return std::move(*s);
  return parse_whole(yaml, file);
}

// The `workers` list read from yaml-cpp's events, so that a cluster of any size parses in about the same
// memory: when the top level is a block map, `workers` (written once, plainly) is a list whose entries are
// maps of plain scalars `name` and `ip`, each once, with no anchor, alias or tag. The key and its list are
// then blanked (every character but line ends becomes a space, so every other line and position stays
// where it was); the rest is read through the node tree as always, and the workers are checked as nodes()
// and the name checks would. Anything else, and any failure, returns nullopt: parse() then reads the
// whole tree and reports what it finds there.
std::optional<ClusterSpec> ClusterSpec::parse_streamed(const std::string& yaml, const std::string& file) {
  static constexpr char kKey[] = "workers";
  static constexpr size_t kKeyLength = sizeof kKey - 1;
  // yaml-cpp counts positions in characters of its UTF-8 stream; text with a byte order mark or in
  // UTF-16/32 would not line up with the bytes here.
  if (yaml.empty() || static_cast<unsigned char>(yaml[0]) >= 0x80 || yaml[0] == '\0' ||
      (yaml.size() > 1 && yaml[1] == '\0'))
    return std::nullopt;

  class Reader final : public YAML::EventHandler {
   public:
    bool usable = true;
    bool top_block = false;
    long key_pos = -1;  // where `workers` is written
    long end_pos = -1;  // where its value ends: the next top-level key, or the end of the text
    bool after_workers = false;  // the list ended; the next top-level key ends its text
    std::vector<StreamedNode> items;

    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnAnchor(const YAML::Mark&, const std::string&) override { give_up(); }
    void OnNull(const YAML::Mark&, YAML::anchor_t anchor) override {
      if (anchor != YAML::NullAnchor) give_up();
      value(nullptr, YAML::Mark());
    }
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override { give_up(); }
    void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor, const std::string& v) override {
      if (anchor != YAML::NullAnchor || (tag != "?" && tag != "!")) give_up();
      value(&v, mark);
    }
    void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                         YAML::EmitterStyle::value) override {
      if (anchor != YAML::NullAnchor || (tag != "?" && !tag.empty())) give_up();
      open(false, mark);
    }
    void OnSequenceEnd() override { close(); }
    void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                    YAML::EmitterStyle::value style) override {
      if (anchor != YAML::NullAnchor || (tag != "?" && !tag.empty())) give_up();
      if (m_stack.empty()) top_block = style == YAML::EmitterStyle::Block;
      open(true, mark);
    }
    void OnMapEnd() override {
      if (m_stack.size() == 1 && after_workers && end_pos == -1) end_pos = -2;  // to the end of the text
      close();
    }

   private:
    struct Level {
      bool map;
      bool expecting_key = true;  // maps: the next scalar is a key
    };
    std::vector<Level> m_stack;
    bool m_workers_value_next = false;  // the top-level key just read is `workers`
    bool m_in_workers = false;          // inside the workers list (depth 2 and below)
    std::string m_item_key;             // the key just read in an entry
    bool m_has_name = false, m_has_ip = false;

    void give_up() { usable = false; }
    // A scalar or null at the current level.
    void value(const std::string* v, const YAML::Mark& mark) {
      if (!usable) return;
      const size_t depth = m_stack.size();
      if (depth == 0) return give_up();  // a document that is one scalar
      Level& top = m_stack.back();
      if (depth == 1) {  // the top-level map: keys and values
        if (!top.map) return give_up();
        if (top.expecting_key) {
          if (!v) return give_up();
          if (after_workers && end_pos == -1) end_pos = mark.pos;
          if (*v == kKey) {
            if (key_pos >= 0) return give_up();  // written twice: the tree reports it
            key_pos = mark.pos;
            m_workers_value_next = true;
          }
        } else if (m_workers_value_next) {
          return give_up();  // `workers:` with a scalar or nothing
        }
        top.expecting_key = !top.expecting_key;
        return;
      }
      if (!m_in_workers) {  // elsewhere: read by the tree
        if (top.map) top.expecting_key = !top.expecting_key;
        return;
      }
      if (depth != 3 || !top.map || !v) return give_up();
      if (top.expecting_key) {
        m_item_key = *v;
        bool& seen = m_item_key == "name" ? m_has_name : m_has_ip;
        if ((m_item_key != "name" && m_item_key != "ip") || seen) return give_up();
        seen = true;
      } else {
        (m_item_key == "name" ? items.back().name : items.back().ip) = *v;
      }
      top.expecting_key = !top.expecting_key;
    }
    void open(bool map, const YAML::Mark& mark) {
      if (!usable) return;
      const size_t depth = m_stack.size();
      if (depth == 1) {  // a collection as a top-level value (or key)
        if (m_stack.back().expecting_key) return give_up();
        if (m_workers_value_next) {
          if (map) return give_up();
          m_in_workers = true;
        }
      } else if (m_in_workers) {
        if (depth != 2 || !map) return give_up();  // entries are maps, holding scalars only
        items.push_back(StreamedNode{{}, {}, mark.line >= 0 ? mark.line + 1 : 0});
        m_has_name = m_has_ip = false;
      }
      m_stack.push_back(Level{map});
    }
    void close() {
      if (!usable || m_stack.empty()) return;
      const size_t depth = m_stack.size();
      if (m_in_workers && depth == 3 && !(m_has_name && m_has_ip)) return give_up();
      m_stack.pop_back();
      if (depth == 2 && m_in_workers) {
        m_in_workers = false;
        m_workers_value_next = false;
        after_workers = true;
      }
      if (!m_stack.empty() && m_stack.back().map) m_stack.back().expecting_key = true;
    }
  };

  Reader r;
  try {
    std::istringstream in(yaml);
    YAML::Parser parser(in);
    parser.HandleNextDocument(r);
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
  if (!r.usable || !r.top_block || r.key_pos < 0 || r.items.empty() || !r.after_workers || r.end_pos == -1)
    return std::nullopt;
  const size_t key = static_cast<size_t>(r.key_pos);
  const size_t from = key + kKeyLength;
  const size_t end = r.end_pos == -2 ? yaml.size() : static_cast<size_t>(r.end_pos);
  // The key as written, unquoted; the key and its value are blanked.
  if (end > yaml.size() || from >= end || yaml.compare(key, kKeyLength, kKey) != 0 ||
      (yaml[from] != ':' && yaml[from] != ' ' && yaml[from] != '\t'))
    return std::nullopt;
  std::string text = yaml;
  for (size_t i = key; i < end; ++i)
    if (text[i] != '\n' && text[i] != '\r') text[i] = ' ';
  try {
    return parse_tree(text, file, &r.items);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

ClusterSpec ClusterSpec::parse_whole(const std::string& yaml, const std::string& file) {
  return parse_tree(yaml, file, nullptr);
}

ClusterSpec ClusterSpec::parse_tree(const std::string& yaml, const std::string& file,
                                    const std::vector<StreamedNode>* streamed_workers) {
  Ctx c{file};
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::BadInput, file + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  refuse_duplicate_keys(root, file);
  if (!root.IsMap()) throw Error(ErrorKind::BadInput, file + ":1: the cluster file must be a YAML map");
  check_keys(c, root, "",
             {"name", "kubernetesVersion", "controlPlaneEndpoint", "apiServerPort", "serviceSubnet", "podSubnet",
              "dnsDomain", "controlPlane", "etcd", "workers", "apiServerCertSANs", "keyAlgorithm", "caKeyAlgorithm",
              "validity", "cas", "seedExtras", "installDir", "etcdClientPort", "etcdPeerPort"});

  ClusterSpec s;
  s.file = file;
  auto note = [&](const std::string& field, const YAML::Node& n) { s.lines[field] = line_of(n); };

  if (auto n = root["name"]) {
    s.name = scalar(c, n, "name");
    if (!is_dns_subdomain(s.name)) c.fail(n, "name", "'" + s.name + "' is not a DNS name");
    note("name", n);
  }
  if (auto n = root["kubernetesVersion"]) {
    std::string v = scalar(c, n, "kubernetesVersion");
    std::string t = (!v.empty() && v[0] == 'v') ? v.substr(1) : v;
    int parts[3] = {0, 0, 0};
    int count = 0;
    size_t start = 0;
    bool okv = !t.empty();
    while (okv && count < 3) {
      size_t dot = t.find('.', start);
      std::string p = t.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (p.empty() || p.size() > 4 || p.find_first_not_of("0123456789") != std::string::npos) { okv = false; break; }
      parts[count++] = std::stoi(p);
      if (dot == std::string::npos) break;
      start = dot + 1;
      if (count == 3) okv = false;
    }
    if (!okv || count < 2 || parts[0] != 1)
      c.fail(n, "kubernetesVersion", "'" + v + "' is not a Kubernetes version (want 1.MINOR or 1.MINOR.PATCH, such as 1.30)");
    s.kubernetes_version = t;
    s.version_major = parts[0];
    s.version_minor = parts[1];
    s.version_patch = parts[2];
    note("kubernetesVersion", n);
  }
  if (auto n = root["apiServerPort"]) {
    s.api_server_port = port(c, n, "apiServerPort");
    note("apiServerPort", n);
  }
  if (auto n = root["etcdClientPort"]) s.etcd_client_port = port(c, n, "etcdClientPort");
  if (auto n = root["etcdPeerPort"]) s.etcd_peer_port = port(c, n, "etcdPeerPort");
  if (auto n = root["controlPlaneEndpoint"]) {
    std::string v = scalar(c, n, "controlPlaneEndpoint");
    std::string host = v, portpart;
    if (!v.empty() && v[0] == '[') {
      auto close = v.find(']');
      if (close == std::string::npos) c.fail(n, "controlPlaneEndpoint", "'" + v + "' has an unclosed '['");
      host = v.substr(1, close - 1);
      if (close + 1 < v.size()) {
        if (v[close + 1] != ':') c.fail(n, "controlPlaneEndpoint", "'" + v + "' is not host[:port]");
        portpart = v.substr(close + 2);
      }
      if (!is_ip_literal(host)) c.fail(n, "controlPlaneEndpoint", "'" + host + "' is not an IP address");
    } else if (std::count(v.begin(), v.end(), ':') == 1) {
      host = v.substr(0, v.find(':'));
      portpart = v.substr(v.find(':') + 1);
    }
    if (!portpart.empty() || (v.size() && v.back() == ':')) {
      if (portpart.empty() || portpart.find_first_not_of("0123456789") != std::string::npos || portpart.size() > 5 ||
          std::stoi(portpart) < 1 || std::stoi(portpart) > 65535)
        c.fail(n, "controlPlaneEndpoint", "'" + portpart + "' is not a port number");
    }
    if (host.empty() || !(is_ip_literal(host) || is_dns_subdomain(host)))
      c.fail(n, "controlPlaneEndpoint", "'" + host + "' is neither an IP address nor a DNS name");
    if (auto b = ip_bytes(host); !b.empty()) host = ip_text(b);
    s.control_plane_endpoint = portpart.empty() ? host : (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + portpart;
    note("controlPlaneEndpoint", n);
  }
  if (auto n = root["serviceSubnet"]) {
    std::string v = scalar(c, n, "serviceSubnet");
    std::string why;
    auto cidr = parse_cidr(v, why);
    if (!cidr) c.fail(n, "serviceSubnet", why);
    int host_bits = static_cast<int>(cidr->base.size()) * 8 - cidr->prefix;
    if (host_bits < 4)
      c.fail(n, "serviceSubnet", "'" + v + "' is too small: it needs at least 16 addresses (the apiserver's service IP and the DNS service's, the 1st and 10th)");
    if (host_bits > 20)
      c.fail(n, "serviceSubnet", "'" + v + "' is too large: kube-apiserver accepts at most 2^20 service addresses (/12 for IPv4, /108 for IPv6)");
    s.service_subnet = ip_text(cidr->base) + "/" + std::to_string(cidr->prefix);
    note("serviceSubnet", n);
  }
  if (auto n = root["podSubnet"]) {
    std::string v = scalar(c, n, "podSubnet");
    std::string why;
    auto cidr = parse_cidr(v, why);
    if (!cidr) c.fail(n, "podSubnet", why);
    s.pod_subnet = ip_text(cidr->base) + "/" + std::to_string(cidr->prefix);
  }
  if (auto n = root["dnsDomain"]) {
    s.dns_domain = scalar(c, n, "dnsDomain");
    if (!is_dns_subdomain(s.dns_domain)) c.fail(n, "dnsDomain", "'" + s.dns_domain + "' is not a DNS name");
  }
  if (auto n = root["installDir"]) {
    s.install_dir = scalar(c, n, "installDir");
    if (s.install_dir.empty() || s.install_dir[0] != '/') c.fail(n, "installDir", "must be an absolute path");
    while (s.install_dir.size() > 1 && s.install_dir.back() == '/') s.install_dir.pop_back();
  }

  // Nodes.
  if (!root["controlPlane"]) c.fail(root, "controlPlane", "missing: a cluster needs at least one control-plane node");
  s.control_plane = nodes(c, root["controlPlane"], "controlPlane");
  if (s.control_plane.empty()) c.fail(root["controlPlane"], "controlPlane", "is empty: a cluster needs at least one control-plane node");
  if (auto n = root["etcd"]) {
    s.etcd = nodes(c, n, "etcd");
    if (s.etcd.empty()) c.fail(n, "etcd", "is empty (leave it out to run etcd on the control-plane nodes)");
    s.etcd_given = true;
  } else {
    s.etcd = s.control_plane;
  }
  if (streamed_workers) {
    // Read by parse_streamed, whose text has no `workers` left: the same checks as nodes() makes.
    // A failure only sends parse() to the whole tree, which reports it with its own words and line.
    s.workers.reserve(streamed_workers->size());
    for (const StreamedNode& w : *streamed_workers) {
      if (!is_dns_label(w.name)) throw Error(ErrorKind::BadInput, "streamed worker: not a DNS label");
      auto b = ip_bytes(w.ip);
      if (b.empty()) throw Error(ErrorKind::BadInput, "streamed worker: not an IP address");
      s.workers.push_back(Node{w.name, ip_text(b), w.line});
    }
  } else if (auto n = root["workers"]) {
    s.workers = nodes(c, n, "workers");
  }
  // One name, one node: a name may appear in controlPlane and etcd with the same IP (a stacked member),
  // but never twice in one list, never with two IPs, never as a worker and a control-plane node.
  {
    std::map<std::string, std::pair<std::string, std::string>> seen;  // name -> (ip, list)
    auto check = [&](const std::vector<Node>& list, const std::string& field, const YAML::Node& seq) {
      // A streamed list has no nodes to point at: parse() then reads the whole tree, which does.
      auto fail = [&](size_t i, const std::string& f, const std::string& reason) {
        if (seq.IsSequence() && i < seq.size()) c.fail(seq[i], f, reason);
        throw Error(ErrorKind::BadInput, file + ": " + f + ": " + reason);
      };
      std::set<std::string> here;
      for (size_t i = 0; i < list.size(); ++i) {
        const Node& nd = list[i];
        std::string f = field + "[" + std::to_string(i) + "].name";
        if (!here.insert(nd.name).second) fail(i, f, "duplicate node name '" + nd.name + "'");
        auto it = seen.find(nd.name);
        if (it != seen.end()) {
          bool stacked = field == "etcd" && it->second.second == "controlPlane";
          if (!stacked) fail(i, f, "duplicate node name '" + nd.name + "' (already in " + it->second.second + ")");
          if (it->second.first != nd.ip)
            fail(i, f, "node '" + nd.name + "' has IP " + nd.ip + " here but " + it->second.first + " in controlPlane");
        } else {
          seen[nd.name] = {nd.ip, field};
        }
      }
    };
    check(s.control_plane, "controlPlane", root["controlPlane"]);
    if (s.etcd_given) check(s.etcd, "etcd", root["etcd"]);
    if (root["workers"] || streamed_workers) check(s.workers, "workers", root["workers"]);
  }

  if (auto n = root["apiServerCertSANs"]) {
    if (!n.IsSequence()) c.fail(n, "apiServerCertSANs", "must be a list of IP addresses and DNS names");
    for (size_t i = 0; i < n.size(); ++i) {
      std::string f = "apiServerCertSANs[" + std::to_string(i) + "]";
      std::string v = scalar(c, n[i], f);
      if (auto b = ip_bytes(v); !b.empty()) {
        v = ip_text(b);
      } else if (!is_dns_subdomain(v) && !(v.rfind("*.", 0) == 0 && is_dns_subdomain(v.substr(2)))) {
        // kubeadm drops such entries with a warning; a cluster file that says it is a mistake.
        c.fail(n[i], f, "'" + v + "' is neither an IP address nor a DNS name");
      }
      s.api_server_cert_sans.push_back(v);
    }
    note("apiServerCertSANs", n);
  }
  if (auto n = root["keyAlgorithm"]) {
    try {
      s.leaf_key = KeySpec::parse(scalar(c, n, "keyAlgorithm"));
    } catch (const Error& e) {
      c.fail(n, "keyAlgorithm", e.what());
    }
  }
  if (auto n = root["caKeyAlgorithm"]) {
    try {
      s.ca_key_spec = KeySpec::parse(scalar(c, n, "caKeyAlgorithm"));
    } catch (const Error& e) {
      c.fail(n, "caKeyAlgorithm", e.what());
    }
  }
  if (auto n = root["validity"]) {
    if (!n.IsMap()) c.fail(n, "validity", "must be a map with ca and leaf (Go durations such as 87600h)");
    check_keys(c, n, "validity.", {"ca", "leaf"});
    if (n["ca"]) s.ca_validity = duration(c, n["ca"], "validity.ca");
    if (n["leaf"]) s.leaf_validity = duration(c, n["leaf"], "validity.leaf");
  }
  if (auto n = root["seedExtras"]) s.seed_extras = boolean(c, n, "seedExtras");

  if (!root["cas"]) c.fail(root, "cas", "missing: give the key URI of kubernetes-ca, etcd-ca and front-proxy-ca");
  {
    const YAML::Node cas = root["cas"];
    if (!cas.IsMap()) c.fail(cas, "cas", "must be a map: kubernetes-ca, etcd-ca, front-proxy-ca, each {key: URI}");
    check_keys(c, cas, "cas.", {"kubernetes-ca", "etcd-ca", "front-proxy-ca"});
    for (CaRole role : {CaRole::Kubernetes, CaRole::Etcd, CaRole::FrontProxy}) {
      std::string rn = ca_role_name(role);
      const YAML::Node entry = cas[rn];
      if (!entry) c.fail(cas, "cas." + rn, "missing: give {key: <key URI>}");
      if (!entry.IsMap()) c.fail(entry, "cas." + rn, "must be a map {key: <key URI>}");
      check_keys(c, entry, "cas." + rn + ".", {"key"});
      if (!entry["key"]) c.fail(entry, "cas." + rn + ".key", "missing");
      std::string uri = scalar(c, entry["key"], "cas." + rn + ".key");
      auto colon = uri.find(':');
      if (uri.empty() || colon == std::string::npos || colon == 0)
        c.fail(entry["key"], "cas." + rn + ".key", "'" + uri + "' is not a key URI (pkcs11:..., tpm2:...)");
      std::string scheme = uri.substr(0, colon);
      if (scheme == "file")
        c.fail(entry["key"], "cas." + rn + ".key", "a CA key must live in a token or TPM, not in a file");
      note("cas." + rn + ".key", entry["key"]);
      (role == CaRole::Kubernetes ? s.kubernetes_ca_key : role == CaRole::Etcd ? s.etcd_ca_key : s.front_proxy_ca_key) = uri;
    }
  }
  return s;
}

const std::string& ClusterSpec::ca_key(CaRole role) const {
  switch (role) {
    case CaRole::Kubernetes: return kubernetes_ca_key;
    case CaRole::Etcd: return etcd_ca_key;
    case CaRole::FrontProxy: return front_proxy_ca_key;
  }
  return kubernetes_ca_key;
}

std::string ClusterSpec::where(const std::string& field) const {
  auto it = lines.find(field);
  if (it != lines.end() && it->second > 0) return file + ":" + std::to_string(it->second) + ": " + field;
  return file + ": " + field;
}

std::string ClusterSpec::first_service_ip() const { return indexed_ip(service_subnet, 1); }
std::string ClusterSpec::cluster_dns_ip() const { return indexed_ip(service_subnet, 10); }

bool ClusterSpec::version_at_least(int major, int minor) const {
  return version_major > major || (version_major == major && version_minor >= minor);
}

std::string ClusterSpec::endpoint_host() const {
  if (control_plane_endpoint.empty()) return control_plane.front().ip;
  const std::string& v = control_plane_endpoint;
  if (v[0] == '[') return v.substr(1, v.find(']') - 1);
  if (std::count(v.begin(), v.end(), ':') == 1) return v.substr(0, v.find(':'));
  return v;
}

int ClusterSpec::endpoint_port() const {
  const std::string& v = control_plane_endpoint;
  if (v.empty()) return api_server_port;
  if (v[0] == '[') {
    auto close = v.find(']');
    return close + 2 < v.size() ? std::stoi(v.substr(close + 2)) : api_server_port;
  }
  if (std::count(v.begin(), v.end(), ':') == 1) return std::stoi(v.substr(v.find(':') + 1));
  return api_server_port;
}

std::string ClusterSpec::server_url() const { return https_url(endpoint_host(), endpoint_port()); }

std::string ClusterSpec::local_server_url(const Node& node) const { return https_url(node.ip, api_server_port); }

std::vector<Node> ClusterSpec::all_nodes() const {
  std::vector<Node> out;
  std::set<std::string> seen;
  for (const auto* list : {&control_plane, &etcd, &workers})
    for (const Node& n : *list)
      if (seen.insert(n.name).second) out.push_back(n);
  return out;
}

const Node* ClusterSpec::find_node(const std::string& node_name) const {
  for (const auto* list : {&control_plane, &etcd, &workers})
    for (const Node& n : *list)
      if (n.name == node_name) return &n;
  return nullptr;
}

bool ClusterSpec::is_control_plane(const std::string& node) const {
  for (const Node& n : control_plane)
    if (n.name == node) return true;
  return false;
}

bool ClusterSpec::is_etcd_member(const std::string& node) const {
  for (const Node& n : etcd)
    if (n.name == node) return true;
  return false;
}

}  // namespace hwca::core::k8s
