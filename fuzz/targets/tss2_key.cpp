// "TSS2 PRIVATE KEY" PEM blobs (tokens/tpm2/tss2_key.h) as `tpm2:file=` reads them, and what the TPM
// backend does with a decoded blob before the TPM sees it: unmarshal TPM2B_PUBLIC / TPM2B_PRIVATE and
// turn the public area into a software key. Also checks decode -> encode -> decode.
#include "fuzz.h"

#include "tokens/tpm2/esys.h"
#include "tokens/tpm2/tss2_key.h"

using namespace hwca::tokens::tpm2;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hwca::fuzz::accepts([&] {
    Tss2PrivateKey key = decode_tss2_pem(hwca::fuzz::bytes(data, size), "key file");
    Tss2PrivateKey again = decode_tss2_pem(encode_tss2_pem(key), "re-encoded key");
    HWCA_FUZZ_CHECK(again.empty_auth == key.empty_auth && again.parent == key.parent && again.pubkey == key.pubkey &&
                    again.privkey == key.privkey);
    (void)unmarshal_private(key.privkey, "key file");
    TPM2B_PUBLIC pub = unmarshal_public(key.pubkey, "key file");
    (void)spec_of(pub.publicArea);
    hwca::EVP_PKEY_ptr pkey = public_key_of(pub.publicArea);
    HWCA_FUZZ_CHECK(pkey != nullptr);
  });
  return 0;
}
