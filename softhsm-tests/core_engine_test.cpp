// The issuance engine: profile -> template -> signed, recorded certificate.
#include "core_helpers.h"

#include "core/base/signing_run.h"
#include "core/cfssl.h"
#include "core/engine.h"

#include <thread>

using hwca::Error;
using hwca::ErrorKind;
using hwca::KeySpec;
using hwca::test::error_of;
using hwca::test::TempDir;
using namespace hwca::core;

namespace {

struct Fixture {
  TempDir dir;
  std::unique_ptr<Ledger> ledger = Ledger::open(dir / "ledger.db");
  hwca::EVP_PKEY_ptr ca_key = hwca::generate_software_key(KeySpec::parse("ecdsa-p384"));
  hwca::X509_ptr ca_cert;
  hwca::EVP_PKEY_ptr ec_leaf = hwca::generate_software_key(KeySpec::parse("ecdsa-p256"));
  hwca::EVP_PKEY_ptr rsa_leaf = hwca::generate_software_key(KeySpec::parse("rsa-2048"));

  explicit Fixture(std::time_t ca_not_after = now() + 10LL * 365 * 86400) {
    CertTemplate t;
    t.subject = hwca::test::cn_name("engine test root");
    t.key_usage = X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN;
    t.is_ca = true;
    t.not_before = now() - 86400;
    t.not_after = ca_not_after;
    ca_cert = build_certificate(t, random_serial().get(), ca_key.get(), nullptr, ca_key.get());
  }

  IssueRequest request(const Profile& p, EVP_PKEY* key, const std::string& cn = "node1",
                       const std::vector<std::string>& hosts = {"node1.example", "10.0.0.1"}) const {
    IssueRequest r;
    r.subject = hwca::test::cn_name(cn);
    r.sans = SubjectAltNames::classify(hosts);
    r.public_key = key;
    r.profile = &p;
    r.requester = "test";
    return r;
  }
};

Profile profile_of(const std::string& json, const std::string& name) {
  return CfsslConfig::parse(json, "ca-config.json").select(name, true, nullptr);
}

}  // namespace

TEST_CASE("plan: built-in profiles add keyEncipherment only for RSA keys", "[core][engine]") {
  Fixture f;
  Issuer issuer(f.ca_cert.get(), f.ca_key.get(), *f.ledger);
  Profile server = builtin_profile("server");
  CertTemplate ec = issuer.plan(f.request(server, f.ec_leaf.get()));
  CHECK(ec.key_usage == X509v3_KU_DIGITAL_SIGNATURE);
  CHECK(ec.ext_key_usage == std::vector<int>{NID_server_auth});
  CertTemplate rsa = issuer.plan(f.request(server, f.rsa_leaf.get()));
  CHECK(rsa.key_usage == (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT));
  // A cfssl profile keeps exactly what it says, whatever the key (as cfssl does).
  CfsslConfig cfg = CfsslConfig::builtin();
  CertTemplate cf = issuer.plan(f.request(cfg.default_profile, f.ec_leaf.get()));
  CHECK(cf.key_usage == (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT));
  CHECK(cf.ext_key_usage == std::vector<int>{NID_server_auth, NID_client_auth});
  CHECK(cf.key_usage_critical);
  CHECK_FALSE(cf.is_ca);
  CHECK(cf.subject_key_id);
  CHECK(cf.authority_key_id);
}

TEST_CASE("plan: validity is now rounded to the minute, less the backdate, plus the expiry", "[core][engine]") {
  Fixture f;
  Issuer issuer(f.ca_cert.get(), f.ca_key.get(), *f.ledger);
  Profile p = builtin_profile("client");
  std::time_t before = now_rounded_to_minute();
  CertTemplate t = issuer.plan(f.request(p, f.ec_leaf.get()));
  std::time_t after = now_rounded_to_minute();
  CHECK(t.not_before % 60 == 0);
  CHECK(t.not_before >= before - 300);
  CHECK(t.not_before <= after - 300);
  CHECK(t.not_after - t.not_before == 8760LL * 3600);

  p.backdate = std::chrono::minutes(10);
  p.expiry = std::chrono::hours(1);
  t = issuer.plan(f.request(p, f.ec_leaf.get()));
  CHECK(t.not_before >= before - 600);
  CHECK(t.not_before <= now_rounded_to_minute() - 600);
  CHECK(t.not_after - t.not_before == 3600);

  p.backdate = std::chrono::seconds{0};
  t = issuer.plan(f.request(p, f.ec_leaf.get()));
  CHECK(std::abs(static_cast<long long>(t.not_before - now())) <= 31);

  // Fixed dates from the profile.
  p.not_before = 1800000000;
  p.not_after = 1800086400;
  t = issuer.plan(f.request(p, f.ec_leaf.get()));
  CHECK(t.not_before == 1800000000);
  CHECK(t.not_after == 1800086400);

  // A zero expiry is refused (when no fixed notAfter).
  Profile zero = builtin_profile("client");
  zero.expiry = std::chrono::seconds{0};
  CHECK(error_of([&] { issuer.plan(f.request(zero, f.ec_leaf.get())); }).kind() == ErrorKind::BadInput);
}

TEST_CASE("plan: the validity is capped at the CA's notAfter - an expired CA refuses", "[core][engine]") {
  std::time_t ca_end = now() + 30 * 86400;
  Fixture f(ca_end);
  Issuer issuer(f.ca_cert.get(), f.ca_key.get(), *f.ledger);
  Profile p = builtin_profile("server");
  CertTemplate t = issuer.plan(f.request(p, f.ec_leaf.get()));
  CHECK(t.not_after == ca_end);

  Fixture old(now() - 3600);
  Issuer stale(old.ca_cert.get(), old.ca_key.get(), *old.ledger);
  Error e = error_of([&] { stale.plan(old.request(p, old.ec_leaf.get())); });
  CHECK(e.kind() == ErrorKind::Policy);
  CHECK(std::string(e.what()).find("expired") != std::string::npos);
}

TEST_CASE("plan: the CA constraint comes from the profile, never from the request alone", "[core][engine]") {
  Fixture f;
  Issuer issuer(f.ca_cert.get(), f.ca_key.get(), *f.ledger);
  Profile leaf = builtin_profile("server");
  IssueRequest r = f.request(leaf, f.ec_leaf.get());
  r.requested_ca = true;
  r.path_len = 3;
  CertTemplate t = issuer.plan(r);
  CHECK_FALSE(t.is_ca);
  CHECK(t.path_len == -1);
  CHECK(t.basic_constraints);

  Profile inter = profile_of(
      R"({"signing":{"profiles":{"i":{"expiry":"43800h","usages":["cert sign","crl sign","signing"],"ca_constraint":{"is_ca":true,"max_path_len":2}}}}})",
      "i");
  IssueRequest ir = f.request(inter, f.ec_leaf.get(), "intermediate", {});
  ir.path_len = 7;  // ignored when a CA certificate signs
  t = issuer.plan(ir);
  CHECK(t.is_ca);
  CHECK(t.path_len == 2);
  CHECK(t.key_usage == (X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN | X509v3_KU_DIGITAL_SIGNATURE));

  inter.ca_constraint->max_path_len = 0;
  CHECK(issuer.plan(ir).path_len == -1);
  inter.ca_constraint->max_path_len_zero = true;
  CHECK(issuer.plan(ir).path_len == 0);
  inter.ca_constraint->is_ca = false;
  CHECK_FALSE(issuer.plan(ir).is_ca);

  // Self-signed: the path length comes from the request (CSR JSON ca.pathlen).
  Issuer self(nullptr, f.ec_leaf.get(), *f.ledger);
  Profile root = initca_profile();
  IssueRequest rr = f.request(root, f.ec_leaf.get(), "root", {});
  CertTemplate rt = self.plan(rr);
  CHECK(rt.is_ca);
  CHECK(rt.path_len == -1);
  CHECK(rt.authority_key_id);
  rr.path_len = 1;
  rr.authority_key_id_on_self_signed = false;
  rt = self.plan(rr);
  CHECK(rt.path_len == 1);
  CHECK_FALSE(rt.authority_key_id);
  CHECK(rt.not_after - rt.not_before == 43800LL * 3600);
}

TEST_CASE("plan: name_whitelist applies to the CN and every DNS SAN", "[core][engine]") {
  Fixture f;
  Issuer issuer(f.ca_cert.get(), f.ca_key.get(), *f.ledger);
  Profile p = profile_of(
      R"({"signing":{"profiles":{"wl":{"expiry":"1h","usages":["server auth"],"name_whitelist":"\\.example\\.com$"}}}})", "wl");
  CHECK_NOTHROW(issuer.plan(f.request(p, f.ec_leaf.get(), "a.example.com", {"b.example.com", "10.0.0.1", "ops@evil.org"})));
  Error e = error_of([&] { issuer.plan(f.request(p, f.ec_leaf.get(), "a.example.com", {"b.example.com", "evil.org"})); });
  CHECK(e.kind() == ErrorKind::Policy);
  CHECK(std::string(e.what()) == "profile 'wl': name 'evil.org' is not allowed by name_whitelist");
  e = error_of([&] { issuer.plan(f.request(p, f.ec_leaf.get(), "root", {"b.example.com"})); });
  CHECK(std::string(e.what()) == "profile 'wl': name 'root' is not allowed by name_whitelist");
}

TEST_CASE("issue: signs, records and returns a certificate that verifies", "[core][engine]") {
  Fixture f;
  Issuer issuer(f.ca_cert.get(), f.ca_key.get(), *f.ledger);
  Profile p = builtin_profile("peer");
  IssueRequest r = f.request(p, f.rsa_leaf.get(), "etcd-1", {"etcd-1.example", "10.0.0.11", "127.0.0.1"});
  r.requester = "cli:gencert";
  auto cert = issuer.issue(r);
  REQUIRE(cert);
  CHECK(verify_chain(cert.get(), {f.ca_cert.get()}).empty());
  CHECK(hwca::same_public_key(X509_get0_pubkey(cert.get()), f.rsa_leaf.get()));
  CHECK(X509_get_key_usage(cert.get()) == (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_KEY_ENCIPHERMENT));
  CHECK(X509_get_extended_key_usage(cert.get()) == (XKU_SSL_SERVER | XKU_SSL_CLIENT));
  auto entries = f.ledger->list();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].serial == hwca::serial_hex(X509_get0_serialNumber(cert.get())));
  CHECK(entries[0].profile == "peer");
  CHECK(entries[0].requester == "cli:gencert");
  CHECK(entries[0].sans == "DNS:etcd-1.example, IP:10.0.0.11, IP:127.0.0.1");

  // A second certificate gets another serial.
  auto second = issuer.issue(r);
  CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(second.get()), X509_get0_serialNumber(cert.get())) != 0);
  CHECK(f.ledger->list().size() == 2);
}

TEST_CASE("issue: a self-signed root, as cfssl -initca makes it", "[core][engine]") {
  Fixture f;
  Issuer self(nullptr, f.ec_leaf.get(), *f.ledger);
  Profile root = initca_profile();
  IssueRequest r = f.request(root, f.ec_leaf.get(), "CA", {});
  r.authority_key_id_on_self_signed = false;
  auto cert = self.issue(r);
  CHECK(X509_check_ca(cert.get()) == 1);
  CHECK(X509_get_key_usage(cert.get()) == (X509v3_KU_KEY_CERT_SIGN | X509v3_KU_CRL_SIGN));
  CHECK(X509_get0_authority_key_id(cert.get()) == nullptr);
  CHECK(verify_chain(cert.get(), {cert.get()}).empty());
  CHECK(asn1_time_to_time_t(X509_get0_notAfter(cert.get())) - asn1_time_to_time_t(X509_get0_notBefore(cert.get())) ==
        43800LL * 3600);
  CHECK(f.ledger->list().size() == 1);
}

TEST_CASE("issue: a certificate that is not a CA cannot issue", "[core][engine]") {
  Fixture f;
  Issuer issuer(f.ca_cert.get(), f.ca_key.get(), *f.ledger);
  Profile p = builtin_profile("server");
  auto leaf = issuer.issue(f.request(p, f.ec_leaf.get()));
  Issuer bad(leaf.get(), f.ec_leaf.get(), *f.ledger);
  CHECK(error_of([&] { bad.issue(f.request(p, f.rsa_leaf.get())); }).kind() == ErrorKind::Policy);
  CHECK(f.ledger->list().size() == 1);
}

TEST_CASE("issue: the wrong CA key is refused and nothing is recorded", "[core][engine]") {
  Fixture f;
  auto wrong = hwca::generate_software_key(KeySpec::parse("ecdsa-p384"));
  Issuer issuer(f.ca_cert.get(), wrong.get(), *f.ledger);
  Profile p = builtin_profile("server");
  CHECK_THROWS_AS(issuer.issue(f.request(p, f.ec_leaf.get())), Error);
  CHECK(f.ledger->list().empty());
}

TEST_CASE("check_key_matches_cert", "[core][engine]") {
  Fixture f;
  CHECK_NOTHROW(check_key_matches_cert(f.ca_cert.get(), f.ca_key.get()));
  Error e = error_of([&] { check_key_matches_cert(f.ca_cert.get(), f.ec_leaf.get()); });
  CHECK(e.kind() == ErrorKind::BadInput);
  CHECK(std::string(e.what()) == "the CA key does not match the CA certificate's public key");
  CHECK(error_of([&] { check_key_matches_cert(f.ca_cert.get(), f.rsa_leaf.get()); }).kind() == ErrorKind::BadInput);
}

TEST_CASE("SigningRun: devices are kept until the outermost run of their thread ends, then released in order", "[core][engine]") {
  struct Recorder final : hwca::SigningRun::Device {
    std::vector<std::string>* log;
    std::string name;
    Recorder(std::vector<std::string>* l, std::string n) : log(l), name(std::move(n)) {}
    void release_after_run() noexcept override { log->push_back(name); }
  };
  std::vector<std::string> released;
  Recorder a(&released, "a"), b(&released, "b");
  CHECK_FALSE(hwca::SigningRun::keep(a));  // no run: the device releases itself
  {
    hwca::SigningRun run;
    CHECK(hwca::SigningRun::keep(a));
    {
      hwca::SigningRun nested;
      CHECK(hwca::SigningRun::keep(b));
    }
    CHECK(released.empty());  // the inner run's end releases nothing
    bool other_thread_keeps = true;
    std::thread t([&] { other_thread_keeps = hwca::SigningRun::keep(b); });  // a run is per thread
    t.join();
    CHECK_FALSE(other_thread_keeps);
  }
  CHECK(released == std::vector<std::string>{"a", "b"});
  CHECK_FALSE(hwca::SigningRun::keep(a));  // the run is over
  CHECK(released.size() == 2);
}
