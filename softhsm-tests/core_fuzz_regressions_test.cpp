// Inputs that fuzz/ found to crash, hang or exhaust memory, fed back byte for byte: each must end in a
// clean hwca::Error (or success), quickly. docs/fuzzing.md records where each came from.
#include "core_helpers.h"

#include "core/k8s_csr.h"

#include <string>

using hwca::ErrorKind;
using hwca::test::error_of;
using namespace hwca::core::k8s;

// fuzz_k8s_csr, minimised: yaml-cpp 0.7's LoadAll loops forever, allocating until memory runs out, on a
// document whose root is a quoted or flow node followed by a stray ','. `hwca k8s sign-csr` reads such
// a file; it must refuse it.
TEST_CASE("fuzz regression: a CSR object with a stray comma after a quoted root is refused, not a hang") {
  for (const std::string& text : {std::string("\"\","), std::string("\"a\" ,"), std::string("'a',"),
                                 std::string("[a],"), std::string("{a: b},")}) {
    INFO(text);
    auto e = error_of([&] { (void)CsrObject::parse(text, "csr.yaml"); });
    CHECK(e.kind() == ErrorKind::BadInput);
    CHECK(std::string(e.what()).find("csr.yaml") != std::string::npos);
  }
}

// The input the fuzzer first saved (a kubectl-style JSON object whose "spec" key lost its colon).
TEST_CASE("fuzz regression: a JSON CSR object with a key that lost its colon is refused, not a hang") {
  const std::string text = R"({
    "apiVersion": "certificates.k8s.io/v1",
    "kind": "CertificateSigningRequest",
    "metadata": {"name": "csr-node-1-serving"},
    "sQlQxenpPTk9CekhoOEM3Cg",
        "signerName": "kubernetes.io/kubelet-serving",
        "usages": ["digital signature", "server auth"]
    },
    "status": {}
}
)";
  auto e = error_of([&] { (void)CsrObject::parse(text, "csr.json"); });
  CHECK(e.kind() == ErrorKind::BadInput);
}
