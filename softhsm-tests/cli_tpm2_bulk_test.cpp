// 10,000 certificates issued in a row through one swtpm key (no resource manager): the backend
// flushes every transient object and closes persistent handles, so the TPM's three object slots are
// never exhausted, and every certificate verifies and is in the ledger exactly once.
#include "support/swtpm.h"

#include "core/engine.h"
#include "core/ledger.h"
#include "core/x509.h"
#include "tokens/backend.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

using namespace hwca;

TEST_CASE("tpm2: ten thousand certificates in a row through one swtpm key", "[cli][tpm2]") {
  ::setenv("TSS2_LOG", "all+NONE", 0);
  test::Swtpm tpm;
  auto registry = tokens::Registry::with_builtin_backends();
  const std::string uri = tpm.handle_uri(0x81000123);
  tokens::KeyBackend& backend = registry->backend_for(uri);
  auto ca_key = backend.generate(uri, tokens::GenerateOptions{KeySpec::parse("ecdsa-p256")});
  auto ledger = core::Ledger::open(tpm.file("ledger.db"));

  core::Profile root_profile = core::initca_profile();
  core::IssueRequest root;
  root.subject = core::parse_subject("/CN=swtpm bulk root");
  root.public_key = ca_key->public_key();
  root.profile = &root_profile;
  root.requester = "test";
  X509_ptr ca = core::Issuer(nullptr, ca_key->pkey(), *ledger).issue(root);

  core::Profile leaf = core::builtin_profile("client");
  core::Issuer issuer(ca.get(), ca_key->pkey(), *ledger);
  EVP_PKEY_ptr leaf_key = generate_software_key(KeySpec::parse("ecdsa-p256"));
  std::vector<X509*> roots{ca.get()};
  std::set<std::string> serials;
  constexpr int kTotal = 10000, kChunk = 500;
  for (int first = 0; first < kTotal; first += kChunk) {
    std::vector<core::IssueRequest> reqs(kChunk);
    std::vector<const core::IssueRequest*> ptrs;
    for (int i = 0; i < kChunk; ++i) {
      auto& r = reqs[static_cast<size_t>(i)];
      r.subject = core::parse_subject("/CN=node-" + std::to_string(first + i));
      r.public_key = leaf_key.get();
      r.profile = &leaf;
      r.requester = "test";
      ptrs.push_back(&r);
    }
    // One in every chunk also goes through the single-certificate path.
    X509_ptr single = issuer.issue(reqs[0]);
    REQUIRE(core::verify_chain(single.get(), roots) == "");
    serials.insert(serial_hex(X509_get0_serialNumber(single.get())));
    auto certs = issuer.issue_batch(ptrs);
    REQUIRE(certs.size() == static_cast<size_t>(kChunk));
    for (const auto& c : certs) {
      REQUIRE(core::verify_chain(c.get(), roots) == "");
      serials.insert(serial_hex(X509_get0_serialNumber(c.get())));
    }
  }
  const size_t issued = static_cast<size_t>(kTotal + kTotal / kChunk);
  CHECK(serials.size() == issued);
  CHECK(ledger->list().size() == issued + 1);  // + the root
}
