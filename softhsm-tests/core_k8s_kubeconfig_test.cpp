// Reading a kubeconfig for the long-running signer (core/k8s_kubeconfig.h): the current context's cluster
// and user, relative file references, and every refusal (TLS weakened, unsupported credentials, broken
// structure) as one BadInput error naming the file and field.
#include "core_helpers.h"

#include "core/base/error.h"
#include "core/k8s_kubeconfig.h"

#include <fstream>

using hwca::Error;
using hwca::ErrorKind;
using hwca::test::error_of;
using hwca::test::TempDir;
using hwca::core::k8s::ClientConfig;

namespace {

// base64 of "CA\n", "CERT\n", "KEY\n": the reader decodes, it does not parse PEM.
const char* kCa = "Q0EK";
const char* kCert = "Q0VSVAo=";
const char* kKey = "S0VZCg==";

std::string config(const std::string& server, const std::string& cluster_extra, const std::string& user) {
  return "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: \"" + server + "\"\n" + cluster_extra +
         "users:\n- name: u\n  user:\n" + user + "contexts:\n- name: other\n  context: {cluster: nope, user: nope}\n" +
         "- name: c\n  context: {cluster: k, user: u}\ncurrent-context: c\n";
}
std::string ca_data() { return std::string("    certificate-authority-data: ") + kCa + "\n"; }
std::string cert_user() {
  return std::string("    client-certificate-data: ") + kCert + "\n    client-key-data: " + kKey + "\n";
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

}  // namespace

TEST_CASE("kubeconfig: client certificate and the server URL split", "[core][k8s][kubeconfig]") {
  ClientConfig c = ClientConfig::parse(config("https://10.0.0.1:6443", ca_data(), cert_user()), "/etc/hwca/signer.conf");
  CHECK(c.context == "c");
  CHECK(c.server == "https://10.0.0.1:6443");
  CHECK(c.host == "10.0.0.1");
  CHECK(c.port == "6443");
  CHECK(c.path_prefix.empty());
  CHECK(c.ca_pem == "CA\n");
  CHECK(c.client_cert_pem == "CERT\n");
  CHECK(c.client_key_pem == "KEY\n");
  CHECK(c.token.empty());

  ClientConfig v6 = ClientConfig::parse(config("https://[fd00::1]/k8s/", ca_data(), "    token: abc.def\n"), "x");
  CHECK(v6.host == "fd00::1");
  CHECK(v6.port == "443");
  CHECK(v6.path_prefix == "/k8s");
  CHECK(v6.token == "abc.def");
  CHECK(v6.client_cert_pem.empty());
}

TEST_CASE("kubeconfig: --context picks another context and files are read relative to the kubeconfig", "[core][k8s][kubeconfig]") {
  TempDir dir;
  write(dir / "ca.crt", "FILE-CA\n");
  write(dir / "token", "tok.en\n");
  const std::string text = config("https://api.example:443", "    certificate-authority: ca.crt\n", "    tokenFile: token\n") +
                           "";
  write(dir / "kc.conf", text);
  ClientConfig c = ClientConfig::load(dir / "kc.conf");
  CHECK(c.ca_pem == "FILE-CA\n");
  CHECK(c.token == "tok.en");  // the line break is not part of the token
  CHECK(c.host == "api.example");
  Error e = error_of([&] { ClientConfig::load(dir / "kc.conf", "other"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()).find("no entry named \"nope\"") != std::string::npos);
  // A file the kubeconfig names that is not there: NotFound, naming both.
  write(dir / "missing.conf", config("https://a:1", "    certificate-authority: gone.crt\n", "    token: t\n"));
  Error nf = error_of([&] { ClientConfig::load(dir / "missing.conf"); });
  CHECK(nf.kind() == ErrorKind::NotFound);
  CHECK(std::string(nf.what()).find("certificate-authority") != std::string::npos);
}

TEST_CASE("kubeconfig: what weakens TLS or cannot be used is refused", "[core][k8s][kubeconfig]") {
  struct Case {
    const char* what;
    std::string text;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"http server", config("http://10.0.0.1:8080", ca_data(), cert_user()), "is not an https:// URL"},
      {"no CA", config("https://10.0.0.1", "", cert_user()), "no certificate-authority"},
      {"insecure", config("https://10.0.0.1", ca_data() + "    insecure-skip-tls-verify: true\n", cert_user()),
       "hwca always verifies"},
      {"exec", config("https://10.0.0.1", ca_data(), "    exec: {command: x}\n"), "exec: is not supported"},
      {"basic auth", config("https://10.0.0.1", ca_data(), "    username: a\n    password: b\n"), "is not supported"},
      {"no credentials", config("https://10.0.0.1", ca_data(), "    {}\n"), "no credentials"},
      {"cert without key", config("https://10.0.0.1", ca_data(), std::string("    client-certificate-data: ") + kCert + "\n"),
       "without its key"},
      {"bad base64", config("https://10.0.0.1", "    certificate-authority-data: '***'\n", cert_user()), "not valid base64"},
      {"bad port", config("https://10.0.0.1:99999", ca_data(), cert_user()), "invalid port"},
      {"no host", config("https://:6443", ca_data(), cert_user()), "has no host"},
      {"userinfo", config("https://me@10.0.0.1", ca_data(), cert_user()), "user information"},
      {"query", config("https://10.0.0.1/?x=1", ca_data(), cert_user()), "query or fragment"},
      {"unclosed bracket", config("https://[::1", ca_data(), cert_user()), "unclosed ["},
      {"token with a newline", config("https://10.0.0.1", ca_data(), "    token: \"a\\nb\"\n"), "line break"},
      {"no current-context", "apiVersion: v1\nkind: Config\n", "current-context: missing"},
      {"wrong kind", "kind: Pod\n", "is not Config"},
      {"not a mapping", "- a\n- b\n", "not a kubeconfig"},
      {"bad YAML", "clusters: [\n", "kc.conf:"},
      {"clusters not a list", "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: 3\n",
       "clusters: must be a list"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    Error e = error_of([&] { ClientConfig::parse(c.text, "kc.conf"); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK(std::string(e.what()).find(c.message) != std::string::npos);
    CHECK(std::string(e.what()).find("kc.conf") != std::string::npos);
  }
}

TEST_CASE("kubeconfig: a file reference to an endless device is an error and not a hang", "[core][k8s][kubeconfig]") {
  Error e = error_of([&] { ClientConfig::parse(config("https://10.0.0.1", "    certificate-authority: /dev/zero\n", cert_user()), "kc.conf"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()).find("larger than 64 MiB") != std::string::npos);
}
