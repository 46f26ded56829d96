#!/usr/bin/python3
"""kube_apiserver_standin.py: A TEST STAND-IN FOR kube-apiserver, written for hwca's tests.

This is not Kubernetes. kube-apiserver is not packaged for Debian 12, so hwca's tests of its CSR
signer (`hwca k8s signer`) run against this small HTTPS server, driven by the real `kubectl`. It
implements only what those tests use, following kube-apiserver's observable behaviour for it:

  * TLS on 127.0.0.1; authentication by client certificate (CN = user, every O = a group), by a
    static token file (kube-apiserver's --token-auth-file CSV), or by a bootstrap token matching a
    Secret kube-system/bootstrap-token-<id>; every user also gets group system:authenticated.
  * discovery (/version, /api, /api/v1, /apis, /apis/<group>[/<version>]); /openapi/* is 404.
  * certificates.k8s.io/v1 certificatesigningrequests with /approval and /status, with the real
    strategies (spec.username/uid/groups/extra from the authenticated identity, status cleared on
    create, /approval changes only conditions, /status cannot add or change Approved/Denied and
    status.certificate is immutable once set) and the real validation rules of
    pkg/apis/certificates/validation (CSR signature, usages, signerName, expirationSeconds >= 600,
    conditions, certificate PEM).
  * core v1 namespaces and secrets, rbac.authorization.k8s.io/v1 (cluster)roles and
    (cluster)rolebindings: get, list, create, update (PUT), patch (merge and strategic merge), delete.
  * one global resourceVersion counter (a string, as in Kubernetes), optimistic concurrency (a stale
    metadata.resourceVersion gives 409 Conflict), watch with a bounded event history.
  * server-side printing (meta.k8s.io/v1 Table) for `kubectl get`, as kube-apiserver does.

Where it is NOT exact (the tests do not depend on these):
  * NO AUTHORIZATION: every authenticated user may do everything (there is no RBAC, no
    SubjectAccessReview, no `sign`/`approve` verb check on signers). The RBAC objects are only stored.
    Instead every request is recorded as (user, verb, resource, subresource, ...) so that a test can
    assert which identity did what (GET /standin/stats).
  * No anonymous access: a request without valid credentials is 401, including /version (as
    kube-apiserver with --anonymous-auth=false).
  * No admission plugins except namespace existence; no CertificateSubjectRestriction; no
    managedFields; no server-side apply (application/apply-patch+yaml is 415); JSON patch
    (application/json-patch+json) is 415; strategic merge patch treats every list as atomic (replace),
    which is right for the stored types except metadata.finalizers/ownerReferences.
  * Unknown fields are stored as sent (the real server drops them); defaults are only those listed
    here (CSR condition status "True", Secret type Opaque, Namespace status/finalizers/label).
  * deletecollection (DELETE on a collection) is 405.
  * Deletion is immediate (finalizers and graceful deletion are ignored); deleting a namespace
    deletes the objects in it at once.
  * List pagination (limit/continue) pages over the current state, not a snapshot; a list's
    resourceVersion/resourceVersionMatch parameters are ignored (always the latest state).
  * Watch: events come from an in-memory history window (--history events). A watch from a
    resourceVersion older than the window gets, by default, HTTP 200 and then one ERROR event
    whose object is Status{code 410, reason Expired}, then the stream ends: this is what
    kube-apiserver's watch cache does. With --expired-watch=http it is an HTTP 410 Status response
    instead (what a watch straight to etcd storage gives). BOOKMARK events (with
    allowWatchBookmarks=true) are sent every --bookmark-interval seconds, not only about once a
    minute, and never on Table watches (kubectl get --watch).
    sendInitialEvents=true is honoured (ADDED events, then a BOOKMARK annotated
    k8s.io/initial-events-end). A watch from a resourceVersion newer than the server's starts there.
  * Protobuf: request bodies of content type application/vnd.kubernetes.protobuf are decoded for
    CertificateSigningRequest only (kubectl >= 1.32 sends `kubectl certificate approve` that way),
    with python3-protobuf and message descriptors built in code for the fields listed below
    (_PB_MESSAGES). Responses are always JSON: every client that accepts protobuf also accepts JSON.
    If python3-protobuf is missing, protobuf bodies are 415.
  * Discovery is the unaggregated kind (APIGroupList/APIResourceList, Content-Type
    application/json): kubectl asks for aggregated discovery (apidiscovery.k8s.io/v2) first and
    falls back to it.

Admin hooks (only for the --admin-user identity, which must also be in group system:masters):
  POST /standin/drop-watches  every open watch connection is reset (no closing chunk).
  POST /standin/compact       history is forgotten: a watch from an older resourceVersion gets 410.
  GET  /standin/stats         JSON: resourceVersion, openWatches, csrs (per CSR uid: name,
                              certificateWrites, certificateWriters, certificateWriteAttempts) and
                              requests (the request log, oldest first).

Command line (all paths are files; nothing is fetched):
  --port-file F               required; the chosen port is written there (atomically) once listening
  --port N                    default 0: the kernel chooses (tests never race on ports)
  --tls-cert-file F --tls-private-key-file F   the serving certificate (for IP 127.0.0.1)
  --client-ca-file F          CA for client certificates (verified if given, as kube-apiserver)
  --token-auth-file F         optional; lines token,user,uid[,"group1,group2"]
  --admin-user NAME           default kubernetes-admin: who may use /standin/*
  --git-version vX.Y.Z        default v1.31.0: what /version reports (a kubectl dispatcher picks the
                              kubectl of that minor version; 1.31 sends only JSON)
  --history N                 default 1000 events in the watch window
  --expired-watch event|http  default event (see above)
  --bookmark-interval SECONDS default 15
  --verbose                   one line per request on stderr
The request log entries are {user, groups, verb, apiGroup, resource, subresource, namespace, name,
path, contentType, code}, with kube-apiserver's verbs (get, list, watch, create, update, patch,
delete; lower-case HTTP method for non-resource paths); user is null for a 401.

Runs with Debian's /usr/bin/python3 (python3-cryptography, python3-yaml, python3-protobuf).
SIGTERM or SIGINT: stops accepting, ends open watches, exits 0.
"""

import argparse
import base64
import binascii
import bisect
import collections
import copy
import csv
import datetime
import hmac
import http.server
import json
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

from cryptography import x509

try:
    import yaml  # python3-yaml: only for request bodies sent as application/yaml
except ImportError:  # pragma: no cover
    yaml = None

MAX_BODY = 3 * 1024 * 1024          # kube-apiserver's request body limit
MAX_OBJECT = 1536 * 1024            # etcd's default value size limit
MAX_STORE_BYTES = 128 * 1024 * 1024
MAX_OBJECTS = 20000
MAX_CONNECTIONS = 512
MAX_WATCHES = 256
MAX_LOG = 20000
MAX_CSR_STATS = 20000
HANDSHAKE_TIMEOUT = 10
IDLE_TIMEOUT = 120

SYSTEM_AUTHENTICATED = "system:authenticated"


def now_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(s):
    if not isinstance(s, str) or not s:
        return None
    try:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds):
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm" % m if s % 60 == 0 else "%dm%ds" % (m, s % 60)
    if m < 180:
        return "%dm" % m
    h = s // 3600
    if h < 8:
        return "%dh" % h if m % 60 == 0 else "%dh%dm" % (h, m % 60)
    if h < 48:
        return "%dh" % h
    if h < 192:
        return "%dd" % (h // 24) if h % 24 == 0 else "%dd%dh" % (h // 24, h % 24)
    if h < 24 * 365 * 2:
        return "%dd" % (h // 24)
    if h < 24 * 365 * 8:
        d = (h // 24) % 365
        return "%dy" % (h // 24 // 365) if d == 0 else "%dy%dd" % (h // 24 // 365, d)
    return "%dy" % (h // 24 // 365)


def age(obj):
    t = parse_ts(obj.get("metadata", {}).get("creationTimestamp"))
    if t is None:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())


class ApiError(Exception):
    """An error answered as a meta/v1 Status."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            st["details"] = self.details
        return st


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


# --------------------------------------------------------------------------------------------
# Resources


class Res:
    def __init__(self, group, version, plural, kind, namespaced, short=(), subresources=(),
                 name_rule="segment", verbs=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.short, self.subresources = namespaced, list(short), subresources
        self.name_rule = name_rule
        self.verbs = verbs or ["create", "delete", "get", "list", "patch", "update", "watch"]
        self.singular = kind.lower()

    @property
    def gv(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def qualified(self):  # "certificatesigningrequests.certificates.k8s.io", "secrets"
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural

    @property
    def qualified_kind(self):  # "CertificateSigningRequest.certificates.k8s.io"
        return "%s.%s" % (self.kind, self.group) if self.group else self.kind

    def key(self):
        return "%s/%s" % (self.group, self.plural)


CERTS = "certificates.k8s.io"
RBAC = "rbac.authorization.k8s.io"
RESOURCES = [
    Res("", "v1", "namespaces", "Namespace", False, ["ns"], name_rule="label"),
    Res("", "v1", "secrets", "Secret", True, name_rule="subdomain"),
    Res(CERTS, "v1", "certificatesigningrequests", "CertificateSigningRequest", False, ["csr"],
        subresources=("approval", "status")),
    Res(RBAC, "v1", "clusterroles", "ClusterRole", False),
    Res(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Res(RBAC, "v1", "roles", "Role", True),
    Res(RBAC, "v1", "rolebindings", "RoleBinding", True),
]
BY_GVR = {(r.group, r.version, r.plural): r for r in RESOURCES}
GROUP_VERSIONS = collections.OrderedDict()
for _r in RESOURCES:
    GROUP_VERSIONS.setdefault(_r.group, [])
    if _r.version not in GROUP_VERSIONS[_r.group]:
        GROUP_VERSIONS[_r.group].append(_r.version)
NS_RES = BY_GVR[("", "v1", "namespaces")]
SECRETS = BY_GVR[("", "v1", "secrets")]
CSR_RES = BY_GVR[(CERTS, "v1", "certificatesigningrequests")]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def name_problem(res, name):
    if not isinstance(name, str) or not name:
        return "name or generateName is required"
    if res.name_rule == "label":
        if len(name) > 63 or not DNS_LABEL.match(name):
            return "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
    elif res.name_rule == "subdomain":
        if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            return "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
    if name in (".", "..") or "/" in name or "%" in name:
        return "may not be '.' or '..' and may not contain '/' or '%'"
    return None


# --------------------------------------------------------------------------------------------
# Protobuf (kubectl >= 1.32 sends `certificate approve` as application/vnd.kubernetes.protobuf)

PB_MAGIC = b"k8s\x00"
# Message name -> [(field, number, type, repeated, message type)]. Field numbers are those of
# k8s.io/api/certificates/v1/generated.proto, apimachinery meta/v1 and runtime generated.proto.
# Map fields are declared as repeated entry messages, which is the same wire format.
_PB_MESSAGES = {
    "TypeMeta": [("apiVersion", 1, "string", False, None), ("kind", 2, "string", False, None)],
    "Unknown": [("typeMeta", 1, "message", False, "TypeMeta"), ("raw", 2, "bytes", False, None),
                ("contentEncoding", 3, "string", False, None), ("contentType", 4, "string", False, None)],
    "Time": [("seconds", 1, "int64", False, None), ("nanos", 2, "int32", False, None)],
    "StringEntry": [("key", 1, "string", False, None), ("value", 2, "string", False, None)],
    "ObjectMeta": [("name", 1, "string", False, None), ("generateName", 2, "string", False, None),
                   ("namespace", 3, "string", False, None), ("uid", 5, "string", False, None),
                   ("resourceVersion", 6, "string", False, None), ("generation", 7, "int64", False, None),
                   ("creationTimestamp", 8, "message", False, "Time"),
                   ("labels", 11, "message", True, "StringEntry"),
                   ("annotations", 12, "message", True, "StringEntry"),
                   ("finalizers", 14, "string", True, None)],
    "ExtraValue": [("items", 1, "string", True, None)],
    "ExtraEntry": [("key", 1, "string", False, None), ("value", 2, "message", False, "ExtraValue")],
    "CSRSpec": [("request", 1, "bytes", False, None), ("username", 2, "string", False, None),
                ("uid", 3, "string", False, None), ("groups", 4, "string", True, None),
                ("usages", 5, "string", True, None), ("extra", 6, "message", True, "ExtraEntry"),
                ("signerName", 7, "string", False, None), ("expirationSeconds", 8, "int32", False, None)],
    "CSRCondition": [("type", 1, "string", False, None), ("reason", 2, "string", False, None),
                     ("message", 3, "string", False, None),
                     ("lastUpdateTime", 4, "message", False, "Time"),
                     ("lastTransitionTime", 5, "message", False, "Time"),
                     ("status", 6, "string", False, None)],
    "CSRStatus": [("conditions", 1, "message", True, "CSRCondition"), ("certificate", 2, "bytes", False, None)],
    "CSR": [("metadata", 1, "message", False, "ObjectMeta"), ("spec", 2, "message", False, "CSRSpec"),
            ("status", 3, "message", False, "CSRStatus")],
}
_pb_classes = None
_pb_error = None


def _pb():
    """Message classes built from descriptors made in code (python3-protobuf), once."""
    global _pb_classes, _pb_error
    if _pb_classes is not None or _pb_error is not None:
        return _pb_classes
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        fdp = descriptor_pb2.FileDescriptorProto(name="kube_apiserver_standin.proto",
                                                 package="standin", syntax="proto2")
        types = {"string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                 "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                 "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                 "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                 "message": descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE}
        for mname, fields in _PB_MESSAGES.items():
            m = fdp.message_type.add(name=mname)
            for fname, num, ftype, repeated, tname in fields:
                f = m.field.add(name=fname, number=num, type=types[ftype],
                                label=(descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                                       else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL))
                if tname:
                    f.type_name = ".standin." + tname
        pool = descriptor_pool.DescriptorPool()
        fd = pool.Add(fdp)
        fd = pool.FindFileByName(fdp.name)
        get_class = getattr(message_factory, "GetMessageClass", None)
        factory = None if get_class else message_factory.MessageFactory(pool)
        classes = {}
        for mname in _PB_MESSAGES:
            desc = fd.message_types_by_name[mname]
            classes[mname] = get_class(desc) if get_class else factory.GetPrototype(desc)
        _pb_classes = classes
    except Exception as e:  # python3-protobuf missing or unusable
        _pb_error = str(e)
    return _pb_classes


def _pb_time(t):
    if not t.seconds and not t.nanos:
        return None
    return datetime.datetime.fromtimestamp(t.seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def csr_from_protobuf(body):
    """A CertificateSigningRequest sent as k8s protobuf (magic + runtime.Unknown) -> JSON dict."""
    classes = _pb()
    if classes is None:
        raise ApiError(415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types include: "
                       "application/json, application/yaml (protobuf unavailable: %s)" % _pb_error)
    if not body.startswith(PB_MAGIC):
        raise bad_request("protobuf body does not start with the k8s magic prefix")
    from google.protobuf.message import DecodeError
    try:
        unknown = classes["Unknown"]()
        unknown.ParseFromString(body[len(PB_MAGIC):])
        if unknown.typeMeta.kind != "CertificateSigningRequest" or unknown.typeMeta.apiVersion != "certificates.k8s.io/v1":
            raise ApiError(415, "UnsupportedMediaType", "protobuf is accepted only for certificates.k8s.io/v1 "
                           "CertificateSigningRequest, not %s %s" % (unknown.typeMeta.apiVersion, unknown.typeMeta.kind))
        if unknown.contentEncoding:
            raise bad_request("unsupported protobuf content encoding %r" % unknown.contentEncoding)
        m = classes["CSR"]()
        m.ParseFromString(unknown.raw)
    except DecodeError as e:
        raise bad_request("cannot decode protobuf body: %s" % e)
    md = m.metadata
    meta = {}
    for f in ("name", "generateName", "namespace", "uid", "resourceVersion"):
        if getattr(md, f):
            meta[f] = getattr(md, f)
    if md.generation:
        meta["generation"] = md.generation
    if _pb_time(md.creationTimestamp):
        meta["creationTimestamp"] = _pb_time(md.creationTimestamp)
    if len(md.labels):
        meta["labels"] = {e.key: e.value for e in md.labels}
    if len(md.annotations):
        meta["annotations"] = {e.key: e.value for e in md.annotations}
    if len(md.finalizers):
        meta["finalizers"] = list(md.finalizers)
    sp = m.spec
    spec = {"request": base64.b64encode(sp.request).decode(), "signerName": sp.signerName,
            "usages": list(sp.usages)}
    if sp.HasField("expirationSeconds"):
        spec["expirationSeconds"] = sp.expirationSeconds
    if sp.username:
        spec["username"] = sp.username
    if sp.uid:
        spec["uid"] = sp.uid
    if len(sp.groups):
        spec["groups"] = list(sp.groups)
    if len(sp.extra):
        spec["extra"] = {e.key: list(e.value.items) for e in sp.extra}
    status = {}
    conds = []
    for c in m.status.conditions:
        cd = {"type": c.type, "status": c.status}
        for f in ("reason", "message"):
            if getattr(c, f):
                cd[f] = getattr(c, f)
        for f in ("lastUpdateTime", "lastTransitionTime"):
            v = _pb_time(getattr(c, f))
            if v:
                cd[f] = v
        conds.append(cd)
    if conds:
        status["conditions"] = conds
    if m.status.certificate:
        status["certificate"] = base64.b64encode(m.status.certificate).decode()
    return {"kind": "CertificateSigningRequest", "apiVersion": "certificates.k8s.io/v1",
            "metadata": meta, "spec": spec, "status": status}


# --------------------------------------------------------------------------------------------
# Selectors

FIELD_LABELS = {"certificatesigningrequests": {"spec.signerName": lambda o: o.get("spec", {}).get("signerName", "")},
                "secrets": {"type": lambda o: o.get("type", "")},
                "namespaces": {"status.phase": lambda o: o.get("status", {}).get("phase", "")}}


def parse_field_selector(res, text):
    reqs = []
    if not text:
        return reqs
    getters = {"metadata.name": lambda o: o["metadata"].get("name", ""),
               "metadata.namespace": lambda o: o["metadata"].get("namespace", "")}
    getters.update(FIELD_LABELS.get(res.plural, {}))
    for term in text.split(","):
        if not term:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(!=|==|=)\s*(.*)$", term)
        if not m:
            raise bad_request("invalid field selector: %r" % term)
        field, op, value = m.groups()
        if field not in getters:
            raise bad_request('field label not supported: %s' % field)
        reqs.append((getters[field], op != "!=", value))
    return reqs


LABEL_KEY = r"[A-Za-z0-9]([A-Za-z0-9_.\-/]*[A-Za-z0-9])?"
LABEL_VALUE = r"([A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?)?"


def parse_label_selector(text):
    reqs = []
    if not text:
        return reqs
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    for term in (t.strip() for t in terms):
        if not term:
            continue
        m = re.match(r"^(!?)\s*(%s)$" % LABEL_KEY, term)
        if m:
            reqs.append(("exists" if not m.group(1) else "absent", m.group(2), None))
            continue
        m = re.match(r"^(%s)\s*(!=|==|=)\s*(%s)$" % (LABEL_KEY, LABEL_VALUE), term)
        if m:
            reqs.append(("ne" if m.group(3) == "!=" else "eq", m.group(1), m.group(4)))
            continue
        m = re.match(r"^(%s)\s+(in|notin)\s+\(([^()]*)\)$" % LABEL_KEY, term)
        if m:
            vals = {v.strip() for v in m.group(4).split(",")}
            reqs.append((m.group(3), m.group(1), vals))
            continue
        raise bad_request("unable to parse requirement: %r" % term)
    return reqs


def matches(obj, ns, fields, labels):
    meta = obj.get("metadata", {})
    if ns is not None and meta.get("namespace") != ns:
        return False
    for get, eq, value in fields:
        if (get(obj) == value) != eq:
            return False
    lab = meta.get("labels") or {}
    for op, key, val in labels:
        if op == "exists" and key not in lab:
            return False
        if op == "absent" and key in lab:
            return False
        if op == "eq" and lab.get(key) != val:
            return False
        if op == "ne" and lab.get(key) == val:
            return False
        if op == "in" and lab.get(key) not in val:
            return False
        if op == "notin" and key in lab and lab[key] in val:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Patches


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target, patch):
    """Strategic merge patch with every list atomic (see 'not exact' in the header)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return strip_directives(patch)
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise bad_request("unknown patch directive %r" % directive)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(v, list):
                result[field] = [x for x in result[field] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            r = strategic_merge_patch(result.get(k), v)
            if r is None:
                result.pop(k, None)
            else:
                result[k] = r
        else:
            result[k] = strip_directives(v)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def strip_directives(v):
    if isinstance(v, dict):
        return {k: strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [strip_directives(x) for x in v]
    return v


# --------------------------------------------------------------------------------------------
# Strategies and validation


class Invalid(ApiError):
    def __init__(self, res, name, causes):
        msg = '%s "%s" is invalid: %s' % (res.qualified_kind, name,
                                           ", ".join("%s: %s" % (c["field"], c["message"]) for c in causes))
        super().__init__(422, "Invalid", msg, {"name": name, "group": res.group, "kind": res.kind,
                                                "causes": [{"reason": c["reason"], "message": c["message"],
                                                            "field": c["field"]} for c in causes]})


def cause(field, reason, message):
    return {"field": field, "reason": reason, "message": message}


VALID_USAGES = {"signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                "server auth", "client auth", "code signing", "email protection", "s/mime",
                "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
                "microsoft sgc", "netscape sgc"}
PEM_BLOCK = re.compile(rb"-----BEGIN ([^-\r\n]*)-----\r?\n(.*?)-----END \1-----", re.S)


def b64field(value, field):
    if value in (None, ""):
        return b""
    if not isinstance(value, str):
        raise bad_request("%s: expected a base64 string" % field)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("%s: illegal base64 data" % field)


def certificate_problem(pem):
    """pkg/apis/certificates/validation.validateCertificate."""
    blocks = 0
    for m in PEM_BLOCK.finditer(pem):
        label, inner = m.group(1), m.group(2)
        if label != b"CERTIFICATE":
            return 'only CERTIFICATE PEM blocks are allowed, found "%s"' % label.decode("latin-1")
        if b":" in inner:
            return "no PEM block headers are permitted"
        blocks += 1
        try:
            x509.load_pem_x509_certificate(m.group(0))
        except ValueError as e:
            return "x509: malformed certificate (%s)" % e
    if blocks == 0:
        return "must contain at least one CERTIFICATE PEM block"
    return None


def signer_name_problem(name):
    if not isinstance(name, str) or not name:
        return "Required value"
    if "/" not in name:
        return "must be a fully qualified domain and path of the form 'example.com/signer-name'"
    domain, path = name.split("/", 1)
    if not DNS_SUBDOMAIN.match(domain) or len(domain) > 253:
        return "must be a fully qualified domain and path of the form 'example.com/signer-name'"
    if not path or not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$", path) or len(path) > 571:
        return "validating the path of the signerName: must be a valid qualified name"
    return None


def validate_conditions(conds):
    causes, seen = [], set()
    approved = denied = False
    if not isinstance(conds, list):
        return [cause("status.conditions", "FieldValueInvalid", "must be a list")]
    for i, c in enumerate(conds):
        p = "status.conditions[%d]" % i
        if not isinstance(c, dict):
            causes.append(cause(p, "FieldValueInvalid", "must be an object"))
            continue
        t, s = c.get("type", ""), c.get("status", "")
        if not t:
            causes.append(cause(p + ".type", "FieldValueRequired", "Required value"))
        allowed = ["True"] if t in ("Approved", "Denied", "Failed") else ["False", "True", "Unknown"]
        if not s:
            causes.append(cause(p + ".status", "FieldValueRequired", "Required value"))
        elif s not in allowed:
            causes.append(cause(p + ".status", "FieldValueNotSupported", 'Unsupported value: "%s": supported values: %s'
                                % (s, ", ".join('"%s"' % a for a in allowed))))
        if t == "Approved":
            approved = True
            if denied:
                causes.append(cause(p + ".type", "FieldValueInvalid", "Approved and Denied conditions are mutually exclusive"))
        if t == "Denied":
            denied = True
            if approved:
                causes.append(cause(p + ".type", "FieldValueInvalid", "Approved and Denied conditions are mutually exclusive"))
        if t in seen:
            causes.append(cause(p + ".type", "FieldValueDuplicate", 'Duplicate value: "%s"' % t))
        seen.add(t)
    return causes


def default_conditions(obj):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and not c.get("status"):
            c["status"] = "True"


def populate_condition_times(new, old):
    now = now_ts()
    old_conds = {c.get("type"): c for c in (old.get("status") or {}).get("conditions") or [] if isinstance(c, dict)} if old else {}
    for c in (new.get("status") or {}).get("conditions") or []:
        if not isinstance(c, dict):
            continue
        if not c.get("lastUpdateTime"):
            c["lastUpdateTime"] = now
        if not c.get("lastTransitionTime"):
            prev = old_conds.get(c.get("type"))
            if prev and prev.get("status") == c.get("status") and prev.get("lastTransitionTime"):
                c["lastTransitionTime"] = prev["lastTransitionTime"]
            else:
                c["lastTransitionTime"] = now


def validate_csr(obj, old, sub):
    """ValidateCertificateSigningRequest{Create,Update,StatusUpdate,ApprovalUpdate} (v1 rules)."""
    causes = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise bad_request("spec: expected an object")
    status = obj.get("status") or {}
    if old is None:
        req = b64field(spec.get("request"), "spec.request")
        try:
            csr = x509.load_pem_x509_csr(req)
            if not csr.is_signature_valid:
                causes.append(cause("spec.request", "FieldValueInvalid", "x509: ECDSA/RSA verification failure"))
        except ValueError as e:
            causes.append(cause("spec.request", "FieldValueInvalid", "PEM block type must be CERTIFICATE REQUEST (%s)" % e))
        usages = spec.get("usages")
        if not isinstance(usages, list) or not usages:
            causes.append(cause("spec.usages", "FieldValueRequired", "Required value"))
        else:
            seen = set()
            for i, u in enumerate(usages):
                if u not in VALID_USAGES:
                    causes.append(cause("spec.usages[%d]" % i, "FieldValueNotSupported", 'Unsupported value: %s' % json.dumps(u)))
                elif u in seen:
                    causes.append(cause("spec.usages[%d]" % i, "FieldValueDuplicate", 'Duplicate value: "%s"' % u))
                seen.add(u)
        sn = spec.get("signerName")
        if sn == "kubernetes.io/legacy-unknown":
            causes.append(cause("spec.signerName", "FieldValueInvalid", "the legacy signerName is not allowed via this API version"))
        else:
            p = signer_name_problem(sn)
            if p:
                causes.append(cause("spec.signerName", "FieldValueInvalid" if sn else "FieldValueRequired", p))
        exp = spec.get("expirationSeconds")
        if exp is not None:
            if not isinstance(exp, int) or isinstance(exp, bool) or exp > 2**31 - 1:
                raise bad_request("spec.expirationSeconds: expected an int32")
            if exp < 600:
                causes.append(cause("spec.expirationSeconds", "FieldValueInvalid",
                                    "Invalid value: %d: may not specify a duration less than 600 seconds (10 minutes)" % exp))
    causes += validate_conditions(status.get("conditions") or [])
    cert = b64field(status.get("certificate"), "status.certificate")
    old_cert = b64field((old.get("status") or {}).get("certificate"), "status.certificate") if old else b""
    if cert and cert != old_cert:
        p = certificate_problem(cert)
        if p:
            causes.append(cause("status.certificate", "FieldValueInvalid", "Invalid value: \"<certificate data>\": " + p))
    if old is not None:
        new_conds = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        old_conds = [c for c in (old.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]
        for t in ("Approved", "Denied", "Failed"):
            if len([c for c in new_conds if c.get("type") == t]) < len([c for c in old_conds if c.get("type") == t]):
                causes.append(cause("status.conditions", "FieldValueForbidden", 'Forbidden: updates may not remove a condition of type "%s"' % t))
        if sub != "approval":
            for t in ("Approved", "Denied"):
                n = [c for c in new_conds if c.get("type") == t]
                o = [c for c in old_conds if c.get("type") == t]
                if len(n) > len(o):
                    causes.append(cause("status.conditions", "FieldValueForbidden", 'Forbidden: updates may not add a condition of type "%s"' % t))
                elif len(n) == len(o) and n != o:
                    causes.append(cause("status.conditions", "FieldValueForbidden", 'Forbidden: updates may not modify a condition of type "%s"' % t))
        if cert != old_cert:
            if sub != "status":
                causes.append(cause("status.certificate", "FieldValueForbidden", "Forbidden: updates may not set certificate content"))
            elif old_cert:
                causes.append(cause("status.certificate", "FieldValueForbidden", "Forbidden: updates may not modify existing certificate content"))
    return causes


def csr_prepare(obj, old, sub, ident):
    """pkg/registry/certificates/certificates strategies: what each path may change."""
    if old is None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            raise bad_request("spec: expected an object")
        for f in ("username", "uid", "groups", "extra"):
            spec.pop(f, None)
        spec["username"] = ident["username"]
        if ident.get("uid"):
            spec["uid"] = ident["uid"]
        spec["groups"] = list(ident["groups"])
        if ident.get("extra"):
            spec["extra"] = copy.deepcopy(ident["extra"])
        obj["status"] = {}
        return obj
    obj["spec"] = copy.deepcopy(old["spec"])
    new_status = obj.get("status") or {}
    if not isinstance(new_status, dict):
        raise bad_request("status: expected an object")
    old_status = copy.deepcopy(old.get("status") or {})
    if sub == "":
        obj["status"] = old_status
    elif sub == "approval":
        old_status["conditions"] = new_status.get("conditions") or []
        obj["status"] = old_status
        obj["metadata"] = copy.deepcopy(old["metadata"])
    elif sub == "status":
        conds = [c for c in new_status.get("conditions") or [] if not (isinstance(c, dict) and c.get("type") in ("Approved", "Denied"))]
        conds += [c for c in old_status.get("conditions") or [] if isinstance(c, dict) and c.get("type") in ("Approved", "Denied")]
        new_status["conditions"] = conds
        obj["status"] = new_status
        obj["metadata"] = copy.deepcopy(old["metadata"])
    for k in ("status",):
        st = obj.get(k) or {}
        if not st.get("conditions"):
            st.pop("conditions", None)
        if not st.get("certificate"):
            st.pop("certificate", None)
    default_conditions(obj)
    populate_condition_times(obj, old)
    return obj


def secret_prepare(obj, old):
    sd = obj.pop("stringData", None)
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict) or (sd is not None and not isinstance(sd, dict)):
        raise bad_request("data and stringData must be maps")
    for k, v in data.items():
        b64field(v, "data[%s]" % k)
    for k, v in (sd or {}).items():
        if not isinstance(v, str):
            raise bad_request("stringData[%s]: expected a string" % k)
        data[k] = base64.b64encode(v.encode()).decode()
    if data:
        obj["data"] = data
    else:
        obj.pop("data", None)
    obj.setdefault("type", "Opaque")
    causes = []
    for k in data:
        if not re.match(r"^[-._a-zA-Z0-9]+$", k) or len(k) > 253:
            causes.append(cause("data[%s]" % k, "FieldValueInvalid", "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"))
    if old is not None and old.get("type") != obj.get("type"):
        causes.append(cause("type", "FieldValueInvalid", "field is immutable"))
    return causes


def namespace_prepare(obj, old):
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    if old is None:
        obj["spec"] = {"finalizers": ["kubernetes"]}
    else:
        obj["spec"] = copy.deepcopy(old.get("spec", {}))
    obj["status"] = {"phase": "Active"}
    return []


def binding_prepare(obj, old):
    causes = []
    rr = obj.get("roleRef")
    if not isinstance(rr, dict) or not rr.get("name") or not rr.get("kind"):
        causes.append(cause("roleRef", "FieldValueRequired", "Required value"))
    if old is not None and rr != old.get("roleRef"):
        causes.append(cause("roleRef", "FieldValueInvalid", "cannot change roleRef"))
    return causes


# --------------------------------------------------------------------------------------------
# Tables (server-side printing, pkg/printers/internalversion)


def col(name, typ="string", fmt="", priority=0, desc=""):
    return {"name": name, "type": typ, "format": fmt, "description": desc or name, "priority": priority}


def csr_condition(o):
    conds = {c.get("type") for c in (o.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}
    s = "Denied" if "Denied" in conds else "Approved" if "Approved" in conds else "Pending"
    if "Failed" in conds:
        s += ",Failed"
    if (o.get("status") or {}).get("certificate"):
        s += ",Issued"
    return s


def role_of(o):
    rr = o.get("roleRef") or {}
    return "%s/%s" % (rr.get("kind", ""), rr.get("name", ""))


def subjects_of(o, kind):
    subs = [s for s in o.get("subjects") or [] if isinstance(s, dict) and s.get("kind") == kind]
    if kind == "ServiceAccount":
        return ", ".join("%s/%s" % (s.get("namespace", ""), s.get("name", "")) for s in subs)
    return ", ".join(s.get("name", "") for s in subs)


TABLES = {
    "certificatesigningrequests": (
        [col("Name", fmt="name"), col("Age"), col("SignerName"), col("Requestor"), col("RequestedDuration"), col("Condition")],
        lambda o: [o["metadata"]["name"], age(o), o["spec"].get("signerName", ""), o["spec"].get("username", ""),
                   human_duration(o["spec"]["expirationSeconds"]) if o["spec"].get("expirationSeconds") is not None else "<none>",
                   csr_condition(o)]),
    "secrets": ([col("Name", fmt="name"), col("Type"), col("Data", "integer"), col("Age")],
                lambda o: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), age(o)]),
    "namespaces": ([col("Name", fmt="name"), col("Status"), col("Age")],
                   lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), age(o)]),
    "clusterrolebindings": ([col("Name", fmt="name"), col("Role"), col("Age"), col("Users", priority=1),
                             col("Groups", priority=1), col("ServiceAccounts", priority=1)],
                            lambda o: [o["metadata"]["name"], role_of(o), age(o), subjects_of(o, "User"),
                                       subjects_of(o, "Group"), subjects_of(o, "ServiceAccount")]),
}
TABLES["rolebindings"] = TABLES["clusterrolebindings"]
DEFAULT_TABLE = ([col("Name", fmt="name"), col("Created At", "date")],
                 lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")])


def make_table(res, objs, include, rv, table_version="v1"):
    cols, cells = TABLES.get(res.plural, DEFAULT_TABLE)
    rows = []
    for o in objs:
        row = {"cells": cells(o)}
        if include == "Object":
            row["object"] = with_type(res, o)
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": copy.deepcopy(o["metadata"])}
        rows.append(row)
    t = {"kind": "Table", "apiVersion": "meta.k8s.io/" + table_version, "metadata": {}, "columnDefinitions": cols, "rows": rows}
    if rv is not None:
        t["metadata"]["resourceVersion"] = str(rv)
    return t


def with_type(res, o):
    out = {"kind": res.kind, "apiVersion": res.gv}
    out.update({k: v for k, v in o.items() if k not in ("kind", "apiVersion")})
    return out


def without_type(o):
    return {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}


# --------------------------------------------------------------------------------------------
# Store


class Event:
    __slots__ = ("rv", "res", "ns", "name", "type", "obj", "prev", "size")

    def __init__(self, rv, res, ns, name, etype, obj, prev, size):
        self.rv, self.res, self.ns, self.name, self.type = rv, res, ns, name, etype
        self.obj, self.prev, self.size = obj, prev, size


class Store:
    def __init__(self, history_max, history_bytes):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.rv = 0
        self.objects = {}        # (res key, namespace or "", name) -> object (without kind/apiVersion)
        self.sizes = {}
        self.total = 0
        self.history = []        # Events, rv ascending
        self.history_rvs = []
        self.history_bytes = 0
        self.history_max = history_max
        self.history_bytes_max = history_bytes
        self.floor = 0           # a watch from a resourceVersion below this one has expired
        self.drop_gen = 0
        self.stopping = False
        self.watches = 0
        self.log = collections.deque(maxlen=MAX_LOG)
        self.csr_stats = collections.OrderedDict()

    def get(self, res, ns, name):
        return self.objects.get((res.key(), ns or "", name))

    def items(self, res, ns):
        k = res.key()
        out = [(key, o) for key, o in self.objects.items() if key[0] == k and (ns is None or key[1] == ns)]
        out.sort(key=lambda kv: (kv[0][1], kv[0][2]))
        return [o for _, o in out]

    def commit(self, res, ns, name, etype, obj, prev):
        """Under self.lock: writes (or deletes) one object, records the event, wakes watchers."""
        key = (res.key(), ns or "", name)
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        size = len(json.dumps(obj, separators=(",", ":")))
        if etype == "DELETED":
            self.objects.pop(key, None)
            self.total -= self.sizes.pop(key, 0)
        else:
            self.total += size - self.sizes.get(key, 0)
            self.sizes[key] = size
            self.objects[key] = obj
        ev = Event(self.rv, res.key(), ns or "", name, etype, obj, prev, size)
        self.history.append(ev)
        self.history_rvs.append(ev.rv)
        self.history_bytes += size
        drop = 0
        while (len(self.history) - drop > self.history_max or self.history_bytes > self.history_bytes_max) and drop < len(self.history):
            self.history_bytes -= self.history[drop].size
            self.floor = self.history[drop].rv
            drop += 1
        if drop:
            del self.history[:drop]
            del self.history_rvs[:drop]
        self.cond.notify_all()
        return obj

    def check_room(self, size, key):
        if size > MAX_OBJECT:
            raise ApiError(413, "RequestEntityTooLarge", "etcdserver: request is too large")
        if key not in self.objects and len(self.objects) >= MAX_OBJECTS:
            raise ApiError(507, "InternalError", "the stand-in holds too many objects (%d)" % MAX_OBJECTS)
        if self.total + size - self.sizes.get(key, 0) > MAX_STORE_BYTES:
            raise ApiError(507, "InternalError", "etcdserver: mvcc: database space exceeded")

    def compact(self):
        with self.lock:
            self.floor = self.rv
            self.history.clear()
            self.history_rvs.clear()
            self.history_bytes = 0
            self.cond.notify_all()
            return self.rv

    def drop_watches(self):
        with self.lock:
            n = self.watches
            self.drop_gen += 1
            self.cond.notify_all()
            return n

    def stop(self):
        with self.lock:
            self.stopping = True
            self.cond.notify_all()

    def record(self, entry):
        self.log.append(entry)  # deque.append is atomic

    def csr_stat(self, obj):
        uid = obj["metadata"].get("uid", "")
        st = self.csr_stats.get(uid)
        if st is None:
            st = {"name": obj["metadata"]["name"], "certificateWrites": 0, "certificateWriters": [],
                  "certificateWriteAttempts": []}
            self.csr_stats[uid] = st
            while len(self.csr_stats) > MAX_CSR_STATS:
                self.csr_stats.popitem(last=False)
        return st


# --------------------------------------------------------------------------------------------
# Authentication

BOOTSTRAP_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")


def load_token_file(path):
    tokens = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise SystemExit("%s:%d: token file lines are token,user,uid[,\"group1,group2\"]" % (path, n))
            token, user, uid = row[0].strip(), row[1].strip(), row[2].strip()
            groups = [g.strip() for g in row[3].split(",") if g.strip()] if len(row) > 3 else []
            if token:
                tokens[token] = {"username": user, "uid": uid, "groups": groups}
    return tokens


def with_authenticated(ident):
    groups = [g for g in ident.get("groups", []) if g != SYSTEM_AUTHENTICATED] + [SYSTEM_AUTHENTICATED]
    out = dict(ident)
    out["groups"] = groups
    return out


# --------------------------------------------------------------------------------------------
# HTTP


class RequestInfo:
    def __init__(self, res, ns, name, sub):
        self.res, self.ns, self.name, self.sub = res, ns, name, sub


def parse_resource_path(parts):
    """['api','v1',...] or ['apis',group,version,...] -> (group, version, rest) or None."""
    if len(parts) >= 2 and parts[0] == "api":
        return "", parts[1], parts[2:]
    if len(parts) >= 3 and parts[0] == "apis":
        return parts[1], parts[2], parts[3:]
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-standin"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    # -- plumbing ---------------------------------------------------------------------------
    def setup(self):
        self.request.settimeout(HANDSHAKE_TIMEOUT)
        self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("standin: %s\n" % (fmt % args))

    def send_error(self, code, message=None, explain=None):
        # Malformed HTTP (request line, headers): a Status, and the connection is closed.
        self.close_connection = True
        try:
            self._send_json(code, ApiError(code, "BadRequest" if code == 400 else "InternalError",
                                           message or "bad request").status())
        except OSError:
            pass

    def _send_json(self, code, obj, headers=()):
        body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self._code = code

    def _send_text(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._code = code

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_HEAD(self):
        self.close_connection = True
        self._handle("HEAD")

    def do_OPTIONS(self):
        self._handle("OPTIONS")

    def _handle(self, method):
        self._code = 0
        self._entry = None
        self._ident = None
        self._streaming = False
        try:
            self._route(method)
        except ApiError as e:
            if not self._streaming:
                if e.code in (401, 413, 400):
                    self.close_connection = True
                self._send_json(e.code, e.status())
            else:
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, ssl.SSLError):
            self.close_connection = True
        except Exception:
            sys.stderr.write("standin: internal error on %s %s:\n%s" % (method, self.path, traceback.format_exc()))
            self.close_connection = True
            if not self._streaming:
                try:
                    self._send_json(500, ApiError(500, "InternalError", "internal error in the stand-in").status())
                except OSError:
                    pass
        finally:
            if self._entry is not None and not self._streaming:
                self._entry["code"] = self._code
                self.server.store.record(self._entry)

    # -- request parts ----------------------------------------------------------------------
    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise ApiError(411, "BadRequest", "chunked request bodies are not supported by the stand-in; send Content-Length")
        n = self.headers.get("Content-Length")
        if n is None:
            return b""
        try:
            n = int(n)
        except ValueError:
            raise bad_request("bad Content-Length")
        if n < 0:
            raise bad_request("bad Content-Length")
        if n > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge", "the request body is too large (limit %d bytes)" % MAX_BODY)
        return self.rfile.read(n)

    def _authenticate(self):
        store = self.server.store
        try:
            cert = self.request.getpeercert()
        except (ValueError, ssl.SSLError):
            cert = None
        if cert:
            cn, orgs = None, []
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName" and cn is None:
                        cn = v
                    elif k == "organizationName":
                        orgs.append(v)
            if cn:
                return with_authenticated({"username": cn, "uid": "", "groups": orgs, "via": "x509"})
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            ident = self.server.tokens.get(token)
            if ident:
                return with_authenticated(dict(ident, via="token-file"))
            m = BOOTSTRAP_TOKEN.match(token)
            if m:
                with store.lock:
                    secret = store.get(SECRETS, "kube-system", "bootstrap-token-" + m.group(1))
                    secret = copy.deepcopy(secret) if secret else None
                ident = bootstrap_identity(secret, m.group(1), m.group(2))
                if ident:
                    return with_authenticated(ident)
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _negotiate(self, allow_table):
        accept = self.headers.get("Accept") or "*/*"
        for part in accept.split(","):
            bits = [b.strip() for b in part.split(";")]
            mt = bits[0].lower()
            params = {}
            for b in bits[1:]:
                if "=" in b:
                    k, v = b.split("=", 1)
                    params[k.strip()] = v.strip()
            if mt not in ("application/json", "*/*", "application/*"):
                continue
            if "as" in params:
                if allow_table and params["as"] == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                    return "table", params["v"]
                continue
            return "json", None
        raise ApiError(406, "NotAcceptable", "only the following media types are accepted: application/json")

    def _decode(self, body, patch=False):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not body:
            raise bad_request("the request body is empty")
        if ctype == "application/vnd.kubernetes.protobuf" and not patch:
            return csr_from_protobuf(body)
        if patch:
            if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                raise ApiError(415, "UnsupportedMediaType", 'the body of the request was in an unknown format - accepted '
                               'media types include: application/merge-patch+json, application/strategic-merge-patch+json '
                               '(the stand-in does not implement %s)' % (ctype or "this patch type"))
        elif ctype in ("application/yaml", "application/x-yaml") and yaml is not None:
            try:
                doc = yaml.safe_load(body)
            except yaml.YAMLError as e:
                raise bad_request("cannot decode YAML body: %s" % e)
            if not isinstance(doc, dict):
                raise bad_request("the body is not an object")
            return json.loads(json.dumps(doc, default=str))
        elif ctype not in ("application/json", ""):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                           "media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request("cannot decode JSON body: %s" % e)
        if not isinstance(doc, dict):
            raise bad_request("the body is not a JSON object")
        return doc

    # -- routing ----------------------------------------------------------------------------
    def _route(self, method):
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        body = self._read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        parts = [p for p in path.split("/") if p]
        rp = parse_resource_path(parts)
        self._entry = {"user": None, "groups": [], "verb": method.lower(), "apiGroup": "", "resource": "",
                       "subresource": "", "namespace": "", "name": "", "path": path,
                       "contentType": self.headers.get("Content-Type") or "", "code": 0}
        ident = self._authenticate()
        self._ident = ident
        self._entry["user"] = ident["username"]
        self._entry["groups"] = ident["groups"]
        if self.server.verbose:
            sys.stderr.write("standin: %s %s %s [%s]\n" % (ident["username"], method, self.path,
                                                             self.headers.get("Content-Type") or "-"))

        if parts[:1] == ["standin"]:
            return self._admin(method, parts)
        if method not in ("GET", "HEAD") and not (rp and len(rp[2]) > 0):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if path in ("/healthz", "/livez", "/readyz"):
            return self._send_text(200, "ok")
        if path == "/version":
            return self._send_json(200, self.server.version_info)
        if path == "/api":
            return self._send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                         "serverAddress": self.server.address}]})
        if path == "/apis":
            return self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                         "groups": [group_info(g) for g in GROUP_VERSIONS if g]})
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in GROUP_VERSIONS and parts[1]:
            return self._send_json(200, dict(group_info(parts[1]), kind="APIGroup", apiVersion="v1"))
        if rp is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version, rest = rp
        if version not in GROUP_VERSIONS.get(group, []):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return self._send_json(200, resource_list(group, version))
        ri = self._resource_info(group, version, rest)
        self._entry.update({"apiGroup": group, "resource": ri.res.plural, "subresource": ri.sub,
                            "namespace": ri.ns or "", "name": ri.name or ""})
        return self._resource(method, ri, q, ident, body)

    def _resource_info(self, group, version, rest):
        nf = ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_GVR and BY_GVR[(group, version, rest[2])].namespaced:
            res, ns, tail = BY_GVR[(group, version, rest[2])], rest[1], rest[3:]
        else:
            res = BY_GVR.get((group, version, rest[0]))
            if res is None:
                raise nf
            ns, tail = None, rest[1:]
            if res.namespaced and tail:
                raise nf
        if len(tail) > 2:
            raise nf
        name = tail[0] if tail else None
        sub = tail[1] if len(tail) > 1 else ""
        if sub and sub not in res.subresources:
            raise nf
        return RequestInfo(res, ns, name, sub)

    def _admin(self, method, parts):
        ident = self._ident
        if ident["username"] != self.server.admin_user or "system:masters" not in ident["groups"]:
            raise ApiError(403, "Forbidden", "the /standin hooks are only for %s in system:masters" % self.server.admin_user)
        store = self.server.store
        self._entry.update({"verb": method.lower(), "resource": "standin"})
        what = "/".join(parts[1:])
        if method == "POST" and what == "drop-watches":
            return self._send_json(200, {"dropped": store.drop_watches()})
        if method == "POST" and what == "compact":
            return self._send_json(200, {"compactedTo": str(store.compact())})
        if method == "GET" and what == "stats":
            with store.lock:
                stats = {"resourceVersion": str(store.rv), "openWatches": store.watches,
                         "historyFloor": str(store.floor),
                         "csrs": copy.deepcopy(store.csr_stats), "requests": list(store.log)}
            return self._send_json(200, stats)
        raise ApiError(404, "NotFound", "unknown stand-in hook %s %s" % (method, "/" + "/".join(parts)))

    # -- resources --------------------------------------------------------------------------
    def _resource(self, method, ri, q, ident, body):
        res = ri.res
        watch = q.get("watch", "") in ("true", "1")
        if method in ("GET", "HEAD"):
            if watch:
                self._entry["verb"] = "watch"
                return self._watch(ri, q)
            if ri.name is None:
                self._entry["verb"] = "list"
                return self._list(ri, q)
            self._entry["verb"] = "get"  # GET of /status or /approval answers the object, as kube-apiserver
            fmt, tv = self._negotiate(allow_table=True)
            with self.server.store.lock:
                obj = self.server.store.get(res, ri.ns, ri.name)
                obj = copy.deepcopy(obj) if obj else None
            if obj is None:
                raise not_found(res, ri.name)
            if fmt == "table":
                return self._send_json(200, make_table(res, [obj], q.get("includeObject", "Metadata"), None, tv))
            return self._send_json(200, with_type(res, obj))
        self._negotiate(allow_table=False)
        dry = q.get("dryRun", "") == "All"
        if method == "POST":
            self._entry["verb"] = "create"
            if ri.name is not None or ri.sub:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            if res.namespaced and ri.ns is None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            obj = self._decode(body)
            out = self._create(ri, obj, ident, dry)
            return self._send_json(201, with_type(res, out))
        if ri.name is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource "
                           "(deletecollection is not implemented by the stand-in)")
        if method == "PUT":
            self._entry["verb"] = "update"
            obj = self._decode(body)
            out = self._update(ri, obj, ident, dry, patch=None)
            return self._send_json(200, with_type(res, out))
        if method == "PATCH":
            self._entry["verb"] = "patch"
            patch = self._decode(body, patch=True)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            out = self._update(ri, None, ident, dry, patch=(ctype, patch))
            return self._send_json(200, with_type(res, out))
        if method == "DELETE":
            self._entry["verb"] = "delete"
            if ri.sub:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            opts = {}
            if body:
                try:
                    opts = json.loads(body)
                except (ValueError, UnicodeDecodeError) as e:
                    raise bad_request("cannot decode DeleteOptions: %s" % e)
                if not isinstance(opts, dict):
                    raise bad_request("DeleteOptions must be an object")
            out = self._delete(ri, opts, dry)
            return self._send_json(200, out)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _check_kind(self, res, obj):
        kind, av = obj.get("kind"), obj.get("apiVersion")
        if kind not in (None, "", res.kind):
            raise bad_request("the kind in the data (%s) does not match the expected kind (%s)" % (kind, res.kind))
        if av not in (None, "", res.gv):
            raise bad_request("the API version in the data (%s) does not match the expected API version (%s)" % (av, res.gv))
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata: expected an object")
        for f in ("labels", "annotations"):
            v = meta.get(f)
            if v is not None and (not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values())):
                raise bad_request("metadata.%s: expected a map of strings" % f)
        return meta

    def _prepare(self, res, obj, old, sub, ident):
        """Strategy + validation for any resource; returns the object to store (kind/apiVersion removed)."""
        name = obj["metadata"].get("name", "")
        causes = []
        if res is CSR_RES:
            csr_prepare(obj, old, sub, ident)
            causes = validate_csr(obj, old, sub)
        elif res is SECRETS:
            causes = secret_prepare(obj, old)
        elif res is NS_RES:
            causes = namespace_prepare(obj, old)
        elif res.plural in ("clusterrolebindings", "rolebindings"):
            causes = binding_prepare(obj, old)
        if causes:
            raise Invalid(res, name, causes)
        return without_type(obj)

    def _create(self, ri, obj, ident, dry):
        res, store = ri.res, self.server.store
        meta = self._check_kind(res, obj)
        if res.namespaced:
            if meta.get("namespace") not in (None, "", ri.ns):
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ri.ns
        else:
            meta.pop("namespace", None)
        for f in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "selfLink", "managedFields"):
            meta.pop(f, None)
        with store.lock:
            if res.namespaced and store.get(NS_RES, None, ri.ns) is None:
                raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ri.ns,
                               {"name": ri.ns, "kind": "namespaces"})
            if not meta.get("name"):
                gen = meta.get("generateName")
                if not gen or not isinstance(gen, str):
                    raise Invalid(res, "", [cause("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")])
                for _ in range(20):
                    cand = gen + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
                    if store.get(res, ri.ns, cand) is None:
                        break
                meta["name"] = cand
            name = meta["name"]
            p = name_problem(res, name)
            if p:
                raise Invalid(res, name, [cause("metadata.name", "FieldValueInvalid", 'Invalid value: "%s": %s' % (name, p))])
            self._entry["name"] = name
            if store.get(res, ri.ns, name) is not None:
                raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (res.qualified, name),
                               {"name": name, "group": res.group, "kind": res.plural})
            obj = self._prepare(res, obj, None, "", ident)
            meta = obj["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_ts()
            size = len(json.dumps(obj, separators=(",", ":")))
            store.check_room(size, (res.key(), ri.ns or "", name))
            if dry:
                meta["resourceVersion"] = ""
                return obj
            out = store.commit(res, ri.ns, name, "ADDED", obj, None)
            if res is CSR_RES:
                store.csr_stat(out)
            return copy.deepcopy(out)

    def _update(self, ri, obj, ident, dry, patch):
        res, store = ri.res, self.server.store
        with store.lock:
            old = store.get(res, ri.ns, ri.name)
            if old is None:
                raise not_found(res, ri.name)
            old = copy.deepcopy(old)
            if patch is not None:
                ctype, p = patch
                base = with_type(res, old)
                obj = merge_patch(base, p) if ctype == "application/merge-patch+json" else strategic_merge_patch(base, p)
                if not isinstance(obj, dict):
                    raise bad_request("the patch removed the whole object")
            meta = self._check_kind(res, obj)
            # A write of status.certificate through /status is recorded whatever its outcome.
            # (For a patch, only when the patch itself carries status.certificate.)
            status = (patch[1] if patch is not None else obj).get("status")
            new_cert = status.get("certificate") if res is CSR_RES and ri.sub == "status" and isinstance(status, dict) else None
            if new_cert is not None and not isinstance(new_cert, str):
                raise bad_request("status.certificate: expected a base64 string")
            try:
                if meta.get("name", ri.name) != ri.name:
                    raise bad_request("the name of the object (%s) does not match the name on the URL (%s)" % (meta.get("name"), ri.name))
                if res.namespaced and meta.get("namespace") not in (None, "", ri.ns):
                    raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
                rv = meta.get("resourceVersion")
                if rv not in (None, "") and rv != old["metadata"]["resourceVersion"]:
                    raise conflict(res, ri.name)
                if meta.get("uid") not in (None, "") and meta["uid"] != old["metadata"]["uid"]:
                    raise ApiError(409, "Conflict", "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                                   % (old["metadata"]["uid"], meta["uid"]), {"name": ri.name, "group": res.group, "kind": res.plural})
                meta["name"] = ri.name
                if res.namespaced:
                    meta["namespace"] = ri.ns
                for f in ("uid", "creationTimestamp"):
                    meta[f] = old["metadata"][f]
                meta.pop("managedFields", None)
                meta.pop("selfLink", None)
                new = self._prepare(res, obj, old, ri.sub, ident)
            except ApiError as e:
                if new_cert and not dry:
                    self._note_cert_attempt(old, new_cert, e.code)
                raise
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            size = len(json.dumps(new, separators=(",", ":")))
            store.check_room(size, (res.key(), ri.ns or "", ri.name))
            if dry:
                return new
            if new_cert:
                self._note_cert_attempt(old, new_cert, 200)
            if new == old:
                return old  # a no-op update does not write, so the resourceVersion stays
            out = store.commit(res, ri.ns, ri.name, "MODIFIED", new, old)
            if res is CSR_RES and out.get("status", {}).get("certificate") and not old.get("status", {}).get("certificate"):
                st = store.csr_stat(out)
                st["certificateWrites"] += 1
                st["certificateWriters"].append(ident["username"])
            return copy.deepcopy(out)

    def _note_cert_attempt(self, old, cert, code):
        st = self.server.store.csr_stat(old)
        st["certificateWriteAttempts"].append({"user": self._ident["username"], "subresource": self._entry["subresource"],
                                               "code": code,
                                               "sameAsStored": cert == (old.get("status") or {}).get("certificate")})
        del st["certificateWriteAttempts"][:-100]

    def _delete(self, ri, opts, dry):
        res, store = ri.res, self.server.store
        with store.lock:
            old = store.get(res, ri.ns, ri.name)
            if old is None:
                raise not_found(res, ri.name)
            pre = opts.get("preconditions") or {}
            if not isinstance(pre, dict):
                raise bad_request("preconditions must be an object")
            if pre.get("resourceVersion") not in (None, "") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "Operation cannot be fulfilled on %s \"%s\": the ResourceVersion in the "
                               "precondition (%s) does not match the ResourceVersion in record (%s). The object might have "
                               "been modified" % (res.qualified, ri.name, pre["resourceVersion"], old["metadata"]["resourceVersion"]),
                               {"name": ri.name, "group": res.group, "kind": res.plural})
            if pre.get("uid") not in (None, "") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Conflict", "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                               % (pre["uid"], old["metadata"]["uid"]), {"name": ri.name, "group": res.group, "kind": res.plural})
            if res is NS_RES and ri.name in ("default", "kube-system", "kube-public"):
                raise ApiError(403, "Forbidden", 'namespaces "%s" is forbidden: this namespace may not be deleted' % ri.name,
                               {"name": ri.name, "kind": "namespaces"})
            if not dry:
                if res is NS_RES:
                    for key in [k for k in store.objects if k[1] == ri.name]:
                        r = next(x for x in RESOURCES if x.key() == key[0])
                        store.commit(r, key[1], key[2], "DELETED", store.objects[key], store.objects[key])
                store.commit(res, ri.ns, ri.name, "DELETED", old, old)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": ri.name, "group": res.group, "kind": res.plural, "uid": old["metadata"]["uid"]}}

    def _list(self, ri, q):
        res, store = ri.res, self.server.store
        fmt, tv = self._negotiate(allow_table=True)
        fields = parse_field_selector(res, q.get("fieldSelector", ""))
        labels = parse_label_selector(q.get("labelSelector", ""))
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise bad_request("limit: invalid value")
        start = ""
        if q.get("continue"):
            try:
                start = json.loads(base64.urlsafe_b64decode(q["continue"].encode()))["start"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise bad_request("continue key is not valid")
        with store.lock:
            items = [copy.deepcopy(o) for o in store.items(res, ri.ns) if matches(o, None, fields, labels)]
            rv = store.rv
        def sort_key(o):
            return "%s/%s" % (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        if start:
            items = [o for o in items if sort_key(o) > start]
        meta = {"resourceVersion": str(rv)}
        if limit > 0 and len(items) > limit:
            meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": sort_key(items[limit - 1])}).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if fmt == "table":
            t = make_table(res, items, q.get("includeObject", "Metadata"), rv, tv)
            t["metadata"].update(meta)
            return self._send_json(200, t)
        return self._send_json(200, {"kind": res.kind + "List", "apiVersion": res.gv, "metadata": meta,
                                     "items": items})

    # -- watch ------------------------------------------------------------------------------
    def _watch(self, ri, q):
        res, store, server = ri.res, self.server.store, self.server
        fmt, tv = self._negotiate(allow_table=True)
        fields = parse_field_selector(res, q.get("fieldSelector", ""))
        labels = parse_label_selector(q.get("labelSelector", ""))
        if ri.name is not None:
            fields.append((lambda o: o["metadata"].get("name", ""), True, ri.name))
        try:
            timeout = int(q.get("timeoutSeconds") or 0)
        except ValueError:
            raise bad_request("timeoutSeconds: invalid value")
        timeout = timeout if 0 < timeout <= 3600 else 1800
        bookmarks = q.get("allowWatchBookmarks", "") in ("true", "1") and fmt == "json"
        initial_events = q.get("sendInitialEvents", "") in ("true", "1")
        rv_param = q.get("resourceVersion", "")
        if initial_events and (not bookmarks or q.get("resourceVersionMatch") != "NotOlderThan"):
            raise Invalid(res, "", [cause("sendInitialEvents", "FieldValueForbidden",
                                          "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan")])
        expired_rv = None
        with store.lock:
            if store.watches >= MAX_WATCHES:
                raise ApiError(429, "TooManyRequests", "too many open watches in the stand-in (%d)" % MAX_WATCHES)
            if rv_param in ("", "0") or initial_events:
                pos = store.rv
                initial = [copy.deepcopy(o) for o in store.items(res, ri.ns) if matches(o, None, fields, labels)]
                if not initial_events and rv_param not in ("", "0"):
                    initial = []
            else:
                try:
                    pos = int(rv_param)
                except ValueError:
                    raise Invalid(res, "", [cause("resourceVersion", "FieldValueInvalid", "Invalid value: %r" % rv_param)])
                initial = []
                if pos < store.floor:
                    expired_rv = pos
            floor = store.floor
            if expired_rv is not None and server.expired_watch == "http":
                raise ApiError(410, "Expired", "too old resource version: %d (%d)" % (expired_rv, floor))
            store.watches += 1
            gen = store.drop_gen
        self._entry["code"] = 200
        store.record(self._entry)
        self._streaming = True
        dropped = False
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._code = 200
            if expired_rv is not None:
                self._event("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": "too old resource version: %d (%d)" % (expired_rv, floor),
                                      "reason": "Expired", "code": 410})
                self._end_stream()
                return
            for o in initial:
                self._emit(res, "ADDED", o, fmt, tv, q)
            if initial_events:
                self._event("BOOKMARK", {"kind": res.kind, "apiVersion": res.gv,
                                         "metadata": {"resourceVersion": str(pos),
                                                      "annotations": {"k8s.io/initial-events-end": "true"}}})
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + server.bookmark_interval
            key = res.key()
            while True:
                events, lost = [], False
                with store.lock:
                    if store.rv <= pos and store.drop_gen == gen and not store.stopping:
                        store.cond.wait(1.0)
                    if store.drop_gen != gen:
                        dropped = True
                        break
                    if store.stopping:
                        break
                    if store.rv > pos:
                        if pos < store.floor:
                            lost = True
                        else:
                            i = bisect.bisect_right(store.history_rvs, pos)
                            events = [e for e in store.history[i:] if e.res == key and (ri.ns is None or e.ns == ri.ns)]
                            pos = store.rv
                    floor = store.floor
                if lost:
                    self._event("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                          "message": "too old resource version: %d (%d)" % (pos, floor),
                                          "reason": "Expired", "code": 410})
                    break
                for e in events:
                    now_match = e.type != "DELETED" and matches(e.obj, None, fields, labels)
                    was_match = e.prev is not None and matches(e.prev, None, fields, labels)
                    if e.type == "DELETED":
                        if was_match:
                            self._emit(res, "DELETED", e.obj, fmt, tv, q)
                    elif now_match:
                        self._emit(res, "MODIFIED" if was_match else "ADDED", e.obj, fmt, tv, q)
                    elif was_match:
                        gone = copy.deepcopy(e.prev)
                        gone["metadata"]["resourceVersion"] = str(e.rv)
                        self._emit(res, "DELETED", gone, fmt, tv, q)
                now = time.monotonic()
                if now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    self._event("BOOKMARK", {"kind": res.kind, "apiVersion": res.gv, "metadata": {"resourceVersion": str(pos)}})
                    next_bookmark = now + server.bookmark_interval
                if not events and self._client_gone():
                    dropped = True
                    break
            if dropped:
                # An abrupt reset: no closing chunk, and the socket is closed with RST.
                self.close_connection = True
                try:
                    self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            else:
                self._end_stream()
        finally:
            with store.lock:
                store.watches -= 1

    def _emit(self, res, etype, obj, fmt, tv, q):
        if fmt == "table":
            t = make_table(res, [obj], q.get("includeObject", "Metadata"), obj["metadata"].get("resourceVersion"), tv)
            self._event(etype, t)
        else:
            self._event(etype, with_type(res, obj))

    def _event(self, etype, obj):
        data = json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self):
        self.wfile.write(b"0\r\n\r\n")

    def _client_gone(self):
        sock = self.request
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable and not sock.pending():
            return False
        old = sock.gettimeout()
        try:
            sock.settimeout(0.05)
            return sock.recv(4096) == b""
        except (socket.timeout, ssl.SSLWantReadError, BlockingIOError):
            return False
        except (OSError, ssl.SSLError):
            return True
        finally:
            try:
                sock.settimeout(old)
            except OSError:
                pass


def not_found(res, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (res.qualified, name),
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res, name):
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; please '
                    'apply your changes to the latest version and try again' % (res.qualified, name),
                    {"name": name, "group": res.group, "kind": res.plural})


def bootstrap_identity(secret, token_id, token_secret):
    """plugin/pkg/auth/authenticator/token/bootstrap: the Secret's checks, in the same order."""
    if not secret or secret.get("type") != "bootstrap.kubernetes.io/token":
        return None
    if secret["metadata"].get("deletionTimestamp"):
        return None
    data = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            data[k] = base64.b64decode(v).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            data[k] = ""
    if not hmac.compare_digest(data.get("token-secret", "").encode(), token_secret.encode()):
        return None
    if data.get("token-id") != token_id:
        return None
    exp = data.get("expiration")
    if exp:
        t = parse_ts(exp)
        if t is None or t.tzinfo is None or t <= datetime.datetime.now(datetime.timezone.utc):
            return None
    if data.get("usage-bootstrap-authentication") != "true":
        return None
    groups = ["system:bootstrappers"]
    for g in (data.get("auth-extra-groups") or "").split(","):
        g = g.strip()
        if not g:
            continue
        if not g.startswith("system:bootstrappers:"):
            return None  # the real authenticator rejects the token: invalid extra group
        groups.append(g)
    return {"username": "system:bootstrap:" + token_id, "uid": "", "groups": groups, "via": "bootstrap-token"}


def group_info(group):
    versions = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in GROUP_VERSIONS[group]]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def resource_list(group, version):
    out = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs}
        if r.short:
            e["shortNames"] = r.short
        out.append(e)
        for sub in r.subresources:
            out.append({"name": "%s/%s" % (r.plural, sub), "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "%s/%s" % (group, version) if group else version,
            "resources": out}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, store, args):
        super().__init__(addr, Handler)
        self.store = store
        self.verbose = args.verbose
        self.admin_user = args.admin_user
        self.expired_watch = args.expired_watch
        self.bookmark_interval = args.bookmark_interval
        self.tokens = load_token_file(args.token_auth_file) if args.token_auth_file else {}
        gv = args.git_version
        m = re.match(r"^v(\d+)\.(\d+)\.", gv)
        if not m:
            raise SystemExit("--git-version must look like v1.31.0")
        self.version_info = {"major": m.group(1), "minor": m.group(2), "gitVersion": gv,
                             "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                             "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.22.0 (hwca test stand-in)",
                             "compiler": "gc", "platform": "linux/amd64"}
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.address = "%s:%d" % self.server_address[:2]

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if self.verbose or not isinstance(exc, (OSError, ssl.SSLError)):
            sys.stderr.write("standin: connection from %s: %s: %s\n" % (client_address[0], type(exc).__name__, exc))


def main():
    ap = argparse.ArgumentParser(description="Test stand-in for kube-apiserver (hwca tests only).")
    ap.add_argument("--port-file", required=True, help="the chosen port is written here once listening")
    ap.add_argument("--port", type=int, default=0, help="0 (default) lets the kernel choose")
    ap.add_argument("--tls-cert-file", required=True)
    ap.add_argument("--tls-private-key-file", required=True)
    ap.add_argument("--client-ca-file", required=True)
    ap.add_argument("--token-auth-file", default="")
    ap.add_argument("--admin-user", default="kubernetes-admin")
    ap.add_argument("--git-version", default="v1.31.0")
    ap.add_argument("--history", type=int, default=1000, help="watch history window, in events")
    ap.add_argument("--expired-watch", choices=("event", "http"), default="event")
    ap.add_argument("--bookmark-interval", type=float, default=15.0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.tls_cert_file, args.tls_private_key_file)
    ctx.load_verify_locations(args.client_ca_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # as kube-apiserver: VerifyClientCertIfGiven

    store = Store(max(1, args.history), 64 * 1024 * 1024)
    with store.lock:
        for ns in ("default", "kube-node-lease", "kube-public", "kube-system"):
            obj = {"metadata": {"name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now_ts()}}
            namespace_prepare(obj, None)
            store.commit(NS_RES, None, ns, "ADDED", obj, None)

    server = Server(("127.0.0.1", args.port), store, args)
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(tmp, args.port_file)
    sys.stderr.write("standin: kube-apiserver stand-in (%s) listening on https://%s\n" % (args.git_version, server.address))
    sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    store.stop()
    server.shutdown()
    server.server_close()
    sys.stderr.write("standin: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
