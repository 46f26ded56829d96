// Batched ledger commits: group commit of concurrent record() calls, and all-or-nothing batches.
#include "core_helpers.h"

#include "core/engine.h"
#include "core/ledger.h"

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <openssl/pem.h>
#include <sqlite3.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace hwca;
using namespace hwca::core;
using namespace hwca::test;

namespace {

struct Ca {
  EVP_PKEY_ptr key = generate_software_key(KeySpec{KeySpec::Type::Ec, 256});
  X509_ptr cert;
  Profile root = initca_profile();
  Profile leaf = builtin_profile("client");
};

X509_ptr make_root(Ca& ca, Ledger& ledger) {
  IssueRequest r;
  r.subject = cn_name("batch root");
  r.public_key = ca.key.get();
  r.profile = &ca.root;
  r.requester = "test";
  return Issuer(nullptr, ca.key.get(), ledger).issue(r);
}

// A ledger in a temporary folder, a software root recorded in it, and an Issuer under that root.
struct Issuing {
  TempDir dir;
  std::string path = dir.path() + "/ledger.db";
  std::unique_ptr<Ledger> ledger = Ledger::open(path);
  Ca ca;
  Issuer issuer{(ca.cert = make_root(ca, *ledger)).get(), ca.key.get(), *ledger};
};

void exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
  INFO(msg);
}

}  // namespace

TEST_CASE_METHOD(Issuing, "ledger: concurrent issue() calls are all recorded, once each", "[core][ledger]") {
  EVP_PKEY_ptr leaf_key = generate_software_key(KeySpec{KeySpec::Type::Ec, 256});

  constexpr int kThreads = 4, kEach = 50;
  std::vector<std::vector<std::string>> serials(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int i = 0; i < kEach; ++i) {
          IssueRequest r;
          r.subject = cn_name("t" + std::to_string(t) + "-" + std::to_string(i));
          r.public_key = leaf_key.get();
          r.profile = &ca.leaf;
          r.requester = "test";
          X509_ptr cert = issuer.issue(r);
          serials[static_cast<size_t>(t)].push_back(serial_hex(X509_get0_serialNumber(cert.get())));
        }
      } catch (...) {
        ++failures;
      }
    });
  }
  for (auto& th : pool) th.join();
  REQUIRE(failures == 0);
  auto rows = ledger->list();
  CHECK(rows.size() == 1 + kThreads * kEach);
  std::set<std::string> in_ledger;
  for (const auto& e : rows) in_ledger.insert(e.serial);
  CHECK(in_ledger.size() == rows.size());
  for (const auto& v : serials)
    for (const auto& s : v) CHECK(in_ledger.count(s) == 1);
}

TEST_CASE_METHOD(Issuing, "ledger: in a group commit, a refused record fails alone", "[core][ledger]") {
  exec(path, "CREATE TRIGGER refuse_bad BEFORE INSERT ON certificates WHEN NEW.subject LIKE '%refuse-me%' "
             "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END;");
  EVP_PKEY_ptr leaf_key = generate_software_key(KeySpec{KeySpec::Type::Ec, 256});

  std::atomic<int> ok{0}, refused{0}, other{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        IssueRequest r;
        bool bad = (i % 5 == 0);
        r.subject = cn_name((bad ? "refuse-me-" : "fine-") + std::to_string(t) + "-" + std::to_string(i));
        r.public_key = leaf_key.get();
        r.profile = &ca.leaf;
        r.requester = "test";
        try {
          issuer.issue(r);
          ++ok;
        } catch (const Error& e) {
          if (std::string(e.what()).find("refused by trigger") != std::string::npos && e.kind() == ErrorKind::Io) ++refused;
          else ++other;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(other == 0);
  CHECK(refused == 4 * 5);
  CHECK(ok == 4 * 20);
  auto rows = ledger->list();
  CHECK(rows.size() == 1 + 4 * 20);
  for (const auto& e : rows) CHECK(e.subject.find("refuse-me") == std::string::npos);
}

TEST_CASE_METHOD(Issuing, "ledger: issue_batch records all or nothing", "[core][ledger]") {
  EVP_PKEY_ptr leaf_key = generate_software_key(KeySpec{KeySpec::Type::Ec, 256});

  std::vector<IssueRequest> reqs(10);
  std::vector<const IssueRequest*> ptrs;
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].subject = cn_name(i == 7 ? "refuse-me" : "batch-" + std::to_string(i));
    reqs[i].public_key = leaf_key.get();
    reqs[i].profile = &ca.leaf;
    reqs[i].requester = "test";
    ptrs.push_back(&reqs[i]);
  }
  auto certs = issuer.issue_batch(ptrs);
  CHECK(certs.size() == 10);
  CHECK(ledger->list().size() == 11);
  for (const auto& c : certs) CHECK(ledger->has_serial(serial_hex(X509_get0_serialNumber(c.get()))));

  exec(path, "CREATE TRIGGER refuse_bad BEFORE INSERT ON certificates WHEN NEW.subject LIKE '%refuse-me%' "
             "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END;");
  Error e = error_of([&] { issuer.issue_batch(ptrs); });
  CHECK(e.kind() == ErrorKind::Io);
  CHECK(std::string(e.what()).find("refused by trigger") != std::string::npos);
  CHECK(ledger->list().size() == 11);  // nothing of the second batch
}

TEST_CASE_METHOD(Issuing, "ledger: issue_batch hands back each certificate's PEM as recorded, encoded once", "[core][ledger]") {
  EVP_PKEY_ptr ec_key = generate_software_key(KeySpec{KeySpec::Type::Ec, 256});
  EVP_PKEY_ptr rsa_key = generate_software_key(KeySpec{KeySpec::Type::Rsa, 2048});

  std::vector<IssueRequest> reqs(6);
  std::vector<const IssueRequest*> ptrs;
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].subject = cn_name("pem-" + std::to_string(i));
    reqs[i].public_key = i % 2 ? rsa_key.get() : ec_key.get();
    reqs[i].profile = &ca.leaf;
    reqs[i].requester = "test";
    ptrs.push_back(&reqs[i]);
  }
  std::vector<std::string> pems{"stale"};
  auto certs = issuer.issue_batch(ptrs, &pems);
  REQUIRE(certs.size() == reqs.size());
  REQUIRE(pems.size() == reqs.size());
  std::map<std::string, std::string> issued_hash;  // serial -> sha256 in the audit entry
  for (const auto& a : ledger->audit_entries()) {
    if (a.kind != "certificate-issued") continue;
    auto detail = nlohmann::json::parse(a.detail);
    issued_hash[detail["serial"].get<std::string>()] = detail["sha256"].get<std::string>();
  }
  for (size_t i = 0; i < certs.size(); ++i) {
    const std::string serial = serial_hex(X509_get0_serialNumber(certs[i].get()));
    // The same bytes as OpenSSL's own PEM writer, the same as the ledger row, and the audit entry's hash
    // is of the DER that PEM holds.
    CHECK(pems[i] == x509_to_pem(certs[i].get()));
    CHECK(der_to_pem(x509_to_der(certs[i].get()), PEM_STRING_X509) == pems[i]);
    auto row = ledger->find(serial);
    REQUIRE(row);
    CHECK(row->pem == pems[i]);
    CHECK(issued_hash[serial] == sha256_hex(x509_to_der(certs[i].get())));
    X509_ptr back = x509_from_pem(pems[i], "pem " + std::to_string(i));
    CHECK(X509_cmp(back.get(), certs[i].get()) == 0);
  }
  // record() (the one-by-one path) writes the same row and hash.
  IssueRequest one;
  one.subject = cn_name("pem-one");
  one.public_key = ec_key.get();
  one.profile = &ca.leaf;
  one.requester = "test";
  X509_ptr single = issuer.issue(one);
  const std::string serial = serial_hex(X509_get0_serialNumber(single.get()));
  auto row = ledger->find(serial);
  REQUIRE(row);
  CHECK(row->pem == x509_to_pem(single.get()));
  auto last = ledger->audit_entries().back();
  CHECK(last.kind == "certificate-issued");
  CHECK(nlohmann::json::parse(last.detail)["sha256"] == sha256_hex(x509_to_der(single.get())));
}
