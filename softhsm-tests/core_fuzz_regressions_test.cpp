// Inputs that fuzz/ found to crash, hang or exhaust memory, fed back byte for byte: each must end in a
// clean hwca::Error (or success), quickly. docs/fuzzing.md records where each came from.
#include "core_helpers.h"

#include "core/cfssl.h"
#include "core/ceremony.h"
#include "core/k8s_csr.h"
#include "core/shamir.h"
#include "core/base/error.h"
#include "core/base/ossl.h"

#include <openssl/err.h>

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

// The second timeout fuzz_k8s_csr saved (same cause), byte for byte.
TEST_CASE("fuzz regression: k8s_csr timeout-a5538cc1 is refused, not a hang") {
  const std::string text("{\012    \"apiVersion\": \"ceP\005ificates.k8s.io/v1\",\012    \"kind\": \"CertificateSigningRequest\",\012    \"metadata\": {\012        \"name\": \"node-csr-abc\",\012        \"creationTimeid-it-confirmWstamp\": \"2024-05-01T10:00:00Z\",\012        \"resourceVersion\": \"1234\",\012        \"uid\": \"6f1c2d3e-0000-4000-8000-123456789abc\"\012    },\012    \"1CY0dBMVVkRVFRUU1BNkNCbTV2WkdVdApNWWNFQ2dBQUN6QUtCZ2dxaGtqT1BRUURV2clo4Ly92cnM0WjdEbUV0dW9mck93L1F4CnpYOVJkZz09Ci0tLS0tRU5EIENFUlRJRklDQVRFIFJFUVVFU1QtLS0tLQo=\",\012        \"signerName\": \"kubernetes.io/kube-apiserver-client-kubelet\",\012        \"usages\": [\012            \"digital signature\",\012            \"client auth\"\012        ],\012        \"username\": \"system:bootstrap:abcdef\",\012        \"groups\": [\012    spec:        \"system:bootstrappers\"\012        ],\012        \"expirationSeconds\": 3600\012    },\012    \"status\": {}\012}\012", 804);
  auto e = error_of([&] { (void)CsrObject::parse(text, "csr.json"); });
  CHECK(e.kind() == ErrorKind::BadInput);
}

// fuzz_cfssl_config and fuzz_cfssl_csr: a number too large for a double made nlohmann::json throw
// out_of_range (406), which escaped parse_json (it caught only parse_error) and ended hwca with
// std::terminate. Byte for byte as the fuzzer saved them.
TEST_CASE("fuzz regression: cfssl JSON with a number too large is a clean BadInput") {
  const std::string config("{\"signing\":{\"default\":{\"expiry\":\"0h\",\"usages\":[666666666666666666666666666666666666666666666666666666666666666666666666666.6e666666666666666666666666666666666666666666666666666>666666666\000\000\000\00066666666666666666666666666\"sign;nig\"],\"ca_constraint\":{\"is_ca\":true,\":max_path_len\":1.5}}}}", 281);
  auto e1 = error_of([&] { (void)hwca::core::CfsslConfig::parse(config, "ca-config.json"); });
  CHECK(e1.kind() == ErrorKind::BadInput);
  const std::string csr("40e916Tg0li%}", 13);
  auto e2 = error_of([&] { (void)hwca::core::CfsslCsr::parse(csr, "csr.json"); });
  CHECK(e2.kind() == ErrorKind::BadInput);
  auto e3 = error_of([&] { (void)hwca::core::CfsslCsr::parse(R"({"CN": "a", "hosts": [1e999]})", "csr.json"); });
  CHECK(e3.kind() == ErrorKind::BadInput);
}

// fuzz_ceremony: a mapping key that is itself a mapping (`? uri: ...`) threw yaml-cpp's
// TypedBadConversion out of the ceremony parser (std::terminate in `hwca ceremony run`).
TEST_CASE("fuzz regression: a ceremony file with a non-scalar field name is a clean BadInput") {
  const std::string text = "ceremony: crl\ndescription: x\nkey:\n  ? uri: abc\n  : 1\n";
  hwca::Error e = error_of([&] { hwca::core::parse_ceremony(text, "/nonexistent/ceremony.yaml"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  const std::string found = hwca::read_file(std::string(HWCA_SOURCE_DIR) + "/fuzz/regressions/ceremony-crash");
  hwca::Error e2 = error_of([&] { hwca::core::parse_ceremony(found, "/nonexistent/ceremony.yaml"); });
  CHECK(e2.kind() == ErrorKind::BadInput);
}

// fuzz_shamir_share: a share whose index is 1.11111e+114 reached get<int>() (undefined behaviour).
TEST_CASE("fuzz regression: a share file with a huge or fractional index is named as corrupted") {
  const std::string found = hwca::read_file(std::string(HWCA_SOURCE_DIR) + "/fuzz/regressions/shamir-crash");
  hwca::Error e = error_of([&] { hwca::core::share_from_json(found, "share-3"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()).find("share-3") != std::string::npos);
  hwca::Error e2 = error_of([&] {
    hwca::core::share_from_json(R"({"format":"hwca-shamir-share-v1","set":"a","label":"b","index":2.5,"threshold":2,)"
                                R"("shares":3,"value":"00","secret_check":"x","checksum":"y"})",
                                "share-4");
  });
  CHECK(e2.kind() == ErrorKind::BadInput);
}

TEST_CASE("fuzz regression: a name_whitelist repeat count over 1000 is refused before std::regex overflows") {
  // fuzz/regressions/cfssl_config-regex-repeat-overflow: libstdc++'s regex compiler multiplied the count
  // past LONG_MAX (UBSan: signed integer overflow). Go's regexp allows counts up to 1000.
  const std::string found = hwca::read_file(std::string(HWCA_SOURCE_DIR) + "/fuzz/regressions/cfssl_config-regex-repeat-overflow");
  auto e = error_of([&] { (void)hwca::core::CfsslConfig::parse(found, "ca-config.json"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()).find("invalid repeat count") != std::string::npos);
  for (const char* bad : {"a{1001}", "a{2,4444444444444444444}", "(?i)x{99999999999999999999,}"}) {
    INFO(bad);
    CHECK(error_of([&] { (void)hwca::core::compile_name_whitelist(bad); }).kind() == ErrorKind::BadInput);
  }
  for (const char* good : {"a{1000}", "a{2,5}", "a{3,}", "\\{99999\\}", "^[a-z]{1,63}\\.example\\.com$"}) {
    INFO(good);
    CHECK_NOTHROW((void)hwca::core::compile_name_whitelist(good));
  }
}

// Found by the speed of fuzz_k8s_csr (346 exec/s with leak detection, 4,300 without): a refused PEM
// left the OpenSSL error entries' file and function strings allocated until their slots were reused,
// so libFuzzer re-ran most inputs under LeakSanitizer. Errors are now cleared when drained, and a parse
// that succeeds after queuing errors drops them, so no stale text reaches a later, unrelated message.
TEST_CASE("OpenSSL error queue: a refused CSR leaves nothing queued, and a scope drops only its own errors") {
  ERR_clear_error();
  auto e = error_of([] { (void)hwca::csr_from_pem_or_der("-----BEGIN CERTIFICATE REQUEST-----\n!!\n", "req.pem"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(ERR_peek_error() == 0);

  ERR_raise(ERR_LIB_USER, 1);  // queued before: must survive
  {
    hwca::OpensslErrorScope scope;
    ERR_raise(ERR_LIB_USER, 2);
    ERR_raise(ERR_LIB_USER, 3);
  }
  CHECK(ERR_GET_REASON(ERR_get_error()) == 1);
  CHECK(ERR_peek_error() == 0);

  {
    hwca::OpensslErrorScope scope;  // on an empty queue
    ERR_raise(ERR_LIB_USER, 4);
  }
  CHECK(ERR_peek_error() == 0);
}

// fuzz_k8s_csr (the 10-million run): a JSON object with "status" twice. yaml-cpp reads the first, the JSON
// written back keeps the last, so the object sign-csr wrote lost the certificate it had just set.
TEST_CASE("fuzz regression: a CSR object with a key given twice is refused") {
  const std::string found =
      hwca::read_file(std::string(HWCA_SOURCE_DIR) + "/fuzz/regressions/k8s_csr-duplicate-status-key");
  auto e = error_of([&] { (void)CsrObject::parse(found, "csr.json"); });
  CHECK(e.kind() == ErrorKind::BadInput);  // its bytes that are not UTF-8 (below) are met first

  for (const std::string& text :
       {std::string("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nkind: List\n"),
        std::string("{\"apiVersion\": \"certificates.k8s.io/v1\", \"metadata\": {\"name\": \"a\", \"name\": \"b\"}}"),
        std::string("status: {}\nstatus: {certificate: QUFB}\n")}) {
    INFO(text);
    auto dup = error_of([&] { (void)CsrObject::parse(text, "csr.yaml"); });
    CHECK(dup.kind() == ErrorKind::BadInput);
    CHECK(std::string(dup.what()).find("appears twice in one mapping") != std::string::npos);
  }
}

// fuzz_k8s_csr (the 10-million run): metadata.name ending in the byte 0xff. yaml-cpp reads it, its emitter
// writes U+FFFD instead, so the object written back named another CSR. Kubernetes objects are UTF-8
// (go-yaml refuses such bytes); so does hwca, in keys and values, raw or from JSON escapes.
TEST_CASE("fuzz regression: a CSR object with bytes that are not UTF-8 is refused") {
  const std::string found = hwca::read_file(std::string(HWCA_SOURCE_DIR) + "/fuzz/regressions/k8s_csr-invalid-utf8-name");
  auto e = error_of([&] { (void)CsrObject::parse(found, "csr.yaml"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()) == "csr.yaml:4: not valid UTF-8 (Kubernetes objects are UTF-8 text)");
  for (const std::string& text : {std::string("kind: CertificateSigningRequest\nmetadata: {name: \"a\xc0\xaf\"}\n"),
                                  std::string("{\"kind\": \"CertificateSigningRequest\", \"x\xed\xa0\x80\": 1}"),
                                  std::string("kind: CertificateSigningRequest\nmetadata: {name: \xf4\x90\x80\x80}\n")}) {
    INFO(text);
    auto bad = error_of([&] { (void)CsrObject::parse(text, "csr.yaml"); });
    CHECK(bad.kind() == ErrorKind::BadInput);
    CHECK(std::string(bad.what()).find("not valid UTF-8") != std::string::npos);
  }
  CHECK(hwca::core::valid_utf8("n\xc3\xb6" "de-\xe2\x82\xac-\xf0\x9f\x94\x91"));
}

// fuzz_cfssl_config (the third session's 10-million run, after 37,000 executions): the same overflow
// through a back-reference, "\5555...". Go's regexp has no back-references, so they are refused.
TEST_CASE("fuzz regression: a name_whitelist back-reference is refused before std::regex overflows") {
  const std::string found =
      hwca::read_file(std::string(HWCA_SOURCE_DIR) + "/fuzz/regressions/cfssl_config-regex-backref-overflow");
  auto e = error_of([&] { (void)hwca::core::CfsslConfig::parse(found, "ca-config.json"); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()).find("back-references and octal escapes are not supported") != std::string::npos);
  for (const char* bad : {"(a)\\1", "\\5555555555555555555555", "x\\0", "[\\7]"}) {
    INFO(bad);
    CHECK(error_of([&] { (void)hwca::core::compile_name_whitelist(bad); }).kind() == ErrorKind::BadInput);
  }
  for (const char* good : {"\\\\1", "\\.com$", "^node-[0-9]+\\.example$", "\\d{2}"}) {
    INFO(good);
    CHECK_NOTHROW((void)hwca::core::compile_name_whitelist(good));
  }
}
