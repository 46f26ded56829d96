// Crash consistency of `k8s init` (issue 9): which ledger rows never reached their file (the decision
// rules of core/k8s_plan.h, table-driven), the request ids that name the files, the stale temporaries a
// killed run leaves, the output folder's lock, and init_cluster putting them together on a ledger with
// rows a "killed" run recorded but never wrote (software CA keys through the KeySource port). The real
// SIGKILLs are softhsm-tests/cli/k8s_crash.sh.
#include "core_helpers.h"
#include "k8s_layout_fixture.h"

#include "core/engine.h"
#include "core/files.h"
#include "core/k8s_cluster.h"
#include "core/k8s_layout.h"
#include "core/k8s_plan.h"

#include <openssl/obj_mac.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

using hwca::Error;
using hwca::ErrorKind;
using hwca::test::error_of;
using hwca::test::LayoutRun;
using namespace hwca::core;
using namespace hwca::core::k8s;

namespace {

std::vector<std::string> serials(const std::vector<Orphan>& orphans) {
  std::vector<std::string> out;
  for (const auto& o : orphans) out.push_back(o.serial);
  return out;
}

LedgerEntry row(const std::string& serial, const std::string& status, const std::string& request_id) {
  LedgerEntry e;
  e.serial = serial;
  e.status = status;
  e.request_id = request_id;
  return e;
}

}  // namespace

TEST_CASE("k8s orphans: request ids name the run and the absolute path of the file") {
  CHECK(file_request_id(7, "/etc/kubernetes/pki/apiserver.crt") == "k8s-file:7:/etc/kubernetes/pki/apiserver.crt");
  auto r = parse_file_request_id("k8s-file:12:/out/nodes/w1/kubelet.conf");
  REQUIRE(r);
  CHECK(r->run == 12);
  CHECK(r->path == "/out/nodes/w1/kubelet.conf");
  auto colon = parse_file_request_id("k8s-file:3:/a:b/c.crt");  // a colon in the path
  REQUIRE(colon);
  CHECK(colon->path == "/a:b/c.crt");
  for (const char* bad : {"", "k8s-csr:uid-1", "k8s-file:", "k8s-file::/a", "k8s-file:0:/a", "k8s-file:-1:/a",
                          "k8s-file:1x:/a", "k8s-file:1:relative", "k8s-file:1:", "K8S-FILE:1:/a",
                          "k8s-file:1234567890123456789:/a"})
    CHECK_FALSE(parse_file_request_id(bad));
}

TEST_CASE("k8s orphans: a file holding a recorded certificate orphans every issued row newer than it and nothing older") {
  const std::string p = "/out/pki/apiserver.crt";
  std::vector<FileRow> rows = {{1, "a1", "issued"},    // superseded: reached the file, then replaced
                               {2, "b2", "orphaned"},  // marked by an earlier run
                               {3, "c3", "issued"},    // now in the file
                               {4, "d4", "issued"},    // recorded, never written
                               {5, "e5", "revoked"},   // revoked: left alone
                               {6, "f6", "issued"}};   // recorded, never written
  auto o = find_orphans(p, rows, OnDisk::holds("c3"));
  CHECK(serials(o) == std::vector<std::string>{"d4", "f6"});
  REQUIRE(o.size() == 2);
  CHECK(o[0].path == p);
  CHECK(o[0].run == 4);
  CHECK(o[0].why.find(p) != std::string::npos);
  CHECK(o[0].why.find("c3") != std::string::npos);
  CHECK(o[0].why.find("run 4") != std::string::npos);
  // The newest row in the file: nothing; the oldest: everything issued after it.
  CHECK(find_orphans(p, rows, OnDisk::holds("f6")).empty());
  CHECK(serials(find_orphans(p, rows, OnDisk::holds("a1"))) == std::vector<std::string>{"c3", "d4", "f6"});
  // The order of the rows does not matter.
  std::vector<FileRow> reversed(rows.rbegin(), rows.rend());
  CHECK(serials(find_orphans(p, reversed, OnDisk::holds("c3"))) == std::vector<std::string>{"d4", "f6"});
}

TEST_CASE("k8s orphans: a missing file orphans only its newest row when that row is still issued") {
  const std::string p = "/out/nodes/w1/kubelet.conf";
  struct Case {
    std::vector<FileRow> rows;
    std::vector<std::string> want;
  };
  std::vector<Case> cases = {
      {{}, {}},
      {{{1, "a1", "issued"}}, {"a1"}},                           // killed in its first run
      {{{1, "a1", "issued"}, {2, "b2", "issued"}}, {"b2"}},      // a1 reached the file before b2's run
      {{{2, "b2", "issued"}, {1, "a1", "issued"}}, {"b2"}},      // in any order
      {{{1, "a1", "issued"}, {2, "b2", "orphaned"}}, {}},        // already marked: a1 was in the file once
      {{{1, "a1", "orphaned"}, {2, "b2", "revoked"}}, {}},
  };
  for (const auto& c : cases) {
    auto o = find_orphans(p, c.rows, OnDisk::missing());
    CHECK(serials(o) == c.want);
    for (const auto& x : o) CHECK(x.why.find("does not exist") != std::string::npos);
  }
}

TEST_CASE("k8s orphans: a file holding something this ledger did not record for it orphans nothing") {
  const std::string p = "/out/pki/front-proxy-client.crt";
  std::vector<FileRow> rows = {{1, "a1", "issued"}, {2, "b2", "issued"}};
  CHECK(find_orphans(p, rows, OnDisk::unknown()).empty());
  CHECK(find_orphans(p, rows, OnDisk::holds("ffee")).empty());
}

TEST_CASE("k8s orphans: FileRows keeps one output folder's rows and numbers the next run") {
  std::vector<LedgerEntry> entries = {
      row("01", "issued", "k8s-file:1:/srv/out/pki/ca.crt"),
      row("02", "issued", "k8s-file:2:/srv/out/pki/apiserver.crt"),
      row("03", "issued", "k8s-file:5:/srv/out/pki/apiserver.crt"),
      row("04", "issued", "k8s-file:9:/srv/out2/pki/apiserver.crt"),  // another folder that starts alike
      row("05", "issued", "k8s-file:8:/srv/other/pki/apiserver.crt"),
      row("06", "issued", "k8s-csr:uid-1"),
      row("07", "issued", ""),
  };
  FileRows rows(entries, "/srv/out");
  CHECK(rows.size() == 3);
  CHECK(rows.next_run() == 6);
  CHECK(FileRows(entries, "/srv/none").next_run() == 1);
  CHECK(serials(rows.orphans("/srv/out/pki/apiserver.crt", OnDisk::holds("02"))) == std::vector<std::string>{"03"});
  CHECK(rows.orphans("/srv/out/pki/etcd/ca.crt", OnDisk::missing()).empty());
  CHECK(rows.orphans("/srv/out2/pki/apiserver.crt", OnDisk::missing()).empty());
  rows.marked("/srv/out/pki/apiserver.crt", "03");
  CHECK(rows.orphans("/srv/out/pki/apiserver.crt", OnDisk::holds("02")).empty());
  CHECK(serials(rows.orphans("/srv/out/pki/ca.crt", OnDisk::missing())) == std::vector<std::string>{"01"});
}

TEST_CASE("files: stale temporaries of the named files are removed and nothing else") {
  hwca::test::TempDir tmp;
  auto touch = [&](const std::string& name) { std::ofstream(tmp / name) << "x"; };
  for (const char* n : {".kubelet.crt.tmp.AbC123", ".kubelet.key.tmp.zz9ZZ9", ".kubelet.conf.tmp.q1w2e3",
                        ".other.crt.tmp.AbC123", "kubelet.crt.tmp.AbC123", ".kubelet.crt.tmp.AbC12", ".kubelet.crt.tmp.AbC1234",
                        "kubelet.crt", ".kubelet.crt"})
    touch(n);
  CHECK(remove_stale_temporaries(tmp.path(), {"kubelet.crt", "kubelet.key", "kubelet.conf"}) == 3);
  std::set<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) left.insert(e.path().filename().string());
  CHECK(left == std::set<std::string>{".other.crt.tmp.AbC123", "kubelet.crt.tmp.AbC123", ".kubelet.crt.tmp.AbC12",
                                      ".kubelet.crt.tmp.AbC1234", "kubelet.crt", ".kubelet.crt"});
  CHECK(remove_stale_temporaries(tmp / "missing", {"kubelet.crt"}) == 0);
  // What AtomicBatch leaves when it is never committed is exactly what this removes.
  {
    AtomicBatch batch;
    batch.add(tmp / "a.crt", "data", 0644);
    std::string tmpname;
    for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
      if (e.path().filename().string().rfind(".a.crt.tmp.", 0) == 0) tmpname = e.path().string();
    REQUIRE(!tmpname.empty());
    std::filesystem::copy_file(tmpname, tmpname.substr(0, tmpname.size() - 6) + "XXXXXX");  // a "killed" one
  }
  CHECK(remove_stale_temporaries(tmp.path(), {"a.crt"}) == 1);
}

TEST_CASE("files: a folder lock is exclusive and released when dropped") {
  hwca::test::TempDir tmp;
  {
    FolderLock first(tmp.path(), "busy");
    Error e = error_of([&] { FolderLock second(tmp.path(), "busy: another init"); });
    CHECK(e.kind() == ErrorKind::Conflict);
    CHECK(std::string(e.what()) == "busy: another init");
  }
  FolderLock again(tmp.path(), "busy");
  CHECK(error_of([&] { FolderLock missing(tmp / "nope", "x"); }).kind() == ErrorKind::NotFound);
}

namespace {

const std::string kCluster = R"(name: kubernetes
kubernetesVersion: "1.30"
controlPlaneEndpoint: 10.0.0.1:6443
controlPlane:
  - {name: cp1, ip: 10.0.0.1}
workers:
  - {name: w1, ip: 10.0.1.1}
  - {name: w2, ip: 10.0.1.2}
cas:
  kubernetes-ca: {key: "pkcs11:token=t;object=kubernetes-ca"}
  etcd-ca: {key: "pkcs11:token=t;object=etcd-ca"}
  front-proxy-ca: {key: "pkcs11:token=t;object=front-proxy-ca"}
)";

std::string serial_of_file(const std::string& path) {
  std::string text = hwca::read_file(path);
  hwca::X509_ptr cert;
  if (path.size() > 5 && path.substr(path.size() - 5) == ".conf")
    cert = hwca::x509_from_pem(parse_kubeconfig(text, path).cert_pem, path);
  else
    cert = hwca::x509_from_pem(text, path);
  return hwca::serial_hex(X509_get0_serialNumber(cert.get()));
}

}  // namespace

TEST_CASE_METHOD(LayoutRun, "k8s orphans: init marks the rows of a killed run orphaned and re-issues only what never arrived") {
  ClusterSpec s = ClusterSpec::parse(kCluster, "c.yaml");
  InitResult r1 = init_cluster(s, keys, *ledger, opt);
  CHECK(r1.orphaned == 0);
  const std::string out = std::filesystem::canonical(opt.out).string();
  // Every certificate names its primary file, all in run 1.
  for (const auto& e : ledger->list()) {
    auto fr = parse_file_request_id(e.request_id);
    REQUIRE(fr);
    CHECK(fr->run == 1);
    CHECK(serial_of_file(fr->path) == e.serial);
  }

  // A "killed" run 2: rows for two files, never written. The apiserver's file still holds run 1's
  // certificate; w1's kubelet certificate and key are gone (as if run 1 never wrote them), and the
  // temporaries of the killed run are left in w1's folder.
  hwca::X509_ptr ca = hwca::x509_from_pem(hwca::read_file(out + "/pki/ca.crt"), "ca");
  Issuer issuer(ca.get(), keys.keys.at(s.kubernetes_ca_key).get(), *ledger);
  Profile profile;
  profile.name = "k8s:test";
  profile.expiry = std::chrono::hours(1);
  profile.usages = {"digital signature", "client auth"};
  auto leaf_key = hwca::generate_software_key(s.leaf_key);
  auto ghost = [&](const std::string& rel) {
    IssueRequest req;
    req.subject = make_name({{NID_commonName, "ghost", false}});
    req.public_key = leaf_key.get();
    req.profile = &profile;
    req.requester = "cli:k8s init";
    req.request_id = file_request_id(2, out + "/" + rel);
    return hwca::serial_hex(X509_get0_serialNumber(issuer.issue(req).get()));
  };
  const std::string apiserver_run1 = serial_of_file(out + "/pki/apiserver.crt");
  const std::string kubelet_run1 = serial_of_file(out + "/nodes/w1/pki/kubelet.crt");
  const std::string ghost_api = ghost("pki/apiserver.crt");
  const std::string ghost_kubelet = ghost("nodes/w1/pki/kubelet.crt");
  std::filesystem::remove(out + "/nodes/w1/pki/kubelet.crt");
  std::filesystem::remove(out + "/nodes/w1/pki/kubelet.key");
  std::ofstream(out + "/nodes/w1/pki/.kubelet.key.tmp.Kx81aZ") << "half a key";
  std::ofstream(out + "/nodes/w1/pki/.kubelet.crt.tmp.Qw3rTy") << "-----BEGIN CERT";

  lines.clear();
  InitResult r3 = init_cluster(s, keys, *ledger, opt);
  CHECK(r3.orphaned == 2);
  CHECK(r3.stale_temporaries == 2);
  CHECK(r3.issued == 1);  // w1's kubelet serving certificate; the apiserver's file was complete
  CHECK(ledger->find(ghost_api)->status == "orphaned");
  CHECK(ledger->find(ghost_kubelet)->status == "orphaned");
  CHECK(ledger->find(kubelet_run1)->status == "issued");  // it reached the file once (removed by hand since)
  CHECK(serial_of_file(out + "/pki/apiserver.crt") == apiserver_run1);
  const std::string kubelet_run3 = serial_of_file(out + "/nodes/w1/pki/kubelet.crt");
  CHECK(kubelet_run3 != ghost_kubelet);
  CHECK(kubelet_run3 != kubelet_run1);
  CHECK(ledger->find(kubelet_run3)->request_id == file_request_id(3, out + "/nodes/w1/pki/kubelet.crt"));
  CHECK_FALSE(std::filesystem::exists(out + "/nodes/w1/pki/.kubelet.key.tmp.Kx81aZ"));
  CHECK_FALSE(std::filesystem::exists(out + "/nodes/w1/pki/.kubelet.crt.tmp.Qw3rTy"));
  int orphan_lines = 0;
  for (const auto& l : lines)
    if (l.rfind("orphaned ", 0) == 0) ++orphan_lines;
  CHECK(orphan_lines == 2);
  auto audit = ledger->audit_entries();
  int orphan_events = 0;
  for (const auto& a : audit)
    if (a.kind == "certificate-orphaned") {
      ++orphan_events;
      CHECK(a.detail.find(out + "/") != std::string::npos);  // the why names the path
    }
  CHECK(orphan_events == 2);

  // A SAN change supersedes the apiserver's certificate: the superseded row is not orphaned, then or later.
  s.api_server_cert_sans.push_back("10.9.9.9");
  InitResult r4 = init_cluster(s, keys, *ledger, opt);
  CHECK(r4.issued == 1);
  CHECK(r4.orphaned == 0);
  CHECK(init_cluster(s, keys, *ledger, opt).orphaned == 0);
  CHECK(ledger->find(apiserver_run1)->status == "issued");
  CHECK(ledger->find(serial_of_file(out + "/pki/apiserver.crt"))->request_id ==
        file_request_id(4, out + "/pki/apiserver.crt"));

  // A second init on the same folder while one holds it is refused before anything is issued.
  size_t rows = ledger->list().size();
  {
    FolderLock busy(out, "held by the test");
    s.api_server_cert_sans.push_back("10.9.9.10");
    CHECK(error_of([&] { init_cluster(s, keys, *ledger, opt); }).kind() == ErrorKind::Conflict);
  }
  CHECK(ledger->list().size() == rows);
}
