// tpm2: key URIs.
//   tpm2:handle=0x81000100?tcti=swtpm:host=127.0.0.1,port=2321&pin-source=file:/path/auth
//   tpm2:file=/var/lib/hwca/root.tss2.pem
// Exactly one of handle= (a persistent key in the owner hierarchy, 0x81000000-0x817FFFFF) or file= (a
// "TSS2 PRIVATE KEY" PEM blob). Query attributes: tcti= (a TCTI loader string), pin-source= (the key's
// auth value). Values are percent-decoded. pin-value is refused: a TPM auth value is never in a URI.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace hwca::tokens::tpm2 {

struct Tpm2Uri {
  std::optional<std::uint32_t> handle;
  std::optional<std::string> file;
  std::optional<std::string> tcti;
  std::optional<std::string> pin_source;

  // "handle 0x81000100" or "key file /path" for messages.
  std::string where() const;
};

// Error(BadInput, "invalid tpm2: key URI: <reason>") for anything malformed.
Tpm2Uri parse_tpm2_uri(const std::string& uri);

// The TCTI to use: the URI's tcti=, else $HWCA_TCTI, $TPM2TSS_TCTI, $TPM2OPENSSL_TCTI, else
// "device:/dev/tpmrm0" when that device exists, else "swtpm" (swtpm on 127.0.0.1:2321).
std::string resolve_tcti(const Tpm2Uri& uri);

// "0x81000100"
std::string handle_hex(std::uint32_t handle);

}  // namespace hwca::tokens::tpm2
