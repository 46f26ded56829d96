// core::AtomicBatch: many files made atomic and durable together (temporaries, one syncfs, renames, one
// fsync per folder): exact modes, replacement of existing files, and failures that leave no temporary and
// no partial final file.
#include "core_helpers.h"

#include "core/base/error.h"
#include "core/files.h"

#include <filesystem>
#include <map>
#include <sys/stat.h>

using hwca::ErrorKind;
using hwca::test::error_of;
using hwca::core::AtomicBatch;

namespace {

// Every regular file under `dir`: relative path -> content.
std::map<std::string, std::string> listing(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[e.path().string().substr(dir.size() + 1)] = hwca::read_file(e.path().string());
  return out;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("files: AtomicBatch writes every file with its exact mode, only at commit") {
  hwca::test::TempDir tmp;
  std::filesystem::create_directories(tmp / "a/b");
  AtomicBatch batch;
  batch.add(tmp / "one.crt", "certificate\n", 0644);
  batch.add(tmp / "a/one.key", "key\n", 0600);
  batch.add(tmp / "a/b/empty", "", 0640);
  CHECK(batch.size() == 3);
  // Before commit: nothing under a final name.
  for (const auto& [rel, content] : listing(tmp.path())) CHECK(rel.find(".tmp.") != std::string::npos);
  CHECK(batch.commit() == 3);
  CHECK(batch.size() == 0);
  CHECK(listing(tmp.path()) == std::map<std::string, std::string>{
                                   {"one.crt", "certificate\n"}, {"a/one.key", "key\n"}, {"a/b/empty", ""}});
  CHECK(mode_of(tmp / "one.crt") == 0644);
  CHECK(mode_of(tmp / "a/one.key") == 0600);
  CHECK(mode_of(tmp / "a/b/empty") == 0640);
  // An empty batch commits nothing.
  CHECK(batch.commit() == 0);
}

TEST_CASE("files: AtomicBatch replaces existing files, content and mode") {
  hwca::test::TempDir tmp;
  hwca::core::write_file_atomic(tmp / "x.key", "old key, much longer than the new one\n", 0644);
  hwca::core::write_file_atomic(tmp / "y.crt", "old\n", 0600);
  AtomicBatch batch;
  batch.add(tmp / "x.key", "new\n", 0600);
  batch.add(tmp / "y.crt", "new certificate\n", 0644);
  CHECK(hwca::read_file(tmp / "x.key") == "old key, much longer than the new one\n");  // until commit
  batch.commit();
  CHECK(listing(tmp.path()) == std::map<std::string, std::string>{{"x.key", "new\n"}, {"y.crt", "new certificate\n"}});
  CHECK(mode_of(tmp / "x.key") == 0600);
  CHECK(mode_of(tmp / "y.crt") == 0644);
}

TEST_CASE("files: a failure mid-batch leaves no temporaries and no partial final file") {
  hwca::test::TempDir tmp;
  std::filesystem::create_directories(tmp / "d");
  hwca::core::write_file_atomic(tmp / "d/keep.crt", "before\n", 0644);

  SECTION("add: a missing folder fails the batch, removing the temporaries already written") {
    AtomicBatch batch;
    batch.add(tmp / "d/keep.crt", "after\n", 0644);
    batch.add(tmp / "d/new.key", "k\n", 0600);
    CHECK(error_of([&] { batch.add(tmp / "missing/x.crt", "x", 0644); }).kind() == ErrorKind::NotFound);
    CHECK(batch.size() == 0);
    CHECK(batch.commit() == 0);
    CHECK(listing(tmp.path()) == std::map<std::string, std::string>{{"d/keep.crt", "before\n"}});
  }
  SECTION("add: a final name that is a folder is refused") {
    std::filesystem::create_directories(tmp / "d/dir.crt");
    AtomicBatch batch;
    batch.add(tmp / "d/a.crt", "a\n", 0644);
    CHECK(error_of([&] { batch.add(tmp / "d/dir.crt", "x", 0644); }).kind() == ErrorKind::BadInput);
    CHECK(listing(tmp.path()) == std::map<std::string, std::string>{{"d/keep.crt", "before\n"}});
  }
  SECTION("commit: a rename that fails stops the batch; files before it are complete, the rest untouched") {
    AtomicBatch batch;
    batch.add(tmp / "d/first.crt", "first\n", 0644);
    batch.add(tmp / "d/blocked.crt", "blocked\n", 0644);
    batch.add(tmp / "d/keep.crt", "after\n", 0644);
    // Between add and commit, a non-empty folder takes the second file's name: its rename fails.
    std::filesystem::create_directories(tmp / "d/blocked.crt/inner");
    hwca::Error e = error_of([&] { batch.commit(); });
    CHECK(e.kind() == ErrorKind::Io);
    CHECK(std::string(e.what()).find("blocked.crt") != std::string::npos);
    CHECK(batch.size() == 0);
    CHECK(listing(tmp.path()) == std::map<std::string, std::string>{{"d/first.crt", "first\n"}, {"d/keep.crt", "before\n"}});
  }
  SECTION("destruction without commit removes the temporaries") {
    {
      AtomicBatch batch;
      batch.add(tmp / "d/keep.crt", "after\n", 0644);
      batch.add(tmp / "d/other.key", "k\n", 0600);
    }
    CHECK(listing(tmp.path()) == std::map<std::string, std::string>{{"d/keep.crt", "before\n"}});
  }
}
