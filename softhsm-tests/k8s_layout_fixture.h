// What the k8s layout tests share (core_k8s_test.cpp, core_k8s_orphan_test.cpp): software CA keys
// behind the KeySource port (core tests use no token), and one init's temporary folder, ledger and
// options.
#pragma once

#include "core_helpers.h"

#include "core/k8s_layout.h"
#include "core/ledger.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace hwca::test {

class SoftKey final : public core::k8s::CaKey {
 public:
  explicit SoftKey(EVP_PKEY* k) : m_key(hwca::share(k)) {}
  EVP_PKEY* pkey() const override { return m_key.get(); }
  EVP_PKEY* public_key() const override { return m_key.get(); }

 private:
  hwca::EVP_PKEY_ptr m_key;
};

class SoftKeys final : public core::k8s::KeySource {
 public:
  std::map<std::string, hwca::EVP_PKEY_ptr> keys;
  int generated = 0;
  bool exists(const std::string& uri) override { return keys.count(uri) > 0; }
  std::unique_ptr<core::k8s::CaKey> open(const std::string& uri) override {
    return std::make_unique<SoftKey>(keys.at(uri).get());
  }
  std::unique_ptr<core::k8s::CaKey> generate(const std::string& uri, const hwca::KeySpec& spec) override {
    keys[uri] = hwca::generate_software_key(spec);
    ++generated;
    return open(uri);
  }
};

// A temporary folder with a ledger, software CA keys, and init options writing to <tmp>/out; every
// line init reports is kept in `lines`.
struct LayoutRun {
  TempDir tmp;
  std::unique_ptr<core::Ledger> ledger = core::Ledger::open(tmp / "ledger.db");
  SoftKeys keys;
  std::vector<std::string> lines;
  core::k8s::InitOptions opt;

  LayoutRun() {
    opt.out = tmp / "out";
    opt.requester = "cli:k8s init";
    opt.report = [this](const std::string& l) { lines.push_back(l); };
  }
  LayoutRun(const LayoutRun&) = delete;
  LayoutRun& operator=(const LayoutRun&) = delete;
};

}  // namespace hwca::test
