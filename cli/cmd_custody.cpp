// hwca custody split | check | resume, and the process-wide --pin-shares option (apply_pin_shares, called
// by main).
//
// Dual control over a PKCS#11 token: both its user PIN and its SO PIN are replaced by fresh random ASCII
// PINs (32 characters of [A-Za-z0-9], 190 bits) and each is written as k-of-n Shamir shares, one file per
// custodian. The user PIN alone would not be enough: whoever knows the SO PIN can C_InitPIN a new one.
// Over a TPM key (any backend with tokens::KeyAuthChanger): the key's own auth value is replaced
// (Esys_ObjectChangeAuth) by a fresh random one of the same kind and split; a TPM has no SO PIN that
// could reset it.
#include "cli/context.h"
#include "core/base/error.h"
#include "core/files.h"
#include "core/shamir.h"
#include "tokens/pin.h"
#include "tokens/pkcs11/pkcs11_backend.h"
#include "tokens/pkcs11/uri.h"

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <iostream>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

namespace hwca::cli {

namespace {

struct SplitOptions {
  std::string key;
  int shares = 0;
  int threshold = 0;
  std::string out;
  int so_shares = 0;
  int so_threshold = 0;
  std::string so_out;
  std::string so_pin_source;
  std::string so_pin_shares;
  int pin_length = 32;
};

struct CheckOptions {
  std::string key;
  std::string shares;
  bool so = false;
};

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// The folder must be empty (created 0700 when missing), so that no custodian's file is overwritten.
void prepare_empty_folder(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) throw Error(ErrorKind::Io, "cannot use " + dir + ": " + std::strerror(errno));
    if (::mkdir(dir.c_str(), 0700) != 0) throw Error(ErrorKind::Io, "cannot create " + dir + ": " + std::strerror(errno));
    return;
  }
  if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::BadInput, dir + " is not a folder");
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw Error(ErrorKind::Io, "cannot read " + dir + ": " + std::strerror(errno));
  bool empty = true;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") empty = false;
  }
  ::closedir(d);
  if (!empty) throw Error(ErrorKind::Conflict, "the share folder " + dir + " is not empty; shares are never overwritten");
}

tokens::PinChanger& pin_changer(Context& ctx, const std::string& uri) {
  auto& backend = ctx.registry.backend_for(uri);
  auto* changer = dynamic_cast<tokens::PinChanger*>(&backend);
  if (!changer)
    throw Error(ErrorKind::BadInput, "custody of " + backend.scheme() +
                                         ": keys is not supported (PKCS#11 tokens and TPM keys only)");
  return *changer;
}

// The backend's per-key auth changer (tpm2:), or null for a token with PINs (pkcs11:).
tokens::KeyAuthChanger* auth_changer(Context& ctx, const std::string& uri) {
  return dynamic_cast<tokens::KeyAuthChanger*>(&ctx.registry.backend_for(uri));
}

std::string key_label(const std::string& uri) { return "TPM key " + uri.substr(0, uri.find('?')); }

std::string token_label(const std::string& uri) {
  auto parsed = tokens::pkcs11::parse_pkcs11_uri(uri);
  return parsed.token ? *parsed.token : parsed.token_selector_text();
}

core::SecretBytes so_pin_from(const SplitOptions& o) {
  if (!o.so_pin_shares.empty()) return core::combine_share_files(split_list(o.so_pin_shares));
  if (!o.so_pin_source.empty()) {
    tokens::SecretString pin = tokens::read_pin_source(o.so_pin_source);
    return core::SecretBytes(pin.c_str(), pin.size());
  }
  if (const char* env = std::getenv("HWCA_SO_PIN"); env && *env) return core::SecretBytes(env, std::strlen(env));
  throw Error(ErrorKind::Usage,
              "custody split needs the current SO PIN: --so-pin-source file:PATH, --so-pin-shares a,b,c or HWCA_SO_PIN");
}

std::vector<std::string> write_shares(const std::vector<core::Share>& shares, const std::string& dir, const std::string& prefix) {
  std::vector<std::string> written;
  try {
    for (const auto& s : shares) {
      std::string path = dir + "/" + prefix + std::to_string(s.index);
      std::string text = core::share_to_json(s);
      core::write_file_atomic(path, text, 0600);
      OPENSSL_cleanse(text.data(), text.size());
      written.push_back(path);
    }
  } catch (...) {
    for (const auto& p : written) ::unlink(p.c_str());
    throw;
  }
  return written;
}

// custody split of a key with its own auth value (a TPM key): a fresh random auth value, split into shares
// written first (removed again if nothing was changed), then the key's auth changed through the backend.
void split_key_auth(Context& ctx, const SplitOptions& o, tokens::KeyAuthChanger& changer) {
  if (o.so_shares || o.so_threshold || !o.so_out.empty() || !o.so_pin_source.empty() || !o.so_pin_shares.empty())
    throw Error(ErrorKind::Usage, "--so-*: a TPM key has no SO PIN; only its auth value is split");
  size_t length = static_cast<size_t>(o.pin_length);
  if (length > changer.max_auth_size())
    throw Error(ErrorKind::Usage, "--pin-length: a TPM key's auth value holds at most " + std::to_string(changer.max_auth_size()) +
                                      " bytes");
  std::string label = key_label(o.key);
  auto ledger = ctx.open_ledger();  // opened first: a custody change that cannot be recorded is not done
  prepare_empty_folder(o.out);
  core::SecretBytes new_auth = core::random_ascii_secret(length);
  auto shares = core::shamir_split(new_auth, o.threshold, o.shares, "auth value of " + label);
  // Shares first: a crash after the change must not leave an auth value nobody has.
  auto files = write_shares(shares, o.out, "");
  for (auto& sh : shares) OPENSSL_cleanse(sh.value.data(), sh.value.size());
  tokens::KeyAuthChanger::Progress progress;
  std::vector<std::string> done;
  try {
    done = changer.change_key_auth(o.key, new_auth.view(), progress);
  } catch (...) {
    // Nothing changed: these shares open nothing. Past the commit point they may be the only way in: kept.
    if (!progress.committed)
      for (const auto& p : files) ::unlink(p.c_str());
    throw;
  }
  tokens::clear_pin_override();  // the old auth value, if it came from shares, opens nothing now
  nlohmann::json detail{{"key", o.key.substr(0, o.key.find('?'))},
                        {"auth", {{"set", shares.front().set_id}, {"threshold", o.threshold}, {"shares", o.shares}}},
                        {"auth_length", o.pin_length},
                        {"steps", done}};
  ledger->record_event("custody-split", detail.dump());
  std::cout << label << ": auth value replaced (" << o.pin_length << " random characters) and split\n";
  for (const auto& line : done) std::cout << "  " << line << "\n";
  std::cout << "  auth value: " << o.threshold << " of " << o.shares << " shares:";
  for (const auto& f : files) std::cout << " " << f;
  std::cout << "\nhand each file to its custodian and remove it from this machine" << std::endl;
}

}  // namespace

// --pin-shares a,b,c: rebuilds the PIN from the custodians' share files and makes it the PIN of every key
// opened in this process. Too few shares: one line saying how many are missing.
void apply_pin_shares(const std::string& list) {
  auto paths = split_list(list);
  if (paths.empty()) throw Error(ErrorKind::Usage, "--pin-shares names no share files");
  core::SecretBytes pin = core::combine_share_files(paths);
  tokens::set_pin_override(pin.data(), pin.size());
}

void add_custody_commands(CLI::App& app, Context& ctx) {
  auto* custody = app.add_subcommand("custody", "dual control: PINs split into k-of-n Shamir shares");
  custody->require_subcommand(1);

  auto o = std::make_shared<SplitOptions>();
  auto* split = custody->add_subcommand(
      "split", "replace the token's user and SO PINs (a TPM key: its auth value) by fresh random ones and write them as Shamir shares");
  split->add_option("--key", o->key,
                    "a key URI on the token (the current user PIN comes from it, HWCA_PIN or --pin-shares), or a tpm2: key "
                    "(its current auth value from its pin-source or --pin-shares)")
      ->required();
  split->add_option("--shares", o->shares, "how many user-PIN shares (custodians)")->required()->check(CLI::Range(2, 255));
  split->add_option("--threshold", o->threshold, "how many user-PIN shares unlock the key")->required()->check(CLI::Range(2, 255));
  split->add_option("--out", o->out, "folder for the user-PIN shares (files 1..n; created 0700, must be empty)")->required();
  split->add_option("--so-shares", o->so_shares, "how many SO-PIN shares (default: --shares)")->check(CLI::Range(2, 255));
  split->add_option("--so-threshold", o->so_threshold, "how many SO-PIN shares rebuild the SO PIN (default: --threshold)")
      ->check(CLI::Range(2, 255));
  split->add_option("--so-out", o->so_out, "folder for the SO-PIN shares (files so-1..so-n; default: --out)");
  split->add_option("--so-pin-source", o->so_pin_source, "file:PATH holding the current SO PIN (or HWCA_SO_PIN)");
  split->add_option("--so-pin-shares", o->so_pin_shares, "share files of the current SO PIN (a second split)");
  split->add_option("--pin-length", o->pin_length, "length of the new PINs (default 32 characters, at least 22)")
      ->check(CLI::Range(22, 64));
  split->callback([o, &ctx] {
    ctx.action = [o, &ctx] {
      ctx.check_key_uri(o->key, false, true);
      int so_shares = o->so_shares ? o->so_shares : o->shares;
      int so_threshold = o->so_threshold ? o->so_threshold : o->threshold;
      if (o->threshold > o->shares) throw Error(ErrorKind::Usage, "--threshold is larger than --shares");
      if (so_threshold > so_shares) throw Error(ErrorKind::Usage, "the SO threshold is larger than the number of SO shares");
      std::string so_out = o->so_out.empty() ? o->out : o->so_out;
      if (auto* key_changer = auth_changer(ctx, o->key)) {
        split_key_auth(ctx, *o, *key_changer);
        return;
      }
      auto& changer = pin_changer(ctx, o->key);
      std::string label = token_label(o->key);
      auto ledger = ctx.open_ledger();  // opened first: a custody change that cannot be recorded is not done

      prepare_empty_folder(o->out);
      if (so_out != o->out) prepare_empty_folder(so_out);
      core::SecretBytes so_pin = so_pin_from(*o);
      changer.check_so_pin(o->key, so_pin.view());  // nothing changes when the SO PIN is wrong

      size_t length = static_cast<size_t>(o->pin_length);
      core::SecretBytes new_user = core::random_ascii_secret(length);
      core::SecretBytes new_so = core::random_ascii_secret(length);
      auto user_shares = core::shamir_split(new_user, o->threshold, o->shares, "user PIN of token " + label);
      auto so_shares_v = core::shamir_split(new_so, so_threshold, so_shares, "SO PIN of token " + label);
      // Shares first: a crash after C_SetPIN must not leave a PIN nobody has.
      auto user_files = write_shares(user_shares, o->out, "");
      std::vector<std::string> so_files;
      try {
        so_files = write_shares(so_shares_v, so_out, "so-");
        changer.change_pins(o->key, new_user.view(), so_pin.view(), new_so.view());
      } catch (...) {
        // Nothing was changed (or the change failed before the user PIN): these shares open nothing.
        for (const auto& p : user_files) ::unlink(p.c_str());
        for (const auto& p : so_files) ::unlink(p.c_str());
        throw;
      }
      for (auto& s : user_shares) OPENSSL_cleanse(s.value.data(), s.value.size());
      for (auto& s : so_shares_v) OPENSSL_cleanse(s.value.data(), s.value.size());
      changer.check_user_pin(o->key, new_user.view());
      tokens::clear_pin_override();  // the old PIN, if it came from shares, opens nothing now

      nlohmann::json detail{{"token", label},
                            {"user", {{"set", user_shares.front().set_id}, {"threshold", o->threshold}, {"shares", o->shares}}},
                            {"so", {{"set", so_shares_v.front().set_id}, {"threshold", so_threshold}, {"shares", so_shares}}},
                            {"pin_length", o->pin_length}};
      ledger->record_event("custody-split", detail.dump());
      std::cout << "token " << label << ": user PIN and SO PIN replaced (" << o->pin_length
                << " random characters each) and split\n"
                << "  user PIN: " << o->threshold << " of " << o->shares << " shares:";
      for (const auto& f : user_files) std::cout << " " << f;
      std::cout << "\n  SO PIN:   " << so_threshold << " of " << so_shares << " shares:";
      for (const auto& f : so_files) std::cout << " " << f;
      std::cout << "\nhand each file to its custodian and remove it from this machine" << std::endl;
    };
  });

  auto c = std::make_shared<CheckOptions>();
  auto* check = custody->add_subcommand("check", "check that share files rebuild a PIN the token (or TPM key) accepts");
  check->add_option("--key", c->key, "a key URI on the token")->required();
  check->add_option("--shares", c->shares, "share files, comma-separated")->required();
  check->add_flag("--so", c->so, "the shares are of the SO PIN");
  check->callback([c, &ctx] {
    ctx.action = [c, &ctx] {
      ctx.check_key_uri(c->key, false, true);
      if (auto* key_changer = auth_changer(ctx, c->key)) {
        if (c->so) throw Error(ErrorKind::Usage, "--so: a TPM key has no SO PIN; its shares are of its auth value");
        core::SecretBytes auth = core::combine_share_files(split_list(c->shares));
        key_changer->check_key_auth(c->key, auth.view());
        std::cout << "the shares rebuild the auth value of " << key_label(c->key) << std::endl;
        return;
      }
      auto& changer = pin_changer(ctx, c->key);
      core::SecretBytes pin = core::combine_share_files(split_list(c->shares));
      if (c->so)
        changer.check_so_pin(c->key, pin.view());
      else
        changer.check_user_pin(c->key, pin.view());
      std::cout << "the shares rebuild the " << (c->so ? "SO" : "user") << " PIN of token " << token_label(c->key) << std::endl;
    };
  });

  auto r = std::make_shared<std::string>();
  auto* resume = custody->add_subcommand(
      "resume", "finish a TPM custody split that was interrupted (the new auth value from --pin-shares: the new shares)");
  resume->add_option("--key", *r, "the tpm2: key URI given to custody split")->required();
  resume->callback([r, &ctx] {
    ctx.action = [r, &ctx] {
      ctx.check_key_uri(*r, false, true);
      auto* changer = auth_changer(ctx, *r);
      if (!changer) throw Error(ErrorKind::BadInput, "custody resume is for TPM keys; a PKCS#11 split changes PINs in place");
      auto ledger = ctx.open_ledger();
      auto done = changer->resume_key_auth_change(*r);
      tokens::clear_pin_override();
      if (done.empty()) {
        std::cout << key_label(*r) << ": no interrupted custody split to finish" << std::endl;
        return;
      }
      ledger->record_event("custody-resume", nlohmann::json{{"key", r->substr(0, r->find('?'))}, {"steps", done}}.dump());
      std::cout << key_label(*r) << ": interrupted custody split finished" << std::endl;
      for (const auto& line : done) std::cout << "  " << line << std::endl;
    };
  });
}

}  // namespace hwca::cli
