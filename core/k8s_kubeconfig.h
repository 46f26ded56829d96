// Reading a kubeconfig (clientcmd's v1 Config) for a client of the API server: the current context's
// cluster (server URL, CA) and user (client certificate and key, or a bearer token). Only what a
// controller needs; anything that would weaken TLS (insecure-skip-tls-verify, an http:// server) is
// refused, and so are the kinds of credentials hwca does not speak (exec, auth-provider).
#pragma once

#include <string>

namespace hwca::core::k8s {

struct ClientConfig {
  std::string file;         // where it was read from (for messages)
  std::string context;      // the context used
  std::string server;       // https://host[:port][/prefix], as written
  std::string host;         // host name or IP literal (no brackets)
  std::string port;         // "443" when the URL has none
  std::string path_prefix;  // "" or "/prefix" (no trailing slash)
  std::string ca_pem;       // certificate-authority-data, or the file certificate-authority names
  std::string tls_server_name;  // tls-server-name: the name to verify instead of `host`
  std::string client_cert_pem;  // client-certificate(-data)
  std::string client_key_pem;   // client-key(-data): a secret; never printed
  std::string token;            // token / tokenFile: a secret; never printed

  // Error(BadInput) naming the file and field for anything unusable; Error(NotFound) when the file or a
  // file it names does not exist. Relative file references are resolved against the kubeconfig's folder,
  // as kubectl does. `context` empty: current-context.
  static ClientConfig load(const std::string& path, const std::string& context = "");
  static ClientConfig parse(const std::string& yaml, const std::string& file, const std::string& context = "");
};

}  // namespace hwca::core::k8s
