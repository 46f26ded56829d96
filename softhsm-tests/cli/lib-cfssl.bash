# Helpers for the cfssl interoperability tests (softhsm-tests/cli/cfssl_*.sh).
# Source it after lib.bash; it sources scripts/ports.bash and uses lib.bash's `fail`, `ok` and `$T`.

# subject_asn1 CERT: the subject Name of a PEM certificate as openssl asn1parse shows it, without the
# offsets: one line per element with depth, length, type and value, so that two certificates whose
# subjects print the same have the same DER subject (attribute order, string types such as
# PRINTABLESTRING vs UTF8STRING, and multi-valued RDNs included).
subject_asn1() { _name_asn1 "$1" 6; }
# issuer_asn1 CERT: the same for the issuer Name.
issuer_asn1() { _name_asn1 "$1" 4; }
_name_asn1() {
  # Inside tbsCertificate (depth 2): [0] version, serial, signature, issuer, validity, subject, ...
  openssl asn1parse -in "$1" | awk -v want="$2" '
    /:d=2 / { n++; if (n > want) exit }
    n == want { sub(/^ *[0-9]+:/, ""); sub(/hl= *[0-9]+ /, ""); print }'
}

# ext_text CERT NAME: the openssl -ext text of one extension (its header line, with ": critical" when
# critical, and its value), or nothing when the certificate does not have it.
ext_text() {
  openssl x509 -in "$1" -noout -ext "$2" 2>/dev/null | sed 's/[[:space:]]*$//' | grep -v '^No extensions' || true
}

# ext_line CERT NAME: ext_text on one line, single-spaced: "X509v3 Key Usage: critical Certificate Sign, CRL Sign".
ext_line() { ext_text "$1" "$2" | tr -s ' \n' ' ' | sed 's/ $//'; }

# ext_value CERT NAME: just the value lines of ext_text.
ext_value() { ext_text "$1" "$2" | tail -n +2 | sed 's/^[[:space:]]*//'; }

# ski CERT / aki CERT: the key identifiers as hex (AKI without the "keyid:" prefix), or nothing.
ski() { ext_value "$1" subjectKeyIdentifier; }
aki() { ext_value "$1" authorityKeyIdentifier | sed -n 's/^keyid://p;/^[0-9A-F][0-9A-F]:/p' | head -1; }

# validity_seconds CERT: notAfter - notBefore in seconds.
validity_seconds() {
  local nb na
  nb=$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)
  na=$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)
  echo $(( $(date -u -d "$na" +%s) - $(date -u -d "$nb" +%s) ))
}

# not_after CERT: notAfter as seconds since the epoch.
not_after() { date -u -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s; }

# leaf_validity_ok LEAF CA SECONDS: LEAF is valid for SECONDS, or for less because hwca ended it at its
# CA's notAfter (hwca never issues past its CA; cfssl does). One check.
leaf_validity_ok() {
  local v; v=$(validity_seconds "$1")
  if [ "$v" = "$3" ]; then ok; return; fi
  [ "$v" -lt "$3" ] && [ "$(not_after "$1")" = "$(not_after "$2")" ] ||
    fail "$1: valid for $v s, want $3 s (or ending at $2's notAfter)"
  ok
}

# sig_alg CERT: the signature algorithm name.
sig_alg() { openssl x509 -in "$1" -noout -text | sed -n 's/^ *Signature Algorithm: //p' | head -1; }

# cert_profile CERT: every field the side-by-side comparison looks at, one per line, in a form that
# does not depend on the issuing key (key identifiers are reduced to present/absent and "AKI = issuer
# SKI" is checked separately by the caller).
cert_profile() {
  local c=$1
  echo "subject-rfc2253: $(openssl x509 -in "$c" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')"
  subject_asn1 "$c" | sed 's/^/subject-der: /'
  echo "san: $(ext_value "$c" subjectAltName | tr '\n' ' ')"
  echo "key-usage: $(ext_text "$c" keyUsage | tr '\n' ' ' | tr -s ' ')"
  echo "ext-key-usage: $(ext_text "$c" extendedKeyUsage | tr '\n' ' ' | tr -s ' ')"
  echo "basic-constraints: $(ext_text "$c" basicConstraints | tr '\n' ' ' | tr -s ' ')"
  echo "ski: $([ -n "$(ski "$c")" ] && echo present || echo absent)"
  echo "aki: $([ -n "$(aki "$c")" ] && echo present || echo absent)"
  echo "validity-seconds: $(validity_seconds "$c")"
  echo "signature: $(sig_alg "$c")"
}

# verify_chain ROOT LEAF [INTERMEDIATE]: openssl verify and certtool --verify-chain both accept LEAF
# (through INTERMEDIATE when given) up to ROOT. Two checks.
verify_chain() {
  local root=$1 leaf=$2 int=${3:-} out
  if [ -n "$int" ]; then
    out=$(openssl verify -CAfile "$root" -untrusted "$int" "$leaf" 2>&1) || fail "openssl verify $leaf: $out"
  else
    out=$(openssl verify -CAfile "$root" "$leaf" 2>&1) || fail "openssl verify $leaf: $out"
  fi
  [ "$out" = "$leaf: OK" ] || fail "openssl verify $leaf: $out"
  ok
  local bundle="$T/.chain.$$.pem"
  if [ -n "$int" ]; then cat "$leaf" "$int" "$root" > "$bundle"; else cat "$leaf" "$root" > "$bundle"; fi
  out=$(certtool --verify-chain --infile "$bundle" 2>&1) || fail "certtool --verify-chain $leaf: $out"
  printf '%s\n' "$out" | grep -q 'Chain verification output: Verified' || fail "certtool --verify-chain $leaf: $out"
  # certtool also accepts a chain ending in an untrusted self-signed root: check it against ROOT too.
  out=$(certtool --verify --load-ca-certificate "$root" --infile "$bundle" 2>&1) || fail "certtool --verify $leaf: $out"
  printf '%s\n' "$out" | grep -q 'Chain verification output: Verified' || fail "certtool --verify $leaf: $out"
  rm -f "$bundle"
  ok
}

# verify_fails ROOT LEAF: openssl verify must refuse LEAF against ROOT.
verify_fails() {
  if openssl verify -CAfile "$1" "$2" >/dev/null 2>&1; then fail "openssl verify accepted $2 against $1"; fi
  ok
}

# free_port VAR: sets VAR to a random TCP port below the ephemeral range (scripts/ports.bash) that no
# socket holds in any state (and that was not handed out before in this run). Call it without $(...)
# so that it remembers what it handed out.
# shellcheck source=../../scripts/ports.bash
source "$HWCA_SOURCE_DIR/scripts/ports.bash"
_given_ports=" "
free_port() {
  local _var=$1
  local p i
  for i in $(seq 1 200); do
    p=$(random_port)
    case "$_given_ports" in *" $p "*) continue ;; esac
    if ! port_used "$p"; then
      _given_ports="$_given_ports$p "
      printf -v "$_var" '%s' "$p"
      return 0
    fi
  done
  fail "no free port found"
}

# same_pubkey CERT KEYPEM: the certificate holds the public half of the private key file.
same_pubkey() {
  [ "$(openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" = \
    "$(openssl pkey -in "$2" -pubout -outform DER | sha256sum)" ] || fail "$1 does not hold the public key of $2"
  ok
}

# cfssljson_bare NAME < JSON: the real cfssljson -bare, failing the test when it fails.
cfssljson_bare() { cfssljson -bare "$1" || fail "cfssljson -bare $1 failed"; }
