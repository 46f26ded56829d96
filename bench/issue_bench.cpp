// hwca issuance from CSRs, the whole path: parse the CSR, check its signature, apply the profile,
// build the X.509, sign through the token (the same key raw_sign measures), and commit to the ledger.
//
//   issue_bench CA-PEM CA-KEY-URI LEDGER WORKERS SECONDS [CSRS] [BATCH]
// CA-KEY-URI is any key URI hwca opens (pkcs11:..., tpm2:handle=...?tcti=..., tpm2:file=..., file:...),
// through the same backends as the hwca command.
// BATCH 1 (default): every certificate is its own issue() call (concurrent workers are group-committed
// by the ledger); BATCH N > 1: each worker takes N CSRs at a time through Issuer::issue_batch, one
// ledger transaction per N, as bulk work (k8s init) does.
// prints: {"workers":W,"certificates":N,"seconds":S,"per_second":R}
#include "core/base/error.h"
#include "core/engine.h"
#include "core/ledger.h"
#include "core/profile.h"
#include "core/x509.h"
#include "tokens/backend.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

using namespace hwca;

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: issue_bench CA-PEM CA-KEY-URI LEDGER WORKERS SECONDS [CSRS] [BATCH]\n");
    return 2;
  }
  try {
    const int workers = std::atoi(argv[4]);
    const double seconds = std::atof(argv[5]);
    const size_t csr_count = argc > 6 ? static_cast<size_t>(std::atol(argv[6])) : 4000;
    const size_t batch = argc > 7 ? static_cast<size_t>(std::atol(argv[7])) : 1;
    if (workers < 1 || workers > 64 || seconds <= 0 || seconds > 120 || csr_count < 1 || batch < 1 || batch > 4096)
      throw Error(ErrorKind::Usage, "bad arguments");

    auto registry = tokens::Registry::with_builtin_backends();
    {
      X509_ptr ca = x509_from_pem(read_file(argv[1]), argv[1]);
      auto key = registry->backend_for(argv[2]).open(argv[2]);
      auto ledger = core::Ledger::open(argv[3]);

      // Pre-generated CSRs (DER), so that leaf key generation is not measured.
      std::vector<std::string> csrs;
      csrs.reserve(csr_count);
      EVP_PKEY_ptr leaf = generate_software_key(KeySpec{KeySpec::Type::Ec, 256});
      for (size_t i = 0; i < csr_count; ++i) {
        auto name = core::make_name({{NID_commonName, "node-" + std::to_string(i) + ".bench.local", false}});
        core::SubjectAltNames sans;
        sans.dns.push_back("node-" + std::to_string(i) + ".bench.local");
        sans.ips.push_back("127.0.0.1");
        X509_REQ_ptr req = core::make_csr(name.get(), sans, leaf.get());
        unsigned char* der = nullptr;
        int len = i2d_X509_REQ(req.get(), &der);
        csrs.emplace_back(reinterpret_cast<char*>(der), static_cast<size_t>(len));
        OPENSSL_free(der);
      }

      core::Profile profile = core::builtin_profile("peer");
      core::Issuer issuer(ca.get(), key->pkey(), *ledger);
      std::atomic<size_t> next{0};
      std::atomic<bool> stop{false};
      std::atomic<bool> failed{false};
      std::atomic<size_t> issued{0};
      auto work = [&] {
        try {
          while (!stop.load(std::memory_order_relaxed)) {
            size_t first = next.fetch_add(batch);
            if (first >= csrs.size()) return;
            size_t last = std::min(first + batch, csrs.size());
            std::vector<X509_REQ_ptr> reqs;
            std::vector<core::IssueRequest> rs(last - first);
            for (size_t i = first; i < last; ++i) {
              X509_REQ_ptr req = csr_from_pem_or_der(csrs[i], "csr");
              core::verify_csr_signature(req.get());
              core::IssueRequest& r = rs[i - first];
              r.subject.reset(X509_NAME_dup(X509_REQ_get_subject_name(req.get())));
              r.sans = core::SubjectAltNames::of_csr(req.get());
              r.public_key = X509_REQ_get0_pubkey(req.get());
              r.profile = &profile;
              r.requester = "bench";
              reqs.push_back(std::move(req));
            }
            if (batch == 1) {
              X509_ptr cert = issuer.issue(rs[0]);
              issued.fetch_add(1, std::memory_order_relaxed);
            } else {
              std::vector<const core::IssueRequest*> ptrs;
              for (auto& r : rs) ptrs.push_back(&r);
              auto certs = issuer.issue_batch(ptrs);
              issued.fetch_add(certs.size(), std::memory_order_relaxed);
            }
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "issue_bench: %s\n", e.what());
          failed = true;
        }
      };
      auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> pool;
      for (int w = 0; w < workers; ++w) pool.emplace_back(work);
      while (!stop) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (t >= seconds || next.load() >= csrs.size()) stop = true;
      }
      for (auto& t : pool) t.join();
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (failed) return 1;
      // Only what issue() returned, i.e. what the ledger committed.
      size_t recorded = issued.load();
      std::printf("{\"workers\":%d,\"batch\":%zu,\"certificates\":%zu,\"seconds\":%.3f,\"per_second\":%.1f}\n", workers, batch, recorded,
                  elapsed, static_cast<double>(recorded) / elapsed);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "issue_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
