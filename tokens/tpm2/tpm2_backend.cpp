#include "tokens/tpm2/tpm2_backend.h"

#include "core/base/error.h"
#include "tokens/file/file_backend.h"
#include "tokens/pin.h"
#include "tokens/tpm2/esys.h"
#include "tokens/tpm2/provider.h"
#include "tokens/tpm2/tss2_key.h"
#include "tokens/tpm2/uri.h"

#include <openssl/crypto.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <sys/stat.h>
#include <vector>

namespace hwca::tokens {

namespace {

using namespace hwca::tokens::tpm2;

constexpr size_t kMaxAuth = 32;  // the SHA-256 name algorithm's digest size

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string yes_no(bool v) { return v ? "true" : "false"; }

// Where a key is, and what is needed to use it.
struct KeyRef {
  Tpm2Uri uri;
  std::shared_ptr<Connection> connection;
  std::optional<KeyBlob> blob;  // file= keys
  std::uint32_t parent = kOwnerHierarchy;
  bool empty_auth = true;
  SecretString auth;

  std::string what() const { return uri.where(); }

  // The key loaded (blob under its parent, which is flushed at once) or opened (persistent).
  Object load(ESYS_CONTEXT* ctx) const {
    if (uri.handle) return open_persistent(ctx, *uri.handle, what());
    Object parent_obj = storage_parent(ctx, parent);
    Object key = load_key(ctx, parent_obj, *blob, what());
    return key;  // parent_obj is flushed here: the TPM keeps the loaded key usable without it
  }
};

class TpmKey final : public DeviceKey {
 public:
  TpmKey(KeyRef ref, const TPMT_PUBLIC& pub)
      : m_ref(std::move(ref)), m_pub(pub), m_spec(spec_of(pub)), m_public(public_key_of(pub)) {}

  const KeySpec& spec() const override { return m_spec; }
  EVP_PKEY* public_key() const override { return m_public.get(); }

  std::string sign_digest(const EVP_MD* md, const std::string& digest) override {
    // A persistent key's ESYS_TR stays open on the connection (it takes no transient slot). A blob is
    // loaded for this one signature and flushed right after it: nothing stays in the TPM's few transient
    // slots between signatures, which other processes on a TPM without a resource manager share. A
    // restarted swtpm costs nothing but a reconnect (and, for a persistent key, one TPM2_ReadPublic).
    Connection& connection = *m_ref.connection;
    return connection.run(
        [&](ESYS_CONTEXT* ctx) {
          auto sign_with = [&](ESYS_TR key) {
            set_auth(ctx, key, m_ref.auth.str());
            return tpm2::sign_digest(ctx, key, m_pub, md, digest, m_ref.what());
          };
          if (m_ref.uri.handle) return sign_with(connection.persistent(ctx, *m_ref.uri.handle, m_ref.what()));
          Object key = m_ref.load(ctx);  // flushed when it goes out of scope, after the signature
          return sign_with(key.tr());
        },
        true);
  }

 private:
  KeyRef m_ref;
  TPMT_PUBLIC m_pub;
  KeySpec m_spec;
  EVP_PKEY_ptr m_public;
};

class Tpm2Signer final : public Signer {
 public:
  Tpm2Signer(std::shared_ptr<Provider> provider, std::shared_ptr<TpmKey> key, std::string uri)
      : m_provider(std::move(provider)),
        m_key(std::move(key)),
        m_pkey(m_provider->make_pkey(m_key)),
        m_public(share(m_key->public_key())),
        m_uri(std::move(uri)) {}
  EVP_PKEY* pkey() const override { return m_pkey.get(); }
  EVP_PKEY* public_key() const override { return m_public.get(); }
  std::string uri() const override { return m_uri; }

 private:
  std::shared_ptr<Provider> m_provider;  // declared first: destroyed after the EVP_PKEY made with it
  std::shared_ptr<TpmKey> m_key;
  EVP_PKEY_ptr m_pkey;
  EVP_PKEY_ptr m_public;
  std::string m_uri;
};

SecretString auth_of(const Tpm2Uri& uri) {
  if (!uri.pin_source) return SecretString();
  SecretString auth = read_pin_source(*uri.pin_source);
  if (auth.size() > kMaxAuth)
    throw Error(ErrorKind::BadInput, "the auth value in the pin-source is longer than " + std::to_string(kMaxAuth) +
                                         " bytes (a TPM key's auth value is at most its name algorithm's digest size)");
  return auth;
}

// The auth value of an existing key: its own pin-source, else the process-wide override (--pin-shares) when
// the key has an auth value or may have one (a blob that says emptyAuth FALSE, or a persistent key), else
// empty. The key's own pin-source comes first: each TPM key has its own secret, and a wrong one counts
// towards the TPM's dictionary-attack lockout.
SecretString existing_auth(const Tpm2Uri& uri, bool blob_says_empty) {
  if (uri.pin_source) return auth_of(uri);
  if (blob_says_empty) return SecretString();
  if (auto shared = pin_override_copy()) {
    if (shared->size() > kMaxAuth)
      throw Error(ErrorKind::BadInput, "the secret the shares rebuild is longer than " + std::to_string(kMaxAuth) +
                                           " bytes: it is not a TPM key's auth value");
    return std::move(*shared);
  }
  return SecretString();
}

// The staging handle of a persistent key during custody split: the handle with bit 22 flipped
// (0x81000100 <-> 0x81400100), in the owner range like the key's own. Fixed, so that an interrupted
// split can be found and finished.
constexpr std::uint32_t kStagingBit = 0x00400000;
std::uint32_t staging_handle(std::uint32_t handle) { return handle ^ kStagingBit; }

// One signature with `key` (loaded or persistent, its auth value set), verified with the public key.
void test_signature(ESYS_CONTEXT* ctx, const Object& key, const TPMT_PUBLIC& pub, const std::string& what) {
  EVP_PKEY_ptr public_key = public_key_of(pub);
  const EVP_MD* md = digest_for(public_key.get());
  const std::string data = "hwca tpm2 key check";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, md, nullptr) != 1) throw_openssl(ErrorKind::Internal, "EVP_Digest");
  std::string sig = tpm2::sign_digest(ctx, key, pub, md, std::string(reinterpret_cast<char*>(digest), len), what);
  EVP_PKEY_CTX_ptr vctx(EVP_PKEY_CTX_new(public_key.get(), nullptr));
  if (!vctx || EVP_PKEY_verify_init(vctx.get()) != 1 || EVP_PKEY_CTX_set_signature_md(vctx.get(), md) != 1 ||
      EVP_PKEY_verify(vctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(), digest, len) != 1) {
    drain_openssl_errors();
    throw Error(ErrorKind::Token, "the TPM's signature with " + what + " does not verify with its public key");
  }
}

// ObjectChangeAuth under whichever storage parent the key was made under (a persistent key does not
// record it). Returns the new private part and leaves the parent that took it in `parent`.
TPM2B_PRIVATE change_auth_any_parent(ESYS_CONTEXT* ctx, const Object& key, Object& parent, const std::string& new_auth,
                                     const std::string& what) {
  auto candidates = parent_candidates(ctx);
  for (size_t i = 0; i < candidates.size(); ++i) {
    parent = storage_parent(ctx, candidates[i]);
    try {
      return change_auth(ctx, key, parent, new_auth, what);
    } catch (const Error& e) {
      if (!is_wrong_parent(e) || i + 1 == candidates.size()) throw;
    }
  }
  throw Error(ErrorKind::Internal, "no storage parent to try");
}

void require_signing_key(const TPMT_PUBLIC& pub, const std::string& what) {
  if (!(pub.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) || (pub.objectAttributes & TPMA_OBJECT_RESTRICTED))
    throw Error(ErrorKind::BadInput, what + " is not an unrestricted signing key (hwca needs sign set and restricted clear)");
  spec_of(pub);
}

class Tpm2Backend final : public KeyBackend, public KeyAuthChanger {
 public:
  Tpm2Backend() {
    // tpm2-tss logs its own errors to stderr; hwca reports them as one line. TSS2_LOG set by the user wins.
    ::setenv("TSS2_LOG", "all+NONE", 0);
  }
  ~Tpm2Backend() override {
    std::lock_guard lock(m_mutex);
    m_connections.clear();
    m_provider.reset();
  }

  std::string scheme() const override { return "tpm2"; }

  std::unique_ptr<Signer> generate(const std::string& uri_text, const GenerateOptions& options) override {
    KeyRef ref = resolve(uri_text);
    ref.auth = auth_of(ref.uri);
    ref.empty_auth = ref.auth.empty();
    if (ref.uri.file && path_exists(*ref.uri.file))
      throw Error(ErrorKind::Conflict, *ref.uri.file + " already exists; hwca never overwrites keys");
    const KeySpec spec = options.spec;
    KeyBlob made = ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          ref.connection->forget_persistent();  // a handle may be made persistent below
          require_supported(ctx, spec);
          if (ref.uri.handle && persistent_exists(ctx, *ref.uri.handle))
            throw Error(ErrorKind::Conflict, "TPM handle " + handle_hex(*ref.uri.handle) +
                                                 " is already occupied; hwca never overwrites keys (free it with "
                                                 "`tpm2_evictcontrol -C o -c " + handle_hex(*ref.uri.handle) +
                                                 "` if that key is no longer needed)");
          ref.parent = default_parent(ctx);
          Object parent = storage_parent(ctx, ref.parent);
          KeyBlob blob = create_key(ctx, parent, signing_key_template(spec), ref.auth.str());
          if (ref.uri.handle) {
            Object key = load_key(ctx, parent, blob, ref.what());
            parent.reset();
            make_persistent(ctx, key, *ref.uri.handle);
          }
          return blob;
        },
        false);
    if (ref.uri.file) {
      Tss2PrivateKey pem;
      pem.empty_auth = ref.empty_auth;
      pem.parent = ref.parent;
      pem.pubkey = marshal_public(made.pub);
      pem.privkey = marshal_private(made.priv);
      write_new_private_file(*ref.uri.file, encode_tss2_pem(pem));
      ref.blob = made;
    }
    auto key = std::make_shared<TpmKey>(std::move(ref), made.pub.publicArea);
    return std::make_unique<Tpm2Signer>(provider(), std::move(key), uri_text);
  }

  std::unique_ptr<Signer> open(const std::string& uri_text) override {
    KeyRef ref = resolve(uri_text);
    TPMT_PUBLIC pub = locate(ref);
    require_signing_key(pub, ref.what());
    auto key = std::make_shared<TpmKey>(std::move(ref), pub);
    // One signature now: a wrong auth value, a blob this TPM cannot load or a TPM that is not there
    // is reported here, as one error, before any certificate is built.
    const EVP_MD* md = digest_for(key->public_key());
    const std::string data = "hwca tpm2 key check";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), digest, &len, md, nullptr) != 1) throw_openssl(ErrorKind::Internal, "EVP_Digest");
    std::string dgst(reinterpret_cast<char*>(digest), len);
    std::string sig = key->sign_digest(md, dgst);
    EVP_PKEY_CTX_ptr vctx(EVP_PKEY_CTX_new(key->public_key(), nullptr));
    if (!vctx || EVP_PKEY_verify_init(vctx.get()) != 1 || EVP_PKEY_CTX_set_signature_md(vctx.get(), md) != 1 ||
        EVP_PKEY_verify(vctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(), digest, len) != 1) {
      drain_openssl_errors();
      throw Error(ErrorKind::Token, "the TPM's signature with " + key_where(uri_text) + " does not verify with its public key");
    }
    return std::make_unique<Tpm2Signer>(provider(), std::move(key), uri_text);
  }

  bool exists(const std::string& uri_text) override {
    KeyRef ref = resolve(uri_text);
    if (ref.uri.file) {
      if (!path_exists(*ref.uri.file)) return false;
      decode_tss2_pem(read_file(*ref.uri.file), *ref.uri.file);  // there but not a key: an error, not "absent"
      return true;
    }
    return ref.connection->run([&](ESYS_CONTEXT* ctx) { return persistent_exists(ctx, *ref.uri.handle); }, true);
  }

  size_t max_auth_size() const override { return kMaxAuth; }

  void check_key_auth(const std::string& uri_text, std::string_view auth) override {
    KeyRef ref = resolve(uri_text);
    TPMT_PUBLIC pub = locate_public(ref);
    if (ref.uri.file && ref.empty_auth)
      throw Error(ErrorKind::BadInput, *ref.uri.file + " has no auth value (emptyAuth TRUE): no shares open it");
    if (auth.empty() || auth.size() > kMaxAuth)
      throw Error(ErrorKind::BadInput, "a TPM key's auth value is 1 to " + std::to_string(kMaxAuth) + " bytes");
    ref.auth = SecretString(std::string(auth));
    ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          Object key = ref.load(ctx);
          set_auth(ctx, key, ref.auth.str());
          test_signature(ctx, key, pub, ref.what());
        },
        false);
  }

  std::vector<std::string> change_key_auth(const std::string& uri_text, std::string_view new_auth_view,
                                           Progress& progress) override {
    KeyRef ref = resolve(uri_text);
    TPMT_PUBLIC pub = locate(ref);
    require_signing_key(pub, ref.what());
    if (new_auth_view.empty() || new_auth_view.size() > kMaxAuth)
      throw Error(ErrorKind::BadInput, "a TPM key's auth value is 1 to " + std::to_string(kMaxAuth) + " bytes");
    SecretString new_auth{std::string(new_auth_view)};
    if (ref.uri.file) return change_blob_auth(ref, pub, new_auth, progress);
    return change_persistent_auth(ref, new_auth, progress);
  }

  std::vector<std::string> resume_key_auth_change(const std::string& uri_text) override {
    KeyRef ref = resolve(uri_text);
    if (ref.uri.file) return {};  // a blob is replaced by one rename: there is nothing to finish
    ref.auth = existing_auth(ref.uri, false);
    if (ref.auth.empty())
      throw Error(ErrorKind::BadInput, "custody resume needs the new auth value: --pin-shares (the shares the split wrote)");
    const std::uint32_t handle = *ref.uri.handle;
    const std::uint32_t staging = staging_handle(handle);
    std::vector<std::string> done;
    ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          ref.connection->forget_persistent();  // keys move between handles below
          if (!persistent_exists(ctx, staging)) return;
          Object staged = open_persistent(ctx, staging, "TPM handle " + handle_hex(staging));
          TPM2B_PUBLIC staged_pub = read_public(ctx, staged);
          bool at_handle = persistent_exists(ctx, handle);
          if (at_handle) {
            Object current = open_persistent(ctx, handle, ref.what());
            if (marshal_public(read_public(ctx, current)) != marshal_public(staged_pub))
              throw Error(ErrorKind::Conflict, "TPM handle " + handle_hex(staging) + " holds another key than " +
                                                   handle_hex(handle) + ": not an interrupted custody split; not touching it");
          }
          require_signing_key(staged_pub.publicArea, "TPM handle " + handle_hex(staging));
          // The staged copy must open with the shares' secret before anything is freed.
          set_auth(ctx, staged, ref.auth.str());
          test_signature(ctx, staged, staged_pub.publicArea, "the staged copy at " + handle_hex(staging));
          done.push_back("the copy at staging handle " + handle_hex(staging) + " opens with the new auth value");
          Object parent;
          KeyBlob blob;
          blob.pub = staged_pub;
          blob.priv = change_auth_any_parent(ctx, staged, parent, ref.auth.str(), "the staged copy at " + handle_hex(staging));
          if (at_handle) {
            Object current = open_persistent(ctx, handle, ref.what());
            evict_persistent(ctx, current, handle);
            done.push_back("freed " + handle_hex(handle) + " (the copy left there by the interrupted split)");
          }
          persist_copy(ctx, parent, blob, handle, ref.auth.str(), ref.what());
          done.push_back("the key is at " + handle_hex(handle) + " again, with the new auth value (verified)");
          evict_persistent(ctx, staged, staging);
          done.push_back("freed the staging handle " + handle_hex(staging));
        },
        false);
    return done;
  }

  KeyDescription describe(const std::string& uri_text) override {
    KeyRef ref = resolve(uri_text);
    if (ref.uri.file) read_blob(ref);
    // Read back from the TPM itself: a blob is loaded (which also proves this TPM can use it).
    TPMT_PUBLIC pub = ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          Object key = ref.load(ctx);
          return read_public(ctx, key).publicArea;
        },
        true);
    KeyDescription d;
    d.uri = uri_text;
    d.backend = "tpm2";
    d.hardware = true;
    d.public_key = public_key_of(pub);
    d.algorithm = spec_of(pub).name();
    if (ref.uri.handle) {
      d.attributes.emplace_back("handle", handle_hex(*ref.uri.handle));
    } else {
      d.attributes.emplace_back("file", *ref.uri.file);
      d.attributes.emplace_back("parent", handle_hex(ref.parent) + (ref.parent == kOwnerHierarchy
                                                                        ? " (owner hierarchy primary)"
                                                                        : " (persistent storage key)"));
      d.attributes.emplace_back("empty-auth", yes_no(ref.empty_auth));
    }
    d.attributes.emplace_back("tcti", ref.connection->tcti());
    const TPMA_OBJECT a = pub.objectAttributes;
    d.attributes.emplace_back("fixedTPM", yes_no(a & TPMA_OBJECT_FIXEDTPM));
    d.attributes.emplace_back("fixedParent", yes_no(a & TPMA_OBJECT_FIXEDPARENT));
    d.attributes.emplace_back("sensitiveDataOrigin", yes_no(a & TPMA_OBJECT_SENSITIVEDATAORIGIN));
    d.attributes.emplace_back("userWithAuth", yes_no(a & TPMA_OBJECT_USERWITHAUTH));
    d.attributes.emplace_back("noDA", yes_no(a & TPMA_OBJECT_NODA));
    d.attributes.emplace_back("restricted", yes_no(a & TPMA_OBJECT_RESTRICTED));
    d.attributes.emplace_back("sign", yes_no(a & TPMA_OBJECT_SIGN_ENCRYPT));
    d.attributes.emplace_back("decrypt", yes_no(a & TPMA_OBJECT_DECRYPT));
    return d;
  }

 private:
  static std::string key_where(const std::string& uri_text) { return parse_tpm2_uri(uri_text).where(); }

  KeyRef resolve(const std::string& uri_text) {
    KeyRef ref;
    ref.uri = parse_tpm2_uri(uri_text);
    ref.connection = connection(resolve_tcti(ref.uri));
    return ref;
  }

  static void read_blob(KeyRef& ref) {
    const std::string& path = *ref.uri.file;
    Tss2PrivateKey pem = decode_tss2_pem(read_file(path), path);
    KeyBlob blob;
    blob.pub = unmarshal_public(pem.pubkey, path);
    blob.priv = unmarshal_private(pem.privkey, path);
    ref.blob = blob;
    ref.parent = pem.parent;
    ref.empty_auth = pem.empty_auth;
  }

  // The key's public area, and its auth value: from the blob (file=) or the TPM (handle=).
  static TPMT_PUBLIC locate(KeyRef& ref) {
    TPMT_PUBLIC pub = locate_public(ref);
    if (ref.uri.file) {
      if (ref.empty_auth && ref.uri.pin_source)
        throw Error(ErrorKind::BadInput, *ref.uri.file + " has no auth value (emptyAuth TRUE): remove pin-source from the key URI");
      ref.auth = existing_auth(ref.uri, ref.empty_auth);
      if (!ref.empty_auth && ref.auth.empty())
        throw Error(ErrorKind::BadInput, *ref.uri.file +
                                             " needs its auth value: add pin-source=file:/path to the key URI, or give the "
                                             "custodians' shares with --pin-shares");
      return pub;
    }
    ref.auth = existing_auth(ref.uri, false);
    ref.empty_auth = ref.auth.empty();
    return pub;
  }

  // The key's public area only: the blob read (file=), or the TPM asked (handle=). A persistent key that
  // is missing while its staging handle is occupied is reported as an interrupted custody split.
  static TPMT_PUBLIC locate_public(KeyRef& ref) {
    if (ref.uri.file) {
      read_blob(ref);
      return ref.blob->pub.publicArea;
    }
    const std::uint32_t handle = *ref.uri.handle;
    return ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          try {
            Object key = open_persistent(ctx, handle, ref.what());
            return read_public(ctx, key).publicArea;
          } catch (const Error& e) {
            if (e.kind() != ErrorKind::NotFound || !persistent_exists(ctx, staging_handle(handle))) throw;
            throw Error(ErrorKind::NotFound,
                        std::string(e.what()) + "; its staging handle " + handle_hex(staging_handle(handle)) +
                            " holds a key: a custody split was interrupted. Finish it with `hwca custody resume --key URI "
                            "--pin-shares ...` (the new shares)",
                        e.call(), e.backend_code(), e.code_name());
          }
        },
        true);
  }

  // Loads `blob` under `parent`, makes it persistent at `handle` and proves it signs there with `auth`.
  static void persist_copy(ESYS_CONTEXT* ctx, const Object& parent, const KeyBlob& blob, std::uint32_t handle,
                           const std::string& auth, const std::string& what) {
    {
      Object loaded = load_key(ctx, parent, blob, what);
      make_persistent(ctx, loaded, handle);
    }
    Object placed = open_persistent(ctx, handle, "TPM handle " + handle_hex(handle));
    set_auth(ctx, placed, auth);
    test_signature(ctx, placed, blob.pub.publicArea, "TPM handle " + handle_hex(handle));
  }

  // A blob: ObjectChangeAuth gives a new private part; it is loaded and signs with the new auth value
  // before the file is touched; then the file is replaced in one rename (old content until the new one
  // is durable) and the old bytes overwritten.
  std::vector<std::string> change_blob_auth(KeyRef& ref, const TPMT_PUBLIC& pub, const SecretString& new_auth,
                                            Progress& progress) {
    const std::string path = *ref.uri.file;
    Tss2PrivateKey pem = decode_tss2_pem(read_file(path), path);
    KeyBlob fresh = ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          Object parent = storage_parent(ctx, ref.parent);
          KeyBlob out;
          out.pub = ref.blob->pub;
          {
            Object key = load_key(ctx, parent, *ref.blob, ref.what());
            set_auth(ctx, key, ref.auth.str());
            out.priv = change_auth(ctx, key, parent, new_auth.str(), ref.what());
          }
          Object loaded = load_key(ctx, parent, out, ref.what());
          parent.reset();
          set_auth(ctx, loaded, new_auth.str());
          test_signature(ctx, loaded, pub, "the new blob of " + ref.what());
          return out;
        },
        false);
    pem.empty_auth = false;
    pem.privkey = marshal_private(fresh.priv);
    std::string text = encode_tss2_pem(pem);
    progress.committed = true;  // from the rename on, only the new auth value opens this file
    bool wiped = replace_private_file(path, text);
    std::vector<std::string> done{"the TPM made a new blob with the new auth value; it loads and signs (verified)",
                                  path + " replaced in one rename (the old content stayed until the new one was on disk)"};
    done.push_back(wiped ? "the old blob's bytes were overwritten in place (copies elsewhere, backups and copy-on-write "
                           "file systems may still hold it: destroy them)"
                         : "the old blob's bytes could not be overwritten (another name links to them?): destroy every "
                           "old copy of " + path);
    return done;
  }

  // A persistent key at H. The TPM cannot change a persistent key's auth value in place: ObjectChangeAuth
  // returns a new private part, which is loaded and made persistent at the staging handle S; only once S
  // is persisted and signs with the new auth value is H freed; then the new key is made persistent at H
  // again (so the URI keeps working) and S is freed. Before H is freed, any failure frees S again and
  // leaves the key as it was. If the process dies midway, `custody resume` finishes (docs/ceremony.md).
  std::vector<std::string> change_persistent_auth(KeyRef& ref, const SecretString& new_auth, Progress& progress) {
    const std::uint32_t handle = *ref.uri.handle;
    const std::uint32_t staging = staging_handle(handle);
    std::vector<std::string> done;
    ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          ref.connection->forget_persistent();  // keys move between handles below
          if (persistent_exists(ctx, staging))
            throw Error(ErrorKind::Conflict,
                        "TPM handle " + handle_hex(staging) + " (the staging handle of " + handle_hex(handle) +
                            ") is occupied: if a custody split of this key was interrupted, finish it with `hwca custody "
                            "resume --key URI --pin-shares ...`; otherwise free " + handle_hex(staging) + " first");
          Object key = open_persistent(ctx, handle, ref.what());
          set_auth(ctx, key, ref.auth.str());
          Object parent;
          KeyBlob fresh;
          fresh.pub = read_public(ctx, key);
          fresh.priv = change_auth_any_parent(ctx, key, parent, new_auth.str(), ref.what());
          done.push_back("the TPM made a new private part with the new auth value");
          // 1. The new key at S, proven, while H still holds the old one.
          try {
            persist_copy(ctx, parent, fresh, staging, new_auth.str(), "the new key at " + handle_hex(staging));
          } catch (...) {
            try {
              if (persistent_exists(ctx, staging)) {
                Object staged = open_persistent(ctx, staging, "TPM handle " + handle_hex(staging));
                evict_persistent(ctx, staged, staging);
              }
            } catch (...) {
            }
            throw;
          }
          done.push_back("the new key is persistent at staging handle " + handle_hex(staging) + " and signs (verified)");
          // 2. From here the new auth value may be the only way in.
          progress.committed = true;
          try {
            evict_persistent(ctx, key, handle);
            done.push_back("freed " + handle_hex(handle) + " (the copy with the old auth value)");
            // 3. The new key at H again, so that the URI keeps working; then S freed.
            persist_copy(ctx, parent, fresh, handle, new_auth.str(), ref.what());
            parent.reset();
            done.push_back("the new key is persistent at " + handle_hex(handle) + " and signs (verified)");
            Object staged = open_persistent(ctx, staging, "TPM handle " + handle_hex(staging));
            evict_persistent(ctx, staged, staging);
            done.push_back("freed the staging handle " + handle_hex(staging));
          } catch (const Error& e) {
            OPENSSL_cleanse(&fresh.priv, sizeof fresh.priv);
            throw Error(e.kind(),
                        std::string(e.what()) + "; the custody split stopped after the new key was made persistent at " +
                            handle_hex(staging) + ": keep the new shares and finish with `hwca custody resume --key URI "
                            "--pin-shares ...`",
                        e.call(), e.backend_code(), e.code_name());
          }
          OPENSSL_cleanse(&fresh.priv, sizeof fresh.priv);
        },
        false);
    return done;
  }

  std::shared_ptr<Connection> connection(const std::string& tcti) {
    std::lock_guard lock(m_mutex);
    auto& c = m_connections[tcti];
    if (!c) c = std::make_shared<Connection>(tcti);
    return c;
  }

  std::shared_ptr<Provider> provider() {
    std::lock_guard lock(m_mutex);
    if (!m_provider) m_provider = std::make_shared<Provider>();
    return m_provider;
  }

  std::mutex m_mutex;
  std::map<std::string, std::shared_ptr<Connection>> m_connections;
  std::shared_ptr<Provider> m_provider;
};

}  // namespace

std::unique_ptr<KeyBackend> make_tpm2_backend() { return std::make_unique<Tpm2Backend>(); }

}  // namespace hwca::tokens
