// The TPM's own limit: raw Esys_Sign signatures per second on a key that is loaded ONCE, through
// tpm2-tss ESAPI. This is the reference the TPM issuance figures are divided by.
//
//   tpm_sign KEY-URI SECONDS [reload]
// KEY-URI is a tpm2: URI as hwca takes it (tpm2:handle=0x81...?tcti=... or tpm2:file=...?tcti=...,
// with pin-source=file: for the key's auth value): the same TPM and the same key hwca signs with.
// The key is opened (persistent) or loaded under its storage parent (blob) once, before the clock
// starts; then Esys_Sign runs in a loop on one thread (a TPM executes one command at a time: more
// threads would only queue behind the same lock). The digest is SHA-256 (P-256, RSA-2048) or
// SHA-384 (P-384, RSA-3072), as hwca uses; the scheme ECDSA or RSASSA-PKCS1-v1_5.
// With `reload`, every signature first does what the tpm2: backend does per signature
// (tokens/tpm2/tpm2_backend.cpp, TpmKey::sign_digest): for a persistent key, set the auth value on the
// ESYS_TR the connection keeps open; for a blob, create the storage primary, load the blob, flush the
// primary, set the auth value, sign and flush the key. This separates the backend's per-signature TPM
// work from the engine's.
// prints: {"reload":false,"threads":1,"signatures":N,"seconds":S,"per_second":R}
#include "core/base/algorithm.h"
#include "core/base/error.h"
#include "tokens/pin.h"
#include "tokens/tpm2/esys.h"
#include "tokens/tpm2/tss2_key.h"
#include "tokens/tpm2/uri.h"

#include <tss2/tss2_esys.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

using namespace hwca;
using namespace hwca::tokens::tpm2;

int main(int argc, char** argv) {
  if (argc != 3 && !(argc == 4 && std::string(argv[3]) == "reload")) {
    std::fprintf(stderr, "usage: tpm_sign KEY-URI SECONDS [reload]\n");
    return 2;
  }
  ::setenv("TSS2_LOG", "all+NONE", 0);
  try {
    const std::string uri_text = argv[1];
    const double seconds = std::atof(argv[2]);
    const bool reload = argc == 4;
    if (seconds <= 0 || seconds > 120) throw Error(ErrorKind::Usage, "bad SECONDS");
    const Tpm2Uri uri = parse_tpm2_uri(uri_text);
    tokens::SecretString auth;
    if (uri.pin_source) auth = tokens::read_pin_source(*uri.pin_source);

    Connection connection(resolve_tcti(uri));
    long total = 0;
    double elapsed = 0;
    connection.run(
        [&](ESYS_CONTEXT* ctx) {
          // The key as the backend loads it (per signature with `reload`; here once, before the loop).
          std::optional<KeyBlob> blob;
          std::uint32_t parent_handle = kOwnerHierarchy;
          if (uri.file) {
            Tss2PrivateKey pem = decode_tss2_pem(read_file(*uri.file), *uri.file);
            blob.emplace();
            blob->pub = unmarshal_public(pem.pubkey, *uri.file);
            blob->priv = unmarshal_private(pem.privkey, *uri.file);
            parent_handle = pem.parent;
          }
          auto load = [&]() {
            Object k;
            if (uri.handle) {
              k = open_persistent(ctx, *uri.handle, uri.where());
            } else {
              Object parent = storage_parent(ctx, parent_handle);
              k = load_key(ctx, parent, *blob, uri.where());
            }  // the parent is flushed here
            set_auth(ctx, k, auth.str());
            return k;
          };
          Object key = load();
          const TPMT_PUBLIC pub = blob ? blob->pub.publicArea : read_public(ctx, key).publicArea;
          const bool reload_blob = reload && !uri.handle;  // a persistent key stays open, as in the backend
          if (reload_blob) key.reset();

          const KeySpec spec = spec_of(pub);
          const bool sha384 = (spec.type == KeySpec::Type::Ec && spec.bits == 384) ||
                              (spec.type == KeySpec::Type::Rsa && spec.bits >= 3072 && spec.bits < 4096);
          TPM2B_DIGEST digest{};
          digest.size = sha384 ? 48 : 32;
          std::memset(digest.buffer, 0x5a, digest.size);
          TPMT_SIG_SCHEME scheme{};
          const TPMI_ALG_HASH hash = sha384 ? TPM2_ALG_SHA384 : TPM2_ALG_SHA256;
          if (pub.type == TPM2_ALG_ECC) {
            scheme.scheme = TPM2_ALG_ECDSA;
            scheme.details.ecdsa.hashAlg = hash;
          } else {
            scheme.scheme = TPM2_ALG_RSASSA;
            scheme.details.rsassa.hashAlg = hash;
          }
          TPMT_TK_HASHCHECK validation{};
          validation.tag = TPM2_ST_HASHCHECK;
          validation.hierarchy = TPM2_RH_NULL;

          // Bounded by time and by count (a fast TPM still stops).
          constexpr long kMaxSignatures = 1000000;
          const auto start = std::chrono::steady_clock::now();
          for (;;) {
            if (reload_blob) key = load();
            else if (reload) set_auth(ctx, key, auth.str());
            TPMT_SIGNATURE* sig = nullptr;
            TSS2_RC rc = Esys_Sign(ctx, key.tr(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &digest, &scheme,
                                   &validation, &sig);
            if (rc != TSS2_RC_SUCCESS) throw_rc(ErrorKind::Token, "Esys_Sign", rc, "signing with " + uri.where());
            Esys_Free(sig);
            if (reload_blob) key.reset();
            ++total;
            digest.buffer[digest.size - 1]++;
            elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            if (elapsed >= seconds || total >= kMaxSignatures) break;
          }
        },
        false);
    std::printf("{\"reload\":%s,\"threads\":1,\"signatures\":%ld,\"seconds\":%.3f,\"per_second\":%.1f}\n", reload ? "true" : "false",
                total, elapsed, static_cast<double>(total) / elapsed);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpm_sign: %s\n", e.what());
    return 1;
  }
  return 0;
}
