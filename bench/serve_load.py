#!/usr/bin/env python3
"""A small cfssl API client for `hwca serve` (and `cfssl serve`): load, idle-connection floods.

  serve_load.py load  --url http://127.0.0.1:PORT --key HEX --profile P --csr-dir DIR --count N
                      --out CERTS.pem --serials SERIALS.txt [--stop-on-disconnect]
      One keep-alive connection, N authsign requests in a row (the CSRs in DIR, round robin).
      Every certificate received is appended (and flushed) to CERTS.pem, its serial (lowercase hex)
      to SERIALS.txt (whole bytes, as the ledger writes them). Prints one JSON line: {"ok":..,"errors":..,"disconnected":..,"seconds":..}.
      Exit 0 when every request got a certificate (or, with --stop-on-disconnect, when the only
      failure was the server going away), else 1.

  serve_load.py idle  --url http://127.0.0.1:PORT --count 1000 --key HEX --profile P --csr FILE
                      [--after-hold SECONDS]
      Opens COUNT connections and sends nothing on them; then, from another connection, GET /healthz
      and one authsign, each with a 2-second client timeout. Prints one JSON line with both
      statuses and times. With --after-hold, then waits up to SECONDS for the server to close the
      idle connections and reports how many it closed.

Standard library plus python3-cryptography (Debian) for reading serials.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import resource
import select
import socket
import sys
import time
import urllib.parse

from cryptography import x509


def authsign_body(key: bytes, profile: str, csr_pem: str) -> bytes:
    request = json.dumps({"certificate_request": csr_pem, "profile": profile}).encode()
    token = hmac.new(key, request, hashlib.sha256).digest()
    return json.dumps({"token": base64.b64encode(token).decode(), "request": base64.b64encode(request).decode()}).encode()


def host_port(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def cmd_load(a):
    host, port = host_port(a.url)
    key = bytes.fromhex(a.key)
    csrs = [open(os.path.join(a.csr_dir, f)).read() for f in sorted(os.listdir(a.csr_dir)) if f.endswith(".csr")]
    if not csrs:
        sys.exit("no CSRs in " + a.csr_dir)
    bodies = [authsign_body(key, a.profile, c) for c in csrs]  # tokens differ per CSR
    out = open(a.out, "a")
    serials = open(a.serials, "a")
    ok = errors = 0
    disconnected = False
    first_error = ""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    start = time.monotonic()
    for i in range(a.count):
        body = bodies[i % len(bodies)]
        try:
            conn.request("POST", "/api/v1/cfssl/authsign", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            if a.stop_on_disconnect:
                disconnected = True
                first_error = first_error or repr(e)
                break
            # One reconnect per failure (a keep-alive connection may be closed between requests).
            errors += 1
            first_error = first_error or repr(e)
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            continue
        try:
            env = json.loads(data)
        except ValueError:
            env = {}
        if resp.status == 200 and env.get("success") and env.get("result", {}).get("certificate"):
            pem = env["result"]["certificate"]
            cert = x509.load_pem_x509_certificate(pem.encode())
            out.write(pem if pem.endswith("\n") else pem + "\n")
            out.flush()
            serial = "%x" % cert.serial_number
            serials.write(("0" + serial if len(serial) % 2 else serial) + "\n")  # as the ledger writes it
            serials.flush()
            ok += 1
        else:
            errors += 1
            first_error = first_error or ("HTTP %d %s" % (resp.status, data[:200]))
        if resp.will_close:
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
    seconds = time.monotonic() - start
    print(json.dumps({"ok": ok, "errors": errors, "disconnected": disconnected, "seconds": round(seconds, 3),
                      "per_second": round(ok / seconds, 1) if seconds > 0 else None, "first_error": first_error}))
    sys.exit(0 if errors == 0 and (ok == a.count or (a.stop_on_disconnect and disconnected)) else 1)


def timed_request(host, port, method, path, body=None):
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection(host, port, timeout=2)
        c.request(method, path, body)
        r = c.getresponse()
        data = r.read()
        c.close()
        status = r.status
        ok = status == 200 and (path == "/healthz" or json.loads(data).get("success") is True)
    except (OSError, http.client.HTTPException, ValueError) as e:
        status, ok = repr(e), False
    return {"status": status, "ok": ok, "seconds": round(time.monotonic() - t0, 3)}


def cmd_idle(a):
    host, port = host_port(a.url)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    idle = []
    for _ in range(a.count):
        s = socket.create_connection((host, port), timeout=5)
        idle.append(s)
    health = timed_request(host, port, "GET", "/healthz")
    sign = timed_request(host, port, "POST", "/api/v1/cfssl/authsign",
                         authsign_body(bytes.fromhex(a.key), a.profile, open(a.csr).read()))
    result = {"idle": len(idle), "healthz": health, "authsign": sign}
    if a.after_hold:
        # The server should close idle connections after its header timeout.
        deadline = time.monotonic() + a.after_hold
        open_socks = set(idle)
        for s in idle:
            s.setblocking(False)
        while open_socks and time.monotonic() < deadline:
            r, _, _ = select.select(list(open_socks)[:1000], [], [], 0.5)
            for s in r:
                try:
                    if s.recv(1) == b"":
                        open_socks.discard(s)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    open_socks.discard(s)
        result["closed_by_server"] = len(idle) - len(open_socks)
    for s in idle:
        s.close()
    print(json.dumps(result))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--url", required=True)
    lo.add_argument("--key", required=True)
    lo.add_argument("--profile", required=True)
    lo.add_argument("--csr-dir", required=True)
    lo.add_argument("--count", type=int, required=True)
    lo.add_argument("--out", required=True)
    lo.add_argument("--serials", required=True)
    lo.add_argument("--stop-on-disconnect", action="store_true")
    idl = sub.add_parser("idle")
    idl.add_argument("--url", required=True)
    idl.add_argument("--count", type=int, default=1000)
    idl.add_argument("--key", required=True)
    idl.add_argument("--profile", required=True)
    idl.add_argument("--csr", required=True)
    idl.add_argument("--after-hold", type=float, default=0)
    a = p.parse_args()
    if a.count < 1 or a.count > 100000:
        sys.exit("--count must be 1..100000")
    {"load": cmd_load, "idle": cmd_idle}[a.cmd](a)


if __name__ == "__main__":
    main()
