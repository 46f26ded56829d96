// The "TSS2 PRIVATE KEY" PEM format of draft-bottomley-tpm2-keys, as tpm2-openssl and tpm2-tss-engine
// write it:
//   TPMKey ::= SEQUENCE {
//     type       OBJECT IDENTIFIER,            -- 2.23.133.10.1.3 (loadable key)
//     emptyAuth  [0] EXPLICIT BOOLEAN OPTIONAL,
//     parent     INTEGER,                      -- 0x40000001 (owner hierarchy primary) or 0x81xxxxxx
//     pubkey     OCTET STRING,                 -- TPM2B_PUBLIC, marshalled
//     privkey    OCTET STRING }                -- TPM2B_PRIVATE, marshalled
// Encoded and decoded with OpenSSL's ASN.1 templates.
#pragma once

#include <cstdint>
#include <string>

namespace hwca::tokens::tpm2 {

struct Tss2PrivateKey {
  bool empty_auth = false;
  std::uint32_t parent = 0x40000001;
  std::string pubkey;   // marshalled TPM2B_PUBLIC
  std::string privkey;  // marshalled TPM2B_PRIVATE
};

std::string encode_tss2_pem(const Tss2PrivateKey& key);
// Error(BadInput) naming `what` for anything that is not a loadable TSS2 PRIVATE KEY.
Tss2PrivateKey decode_tss2_pem(const std::string& pem, const std::string& what);

}  // namespace hwca::tokens::tpm2
