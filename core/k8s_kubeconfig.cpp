#include "core/k8s_kubeconfig.h"

#include "core/base/error.h"
#include "core/base/ossl.h"
#include "core/yaml_keys.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <climits>
#include <memory>

namespace hwca::core::k8s {

namespace {

struct Reader {
  const std::string& file;

  [[noreturn]] void fail(const std::string& field, const std::string& why) const {
    throw Error(ErrorKind::BadInput, file + ": " + field + ": " + why);
  }

  std::string str(const YAML::Node& map, const char* key, const std::string& field) const {
    YAML::Node n = map[key];
    if (!n.IsDefined() || n.IsNull()) return {};
    if (!n.IsScalar()) fail(field, "must be a string");
    return n.Scalar();
  }

  // The entry of `list` (clusters, users, contexts) called `name`, as clientcmd looks it up.
  YAML::Node named(const YAML::Node& root, const char* list, const std::string& name, const std::string& why) const {
    YAML::Node seq = root[list];
    if (seq.IsDefined() && !seq.IsNull() && !seq.IsSequence()) fail(list, "must be a list");
    if (seq.IsDefined() && seq.IsSequence())
      for (const auto& item : seq)
        if (item.IsMap() && item["name"].IsScalar() && item["name"].Scalar() == name) return item;
    fail(list, "no entry named \"" + name + "\" (" + why + ")");
  }
};

std::string decode_base64(const std::string& text, const std::string& what) {
  std::unique_ptr<EVP_ENCODE_CTX, OsslDeleter<&EVP_ENCODE_CTX_free>> ctx(EVP_ENCODE_CTX_new());
  if (!ctx) throw_openssl(ErrorKind::Internal, "EVP_ENCODE_CTX_new");
  if (text.size() > static_cast<size_t>(INT_MAX) / 2) throw Error(ErrorKind::BadInput, what + ": too large");
  EVP_DecodeInit(ctx.get());
  std::string out(text.size() / 4 * 3 + 4, '\0');
  int len = 0, fin = 0;
  if (EVP_DecodeUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len,
                       reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size())) < 0 ||
      EVP_DecodeFinal(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len, &fin) != 1) {
    drain_openssl_errors();
    throw Error(ErrorKind::BadInput, what + ": not valid base64");
  }
  out.resize(static_cast<size_t>(len + fin));
  return out;
}

std::string folder_of(const std::string& file) {
  auto slash = file.rfind('/');
  return slash == std::string::npos ? std::string(".") : file.substr(0, slash == 0 ? 1 : slash);
}

// A file a kubeconfig names: relative paths are relative to the kubeconfig's own folder.
std::string read_referenced(const std::string& base, const std::string& path, const std::string& what) {
  const std::string full = path.empty() || path[0] == '/' ? path : base + "/" + path;
  try {
    return read_file(full);
  } catch (const Error& e) {
    throw Error(e.kind(), what + ": " + e.what());
  }
}

// https://host[:port][/prefix]; IPv6 literals in brackets.
void split_server(const Reader& r, ClientConfig& c) {
  const std::string& url = c.server;
  const std::string scheme = "https://";
  if (url.compare(0, scheme.size(), scheme) != 0)
    r.fail("clusters[].cluster.server", "\"" + url + "\" is not an https:// URL (hwca talks to the API server over TLS only)");
  std::string rest = url.substr(scheme.size());
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (prefix.find_first_of("?#") != std::string::npos)
    r.fail("clusters[].cluster.server", "\"" + url + "\" has a query or fragment");
  if (authority.find('@') != std::string::npos)
    r.fail("clusters[].cluster.server", "user information in the URL is not supported");
  std::string host, port;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos) r.fail("clusters[].cluster.server", "\"" + url + "\": unclosed [ in the host");
    host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') r.fail("clusters[].cluster.server", "\"" + url + "\": junk after the host");
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (host.empty()) r.fail("clusters[].cluster.server", "\"" + url + "\" has no host");
  if (port.empty()) port = "443";
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) == 0 ||
      std::stoi(port) > 65535)
    r.fail("clusters[].cluster.server", "\"" + url + "\" has an invalid port");
  c.host = host;
  c.port = port;
  c.path_prefix = prefix;
}

}  // namespace

ClientConfig ClientConfig::load(const std::string& path, const std::string& context) {
  return parse(read_file(path), path, context);
}

ClientConfig ClientConfig::parse(const std::string& yaml, const std::string& file, const std::string& context) {
  Reader r{file};
  ClientConfig c;
  c.file = file;
  const std::string base = folder_of(file);
  try {
    YAML::Node root = YAML::Load(yaml);
    refuse_duplicate_keys(root, file);
    if (!root.IsMap()) throw Error(ErrorKind::BadInput, file + ": not a kubeconfig (expected a mapping)");
    const std::string kind = r.str(root, "kind", "kind");
    if (!kind.empty() && kind != "Config") r.fail("kind", "\"" + kind + "\" is not Config");
    c.context = context.empty() ? r.str(root, "current-context", "current-context") : context;
    if (c.context.empty()) r.fail("current-context", "missing (and no --context given)");
    YAML::Node ctx = r.named(root, "contexts", c.context, "the context to use")["context"];
    if (!ctx.IsMap()) r.fail("contexts[" + c.context + "].context", "must be a mapping");
    const std::string cluster_name = r.str(ctx, "cluster", "contexts[].context.cluster");
    const std::string user_name = r.str(ctx, "user", "contexts[].context.user");
    if (cluster_name.empty()) r.fail("contexts[" + c.context + "].context.cluster", "missing");
    if (user_name.empty()) r.fail("contexts[" + c.context + "].context.user", "missing");

    YAML::Node cl = r.named(root, "clusters", cluster_name, "named by context " + c.context)["cluster"];
    if (!cl.IsMap()) r.fail("clusters[" + cluster_name + "].cluster", "must be a mapping");
    c.server = r.str(cl, "server", "clusters[].cluster.server");
    if (c.server.empty()) r.fail("clusters[" + cluster_name + "].cluster.server", "missing");
    split_server(r, c);
    if (cl["insecure-skip-tls-verify"].IsDefined() && cl["insecure-skip-tls-verify"].as<std::string>() == "true")
      r.fail("clusters[" + cluster_name + "].cluster.insecure-skip-tls-verify",
             "is true; hwca always verifies the API server's certificate");
    c.tls_server_name = r.str(cl, "tls-server-name", "clusters[].cluster.tls-server-name");
    if (std::string data = r.str(cl, "certificate-authority-data", "certificate-authority-data"); !data.empty())
      c.ca_pem = decode_base64(data, file + ": clusters[" + cluster_name + "].cluster.certificate-authority-data");
    else if (std::string ca = r.str(cl, "certificate-authority", "certificate-authority"); !ca.empty())
      c.ca_pem = read_referenced(base, ca, file + ": clusters[" + cluster_name + "].cluster.certificate-authority");
    else
      r.fail("clusters[" + cluster_name + "].cluster",
             "no certificate-authority(-data): hwca verifies the API server against the cluster's CA, never the system store");

    YAML::Node u = r.named(root, "users", user_name, "named by context " + c.context)["user"];
    if (!u.IsMap()) r.fail("users[" + user_name + "].user", "must be a mapping");
    for (const char* unsupported : {"exec", "auth-provider", "username", "password"})
      if (u[unsupported].IsDefined())
        r.fail(std::string("users[") + user_name + "].user." + unsupported,
               "is not supported (use a client certificate or a bearer token)");
    const std::string where = "users[" + user_name + "].user";
    if (std::string d = r.str(u, "client-certificate-data", "client-certificate-data"); !d.empty())
      c.client_cert_pem = decode_base64(d, file + ": " + where + ".client-certificate-data");
    else if (std::string f = r.str(u, "client-certificate", "client-certificate"); !f.empty())
      c.client_cert_pem = read_referenced(base, f, file + ": " + where + ".client-certificate");
    if (std::string d = r.str(u, "client-key-data", "client-key-data"); !d.empty())
      c.client_key_pem = decode_base64(d, file + ": " + where + ".client-key-data");
    else if (std::string f = r.str(u, "client-key", "client-key"); !f.empty())
      c.client_key_pem = read_referenced(base, f, file + ": " + where + ".client-key");
    c.token = r.str(u, "token", "token");
    if (c.token.empty())
      if (std::string f = r.str(u, "tokenFile", "tokenFile"); !f.empty()) {
        c.token = read_referenced(base, f, file + ": " + where + ".tokenFile");
        while (!c.token.empty() && (c.token.back() == '\n' || c.token.back() == '\r')) c.token.pop_back();
      }
    if (c.client_cert_pem.empty() != c.client_key_pem.empty())
      r.fail(where, c.client_cert_pem.empty() ? "a client key without a client certificate"
                                              : "a client certificate without its key");
    if (c.client_cert_pem.empty() && c.token.empty())
      r.fail(where, "no credentials (client-certificate-data and client-key-data, or token)");
    if (c.token.find_first_of("\r\n") != std::string::npos) r.fail(where + ".token", "contains a line break");
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::BadInput, file + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return c;
}

}  // namespace hwca::core::k8s
