#include "tokens/tpm2/tpm2_backend.h"

#include "core/base/error.h"
#include "tokens/file/file_backend.h"
#include "tokens/pin.h"
#include "tokens/tpm2/esys.h"
#include "tokens/tpm2/provider.h"
#include "tokens/tpm2/tss2_key.h"
#include "tokens/tpm2/uri.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <sys/stat.h>

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
    // The key is loaded for this one signature and flushed right after it: nothing stays in the TPM's
    // few transient slots between signatures, and a restarted swtpm costs nothing but a reconnect.
    return m_ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          Object key = m_ref.load(ctx);
          set_auth(ctx, key, m_ref.auth.str());
          return tpm2::sign_digest(ctx, key, m_pub, md, digest, m_ref.what());
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

void require_signing_key(const TPMT_PUBLIC& pub, const std::string& what) {
  if (!(pub.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) || (pub.objectAttributes & TPMA_OBJECT_RESTRICTED))
    throw Error(ErrorKind::BadInput, what + " is not an unrestricted signing key (hwca needs sign set and restricted clear)");
  spec_of(pub);
}

class Tpm2Backend final : public KeyBackend {
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
    if (ref.uri.file) {
      read_blob(ref);
      if (ref.empty_auth && ref.uri.pin_source)
        throw Error(ErrorKind::BadInput, *ref.uri.file + " has no auth value (emptyAuth TRUE): remove pin-source from the key URI");
      if (!ref.empty_auth && !ref.uri.pin_source)
        throw Error(ErrorKind::BadInput, *ref.uri.file + " needs its auth value: add pin-source=file:/path to the key URI");
      ref.auth = auth_of(ref.uri);
      return ref.blob->pub.publicArea;
    }
    ref.auth = auth_of(ref.uri);
    ref.empty_auth = ref.auth.empty();
    return ref.connection->run(
        [&](ESYS_CONTEXT* ctx) {
          Object key = open_persistent(ctx, *ref.uri.handle, ref.what());
          return read_public(ctx, key).publicArea;
        },
        true);
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
