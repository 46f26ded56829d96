# Helpers for the crash-consistency tests (k8s_crash.sh, tpm2_crash.sh): the state a killed
# `hwca k8s init` leaves behind, checked in one pass over the output folder and one over the ledger.
# Source it after lib.bash; it uses lib.bash's `fail`, `ok` and `$T`.

# crash_check MODE OUT [STATE]: checks the output folder OUT and the ledger $HWCA_HOME/ledger.db.
#   MODE kill:  after a SIGKILL (or a failed run). Every file under OUT that is not a hidden temporary
#               (".NAME.tmp.XXXXXX") is complete: each *.crt one whole certificate, each *.key a key (the
#               key of its *.crt, or the pair is counted as caught between its two renames), each *.conf a
#               kubeconfig whose certificate, key and CA parse and whose key matches, sa.pub/sa.key a pair,
#               *.flags whole lines. Every certificate on disk is in the ledger with status "issued"; no
#               serial or request id appears twice. The serials on disk are added to $T/seen.json (every
#               certificate that ever reached a file).
#   MODE final: after a complete run: as kill, and no temporary and no mismatched pair is left; every
#               "k8s-file" ledger row is "issued" exactly when its certificate reached a file at some
#               point (is in $T/seen.json) and "orphaned" otherwise; each orphaned row's file now holds a
#               newer certificate (a new serial, status issued). Prints the counts.
#   MODE before: writes $T/complete.json: the serials on disk now, and the files whose certificate is
#               complete (key matches) and up to date for STATE (the kubelet serving certificates' IP).
#   MODE after:  every file listed complete in $T/complete.json still holds a certificate that was on
#               disk before (the final run re-issued nothing that was complete).
# STATE: the worker IP scheme of crash_cluster (0 or 1). Prints one summary line on success.
crash_check() {
  local mode=$1 out=$2 state=${3:-0}
  python3 - "$mode" "$out" "$HWCA_HOME/ledger.db" "$T/seen.json" "$T/complete.json" "$state" <<'PY' || fail "crash_check $mode failed (above)"
import base64, json, os, pickle, re, sqlite3, sys
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

mode, out, ledger_path, seen_path, complete_path, state = sys.argv[1:7]
state = int(state)
TMP = re.compile(r'^\..+\.tmp\.[A-Za-z0-9]{6}$')
problems = []
Loader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)

def spki(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

def serial_hex(cert):
    h = format(cert.serial_number, 'x')
    return h if len(h) % 2 == 0 else '0' + h

def one_pem(data, label, rel):
    begin, end = f'-----BEGIN {label}-----\n'.encode(), f'-----END {label}-----\n'.encode()
    if not data.startswith(begin) or not data.endswith(end) or data.count(b'-----BEGIN ') != 1:
        raise ValueError(f'not exactly one whole {label} PEM block')

def load_cert(data, rel):
    one_pem(data, 'CERTIFICATE', rel)
    return x509.load_pem_x509_certificate(data)

def load_key(data, rel):
    if data.count(b'-----BEGIN ') != 1 or not data.rstrip(b'\n').endswith(b'-----') or not data.endswith(b'\n'):
        raise ValueError('not exactly one whole key PEM block')
    return serialization.load_pem_private_key(data, password=None)

def is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False

def san_ips(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]

def cert_info(c):
    return {'serial': serial_hex(c), 'spki': spki(c.public_key()), 'ca': is_ca(c), 'ips': san_ips(c)}

# What one file holds. Files are only ever replaced by a rename (a new inode), so a file whose inode,
# mtime and size are those of an earlier check is not parsed again ($T/crash-cache.pickle).
def parse(rel, name, data):
    if name.endswith('.crt'):
        return {'kind': 'crt', **cert_info(load_cert(data, rel))}
    if name.endswith('.key'):
        return {'kind': 'key', 'spki': spki(load_key(data, rel).public_key())}
    if name.endswith('.pub'):
        one_pem(data, 'PUBLIC KEY', rel)
        return {'kind': 'pub', 'spki': spki(serialization.load_pem_public_key(data))}
    if name.endswith('.conf'):
        doc = yaml.load(data, Loader=Loader)
        user = doc['users'][0]['user']
        cert_pem = base64.b64decode(user['client-certificate-data'], validate=True)
        key_pem = base64.b64decode(user['client-key-data'], validate=True)
        ca_pem = base64.b64decode(doc['clusters'][0]['cluster']['certificate-authority-data'], validate=True)
        info = {'kind': 'conf', **cert_info(load_cert(cert_pem, rel))}
        info['ca_serial'] = serial_hex(load_cert(ca_pem, rel))
        if spki(load_key(key_pem, rel).public_key()) != info['spki']:
            raise ValueError('the kubeconfig key does not match its certificate')
        return info
    if name.endswith('.flags'):
        text = data.decode()
        if not text.endswith('\n') or not all(l.startswith('-') for l in text.splitlines()):
            raise ValueError('not whole flag lines')
        return {'kind': 'flags'}
    raise ValueError('unexpected file')

cache_path = os.path.join(os.path.dirname(seen_path), 'crash-cache.pickle')
try:
    cache = pickle.load(open(cache_path, 'rb'))
except Exception:
    cache = {}
new_cache = {}
certs = {}      # rel -> info        (*.crt and kubeconfig client certificates)
keys = {}       # rel -> spki        (NAME.key by NAME.crt; *.pub by its own name)
ca_serials = {} # rel -> serial of a kubeconfig's CA data
temporaries, mismatched = [], []
files = 0
for root, dirs, names in os.walk(out):
    for name in names:
        full = os.path.join(root, name)
        rel = os.path.relpath(full, out)
        if TMP.match(name):
            temporaries.append(rel)
            continue
        files += 1
        try:
            st = os.stat(full)
            ident = (rel, st.st_ino, st.st_mtime_ns, st.st_size)
            info = cache.get(ident)
            if info is None:
                info = parse(rel, name, open(full, 'rb').read())
            new_cache[ident] = info
        except Exception as e:
            problems.append(f'{rel}: partial or unreadable: {e}')
            continue
        if info['kind'] in ('crt', 'conf'):
            certs[rel] = info
        if info['kind'] == 'conf':
            ca_serials[rel] = info['ca_serial']
        if info['kind'] == 'key':
            keys[rel[:-4] + '.crt'] = info['spki']
        if info['kind'] == 'pub':
            keys[rel] = info['spki']
pickle.dump(new_cache, open(cache_path + '.new', 'wb'))
os.replace(cache_path + '.new', cache_path)

# Pairs: NAME.crt and NAME.key (a CA's key is in the device, never on disk); sa.key and sa.pub.
for rel, pub in keys.items():
    if rel.endswith('/sa.crt'):
        pubrel = rel[:-4] + '.pub'
        if pubrel in keys and keys[pubrel] != pub:
            problems.append(f'{pubrel}: not the public half of sa.key')
    elif rel.endswith('.crt') and rel not in certs:
        mismatched.append(rel)  # a key whose certificate has not arrived (caught between the two renames)
for rel, info in certs.items():
    if not rel.endswith('.crt'):
        continue
    if info['ca']:
        if rel in keys:
            problems.append(f'{rel[:-4]}.key: a CA key on disk')
    elif keys.get(rel) != info['spki']:
        mismatched.append(rel)  # no key yet, or the previous one (caught between the two renames)

# The ledger (opened read-write: a read-only open of a WAL database fails once its -shm file is gone).
if not os.path.isfile(ledger_path):
    sys.exit(f'crash_check: no ledger at {ledger_path}')
db = sqlite3.connect(ledger_path)
rows = {s: (st, rid or '') for s, st, rid in db.execute('SELECT serial, status, request_id FROM certificates')}
dups = db.execute('SELECT serial FROM certificates GROUP BY serial HAVING COUNT(*) > 1').fetchall()
dups += db.execute('SELECT request_id FROM certificates WHERE request_id IS NOT NULL GROUP BY request_id HAVING COUNT(*) > 1').fetchall()
db.close()
if dups:
    problems.append(f'serials or request ids twice in the ledger: {dups[:5]}')
on_disk = {}
for rel, info in certs.items():
    on_disk.setdefault(info['serial'], rel)
for rel, serial in ca_serials.items():
    on_disk.setdefault(serial, rel)
for serial, rel in on_disk.items():
    if serial not in rows:
        problems.append(f'{rel}: serial {serial} is not in the ledger')
    elif rows[serial][0] != 'issued':
        problems.append(f'{rel}: serial {serial} is {rows[serial][0]} in the ledger, not issued')

seen = set(json.load(open(seen_path))) if os.path.exists(seen_path) else set()
seen |= set(on_disk)
if mode in ('kill', 'final'):
    json.dump(sorted(seen), open(seen_path + '.new', 'w'))
    os.replace(seen_path + '.new', seen_path)

FILE = re.compile(r'^k8s-file:([0-9]+):(/.+)$')
abs_out = os.path.realpath(out)
summary = f'{files} files, {len(on_disk)} distinct certificates on disk, {len(rows)} ledger rows'
if mode == 'final':
    if temporaries:
        problems.append(f'{len(temporaries)} temporaries left after a complete run: {temporaries[:3]}')
    if mismatched:
        problems.append(f'{len(mismatched)} key/certificate pairs do not match after a complete run: {mismatched[:3]}')
    by_path = {}
    for serial, (st, rid) in rows.items():
        m = FILE.match(rid)
        if m:
            by_path.setdefault(m.group(2), []).append((int(m.group(1)), serial, st))
    orphaned = issued = 0
    for path, items in by_path.items():
        rel = os.path.relpath(path, abs_out)
        now = certs.get(rel)
        for run, serial, st in items:
            if st == 'issued':
                issued += 1
                if serial not in seen:
                    problems.append(f'{rel}: {serial} (run {run}) never reached a file but is not marked orphaned')
            elif st == 'orphaned':
                orphaned += 1
                if serial in seen:
                    problems.append(f'{rel}: {serial} (run {run}) reached a file but is marked orphaned')
                if not now or now['serial'] == serial:
                    problems.append(f'{rel}: orphaned {serial} was not issued again')
                else:
                    newer = [r for r, s, _ in items if s == now['serial']]
                    if not newer or newer[0] <= run or rows[now['serial']][0] != 'issued':
                        problems.append(f"{rel}: holds {now['serial']}, not a newer issued certificate than orphaned {serial}")
            else:
                problems.append(f'{rel}: {serial} has status {st}')
    summary += f'; k8s-file rows: {issued} issued, {orphaned} orphaned; {len(seen)} certificates ever on disk'
    print(f'orphaned={orphaned}')

def up_to_date(rel, info):
    m = re.match(r'^nodes/w([0-9]+)/pki/kubelet\.crt$', rel)
    if not m:
        return True
    i = int(m.group(1))
    return info['ips'] == [f'10.{(i >> 16) % 256 + 100 * state}.{(i >> 8) % 256}.{i % 256}']

if mode == 'before':
    complete = {}
    for rel, info in certs.items():
        if rel in mismatched:
            continue  # no key, or not its key: incomplete
        if up_to_date(rel, info):
            complete[rel] = info['serial']
    json.dump({'complete': complete, 'serials': sorted(on_disk)}, open(complete_path, 'w'))
    summary += f'; {len(complete)} complete and up to date'
if mode == 'after':
    before = json.load(open(complete_path))
    was = set(before['serials'])
    kept = 0
    for rel, serial in before['complete'].items():
        now = certs.get(rel)
        if not now:
            problems.append(f'{rel}: gone after the final run')
        elif now['serial'] not in was:
            problems.append(f"{rel}: was complete ({serial}) but the final run issued {now['serial']} for it")
        else:
            kept += 1
    summary += f'; {kept} complete files kept their certificates'

summary += f'; {len(temporaries)} temporaries, {len(mismatched)} pairs between their renames'
if problems:
    for p in problems[:20]:
        print('crash_check:', p, file=sys.stderr)
    print(f'crash_check: {len(problems)} problems ({summary})', file=sys.stderr)
    sys.exit(1)
print(summary)
PY
  ok
}

# ms: milliseconds since the epoch. running PID: alive and not yet a zombie (a finished child stays one
# until `wait`, and `kill -0` still succeeds on it).
ms() { date +%s%3N; }
running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# crash_ledger_ok: the ledger passes SQLite's integrity check and `hwca audit verify` (the audit chain).
crash_ledger_ok() {
  local r
  [ -s "$HWCA_HOME/ledger.db" ] || fail "no ledger at $HWCA_HOME/ledger.db"
  r=$(sqlite3 "$HWCA_HOME/ledger.db" 'PRAGMA integrity_check') || fail "sqlite3 cannot open the ledger"
  [ "$r" = ok ] || fail "PRAGMA integrity_check: $r"
  "$HWCA" audit verify > "$T/audit.out" 2> "$T/audit.err" || fail "hwca audit verify: $(cat "$T/audit.err")"
  grep -q '^audit chain intact' "$T/audit.out" || fail "audit verify: $(cat "$T/audit.out")"
  ok
}

# crash_cluster STATE WORKERS CP KEY_PREFIX SUFFIX FILE: a cluster file with CP control-plane nodes
# (cp1.., 127.0.0.1) and WORKERS workers (w1.. at 10.(100*STATE).x.y), ECDSA-P256 leaves, the three CA
# keys KEY_PREFIX<object>SUFFIX (object kubernetes-ca, etcd-ca, front-proxy-ca).
crash_cluster() {
  local state=$1 workers=$2 cp=$3 prefix=$4 suffix=$5 file=$6 i
  {
    printf 'name: kubernetes\nkubernetesVersion: "1.30"\ncontrolPlaneEndpoint: 127.0.0.1:6443\n'
    printf 'keyAlgorithm: ecdsa-p256\ncaKeyAlgorithm: ecdsa-p256\ncontrolPlane:\n'
    for i in $(seq 1 "$cp"); do printf '  - {name: cp%d, ip: 127.0.0.1}\n' "$i"; done
    printf 'cas:\n'
    for i in kubernetes-ca etcd-ca front-proxy-ca; do printf '  %s:\n    key: "%s%s%s"\n' "$i" "$prefix" "$i" "$suffix"; done
    printf 'workers:\n'
    awk -v n="$workers" -v s="$state" 'BEGIN { for (i = 1; i <= n; i++)
      printf "  - {name: w%d, ip: 10.%d.%d.%d}\n", i, int(i / 65536) % 256 + 100 * s, int(i / 256) % 256, i % 256 }'
  } > "$file"
}
