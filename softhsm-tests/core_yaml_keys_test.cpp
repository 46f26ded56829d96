// A key given twice in one mapping of a file hwca reads (cluster file, ceremony file, kubeconfig) is
// refused with the line, not resolved by taking the first (core/yaml_keys.h); aliases cannot make the
// check slow or endless.
#include "core_helpers.h"

#include "core/base/error.h"
#include "core/ceremony.h"
#include "core/k8s_cluster.h"
#include "core/k8s_kubeconfig.h"
#include "core/k8s_layout.h"
#include "core/yaml_keys.h"

#include <string>

using hwca::Error;
using hwca::ErrorKind;
using hwca::test::error_of;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;

namespace {

std::string example(const std::string& rel) { return hwca::read_file(std::string(HWCA_SOURCE_DIR) + "/examples/" + rel); }

// `text` with `extra` inserted right after the first line that starts with `after`.
std::string with_line_after(const std::string& text, const std::string& after, const std::string& extra) {
  size_t at = text.find("\n" + after);
  REQUIRE(at != std::string::npos);
  size_t eol = text.find('\n', at + 1);
  REQUIRE(eol != std::string::npos);
  return text.substr(0, eol + 1) + extra + "\n" + text.substr(eol + 1);
}

void refuse(const std::string& yaml, const std::string& what) { hwca::core::refuse_duplicate_keys(YAML::Load(yaml), what); }

const std::string kKubeconfig =
    "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\n"
    "    certificate-authority-data: Q0EK\nusers:\n- name: u\n  user:\n    client-certificate-data: Q0VSVAo=\n"
    "    client-key-data: S0VZCg==\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\ncurrent-context: c\n";

}  // namespace

TEST_CASE("yaml keys: a key twice in one mapping is refused with its line, anywhere in the document", "[core][yaml]") {
  CHECK_NOTHROW(refuse("a: 1\nb: {a: 1, b: 2}\nc: [{a: 1}, {a: 2}]\n", "f.yaml"));
  CHECK_NOTHROW(refuse("", "f.yaml"));
  CHECK_NOTHROW(refuse("just a scalar", "f.yaml"));

  Error top = error_of([] { refuse("a: 1\nb: 2\na: 3\n", "f.yaml"); });
  CHECK(top.kind() == ErrorKind::BadInput);
  CHECK_THAT(top.what(), Equals("f.yaml:3: the key \"a\" appears twice in one mapping"));
  CHECK_THAT(error_of([] { refuse("x:\n  - y: {p: 1, q: 2, p: 3}\n", "f.yaml"); }).what(),
             Equals("f.yaml:2: the key \"p\" appears twice in one mapping"));
  // A quoted and a plain spelling are the same key to every reader.
  CHECK_THAT(error_of([] { refuse("\"a\": 1\na: 2\n", "f.yaml"); }).what(), Contains("the key \"a\" appears twice"));
  // Keys that are not scalars are not compared, but what is under them is.
  CHECK_NOTHROW(refuse("? [a]\n: 1\n? [a]\n: 2\n", "f.yaml"));
  CHECK_THROWS_AS(refuse("? {k: 1, k: 2}\n: 1\n", "f.yaml"), Error);
}

TEST_CASE("yaml keys: aliases are examined once (no exponential walk, no endless loop)", "[core][yaml]") {
  // Nine levels of ten aliases each: a naive walk would visit 10^9 nodes.
  std::string laughs = "l0: &l0 {a: 1, b: 2}\n";
  for (int i = 1; i <= 9; ++i) {
    laughs += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) laughs += std::string(j ? ", " : "") + "*l" + std::to_string(i - 1);
    laughs += "]\n";
  }
  CHECK_NOTHROW(refuse(laughs, "laughs.yaml"));
  CHECK_THAT(error_of([&] { refuse("l0: &l0 {a: 1, a: 2}\nl1: [*l0, *l0, *l0]\n", "f.yaml"); }).what(),
             Contains("the key \"a\" appears twice"));
  // An alias inside the node it names: yaml-cpp builds a cycle.
  YAML::Node cycle;
  try {
    cycle = YAML::Load("&a [*a, {k: 1}]\n");
  } catch (const YAML::Exception&) {
    return;  // this yaml-cpp refuses the document: nothing to walk
  }
  CHECK_NOTHROW(hwca::core::refuse_duplicate_keys(cycle, "cycle.yaml"));
}

TEST_CASE("yaml keys: cluster files, ceremony files and kubeconfigs refuse a key given twice", "[core][yaml]") {
  const std::string cluster = example("seed-cluster.yaml");
  CHECK_NOTHROW(hwca::core::k8s::ClusterSpec::parse(cluster, "seed.yaml"));
  Error c = error_of([&] { hwca::core::k8s::ClusterSpec::parse(with_line_after(cluster, "name:", "name: other"), "seed.yaml"); });
  CHECK(c.kind() == ErrorKind::BadInput);
  CHECK_THAT(c.what(), Contains("seed.yaml:"));
  CHECK_THAT(c.what(), Contains(": the key \"name\" appears twice in one mapping"));

  const std::string root = example("ceremonies/root.yaml");
  CHECK_NOTHROW(hwca::core::parse_ceremony(root, "/nonexistent/root.yaml"));
  // The second validity would be ignored by a reader that takes the first: a ten-year root, not one hour.
  Error r = error_of([&] {
    hwca::core::parse_ceremony(with_line_after(root, "  validity:", "  validity: 1h"), "/nonexistent/root.yaml");
  });
  CHECK(r.kind() == ErrorKind::BadInput);
  CHECK_THAT(r.what(), Contains("ceremony file /nonexistent/root.yaml:"));
  CHECK_THAT(r.what(), Contains(": the key \"validity\" appears twice in one mapping"));

  CHECK_NOTHROW(hwca::core::k8s::ClientConfig::parse(kKubeconfig, "kc.conf", ""));
  const std::string twice = with_line_after(kKubeconfig, "current-context:", "current-context: other");
  Error k = error_of([&] { hwca::core::k8s::ClientConfig::parse(twice, "kc.conf", ""); });
  CHECK(k.kind() == ErrorKind::BadInput);
  CHECK_THAT(k.what(), Equals("kc.conf:17: the key \"current-context\" appears twice in one mapping"));

  Error p = error_of([&] { hwca::core::k8s::parse_kubeconfig(twice, "admin.conf"); });
  CHECK(p.kind() == ErrorKind::BadInput);
  CHECK_THAT(p.what(), Equals("admin.conf:17: the key \"current-context\" appears twice in one mapping"));
}
