#!/usr/bin/env python3
"""Helper of bench/scale/run.sh: manifests, watches, metrics and the report. Standard library only.

Subcommands (run.sh calls them; each writes JSON):
  manifests  the fake nodes, the namespaces and the ModelDeployments and ModelPipelines
  watch      watches ModelDeployments, ModelPipelines and Deployments until every object is Ready
  rss        samples a process's VmRSS until it exits (or SIGTERM), then its VmHWM
  snapshot   the API server's, kube-controller-manager's and the operator's /metrics, parsed
  conditions every object's resourceVersion and conditions (what a window rewrote)
  settle     waits until the operator's writes stop
  wait-reconciled  waits until the operator ran as many reconciliations as there are objects
  log-summary      the operator log's ERROR and WARN lines, counted
  report     the summary table, from the files of one run (also report.json)

The API server is reached with the admin kubeconfig, converted to JSON by
`kubectl config view --raw --flatten -o json` (run.sh does it), so no YAML parser is needed.
"""
import argparse
import base64
import http.client
import json
import math
import os
import re
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.request

# ---------------------------------------------------------------------------------------------
# The objects.

NODE_PREFIX = "scale-node-"
IMAGE = "registry.example.com/scale-model-server:1.0.0"


def fake_node(i, pods):
    """A KWOK node (kwok.x-k8s.io/node=fake) with room for `pods` pods; no taints."""
    name = f"{NODE_PREFIX}{i}"
    cap = {"cpu": "1000", "memory": "4Ti", "pods": str(pods)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "kwok",
                "modelship.io/bench": "scale",
            },
        },
        "status": {"allocatable": cap, "capacity": cap},
    }


def model_deployment(ns, i):
    """A ModelDeployment with a fixed version and the built-in router: a stable Deployment
    (1 replica), a router Deployment (1 replica), two Services; Ready once both are available."""
    version = f"m{i}-v1.0.0-2026-12-01-a1b2c3"
    return {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"m{i}", "namespace": ns, "labels": {"modelship.io/bench": "scale"}},
        "spec": {
            "model": {"version": version, "artifact": f"s3://models/m{i}/{version}/"},
            "replicas": 1,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": IMAGE,
                            "ports": [
                                {"name": "http", "containerPort": 8080},
                                {"name": "metrics", "containerPort": 9090},
                            ],
                        }
                    ]
                }
            },
        },
    }


def stage(result):
    """A stage whose pod, on a KWOK node, succeeds at once leaving `result` as its
    termination message (e2e/cluster/stages/pod.yaml)."""
    return {
        "template": {
            "metadata": {"annotations": {"kwok.modelship.io/message": json.dumps(result)}},
            "spec": {"containers": [{"name": "main", "image": IMAGE}]},
        }
    }


def model_pipeline(ns, i):
    """A ModelPipeline with the two required stages (train, evaluate), no gates, no schedule and
    manual approval. A new pipeline starts one run (trigger `source`); its two Jobs succeed at
    once on KWOK and the run ends WaitingApproval, where it stays: no trigger fires after."""
    train = {
        "schemaVersion": 1,
        "metrics": {"loss": 0.12},
        "artifact": {"sha256": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"},
        "datasetDigest": "sha256:5e1f",
    }
    # Evaluate reports the digest it scored: it must be the one train reported.
    evaluate = {"schemaVersion": 1, "metrics": {"f1": 0.9}, "artifact": {"sha256": train["artifact"]["sha256"]}}
    return {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelPipeline",
        "metadata": {"name": f"p{i}", "namespace": ns, "labels": {"modelship.io/bench": "scale"}},
        "spec": {
            "model": {"name": f"p{i}", "artifactBase": f"s3://models/p{i}"},
            "source": {"repository": f"https://git.example/p{i}.git", "revision": "f4c9a2e17b3d"},
            "data": {"uri": f"s3://data/p{i}", "version": "2026-12-01"},
            "stages": {"train": stage(train), "evaluate": stage(evaluate)},
            "approval": "Manual",
        },
    }


def cmd_manifests(a):
    os.makedirs(a.out, exist_ok=True)
    namespaces = [f"{a.prefix}{k}" for k in range(a.namespaces)]
    # Pods that stay: stable + router per ModelDeployment. The pipelines' stage pods end
    # Succeeded and no longer count against a node's pods, but they are there while running.
    pods = 2 * a.n + 2 * a.pipelines
    nodes = max(1, math.ceil(pods / a.pods_per_node))
    write_list(os.path.join(a.out, "nodes.json"), [fake_node(i, a.pods_per_node) for i in range(nodes)])
    write_list(
        os.path.join(a.out, "namespaces.json"),
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"modelship.io/bench": "scale"}}} for ns in namespaces],
    )
    # Object i goes to namespace i mod K; each namespace's file is applied by its own kubectl.
    per_ns = {ns: [] for ns in namespaces}
    for i in range(a.n):
        ns = namespaces[i % len(namespaces)]
        per_ns[ns].append(model_deployment(ns, i))
    for i in range(a.pipelines):
        ns = namespaces[i % len(namespaces)]
        per_ns[ns].append(model_pipeline(ns, i))
    for ns, items in per_ns.items():
        # Interleave so that pipelines are created alongside the deployments, not after.
        mds = [o for o in items if o["kind"] == "ModelDeployment"]
        mps = [o for o in items if o["kind"] == "ModelPipeline"]
        mixed = []
        step = max(1, len(mds) // max(1, len(mps))) if mps else len(mds) or 1
        while mds or mps:
            mixed.extend(mds[:step])
            del mds[:step]
            if mps:
                mixed.append(mps.pop(0))
        for b in range(0, len(mixed), a.batch):
            write_list(os.path.join(a.out, f"objects-{ns}-{b // a.batch:04d}.json"), mixed[b : b + a.batch])
    print(json.dumps({"nodes": nodes, "namespaces": namespaces, "pods_per_node": a.pods_per_node}))


def write_list(path, items):
    with open(path, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)


# ---------------------------------------------------------------------------------------------
# A minimal Kubernetes client: the admin kubeconfig's client certificate.


class Kube:
    def __init__(self, kubeconfig_json):
        cfg = json.load(open(kubeconfig_json))
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        m = re.match(r"https://([^:/]+):(\d+)", cluster["server"])
        self.host, self.port = m.group(1), int(m.group(2))
        self.dir = tempfile.mkdtemp(prefix="scale-kube-")
        ca = self._file("ca.crt", cluster["certificate-authority-data"])
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.check_hostname = False  # the serving certificate names 127.0.0.1 as an IP SAN
        self.ctx.load_cert_chain(self._file("client.crt", user["client-certificate-data"]), self._file("client.key", user["client-key-data"]))

    def _file(self, name, b64):
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(b64))
        return path

    def conn(self, timeout=60):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def get(self, path, accept="application/json"):
        c = self.conn()
        try:
            c.request("GET", path, headers={"Accept": accept})
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body[:300]!r}")
            return body
        finally:
            c.close()


# ---------------------------------------------------------------------------------------------
# Watching until everything is Ready.


def cond(obj, typ):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return c.get("status")
    return None


def deployment_available(d):
    spec, st = d.get("spec") or {}, d.get("status") or {}
    want = spec.get("replicas", 1)
    return (
        st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
        and st.get("updatedReplicas", 0) == want
        and st.get("availableReplicas", 0) == want
        and st.get("replicas", 0) == want
    )


PIPELINE_SETTLED = {"WaitingApproval", "Succeeded", "Failed"}


class Tracker:
    """First-seen and readiness times per object, from the watches' events (wall clock)."""

    def __init__(self, prefix, n_md, n_mp):
        self.prefix, self.n_md, self.n_mp = prefix, n_md, n_mp
        self.lock = threading.Lock()
        self.md_seen, self.md_ready, self.md_phase = {}, {}, {}
        self.mp_seen, self.mp_ready, self.mp_settled, self.mp_phase = {}, {}, {}, {}
        self.dep_seen, self.dep_avail = {}, {}
        self.done = threading.Event()
        self.errors = []

    def event(self, kind, typ, obj):
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "")
        if not ns.startswith(self.prefix):
            return
        key = f"{ns}/{meta.get('name')}"
        now = time.time()
        with self.lock:
            if typ == "DELETED":
                return
            if kind == "md":
                self.md_seen.setdefault(key, now)
                phase = (obj.get("status") or {}).get("phase")
                self.md_phase[key] = phase
                if key not in self.md_ready and cond(obj, "Ready") == "True" and phase == "Stable":
                    self.md_ready[key] = now
            elif kind == "mp":
                self.mp_seen.setdefault(key, now)
                phase = (obj.get("status") or {}).get("phase")
                self.mp_phase[key] = phase
                if key not in self.mp_ready and cond(obj, "Ready") == "True":
                    self.mp_ready[key] = now
                if key not in self.mp_settled and cond(obj, "Ready") == "True" and phase in PIPELINE_SETTLED:
                    self.mp_settled[key] = now
            elif kind == "dep":
                self.dep_seen.setdefault(key, now)
                if key not in self.dep_avail and deployment_available(obj):
                    self.dep_avail[key] = now
            if len(self.md_ready) >= self.n_md and len(self.mp_settled) >= self.n_mp:
                self.done.set()

    def progress(self):
        with self.lock:
            return (
                f"ModelDeployments {len(self.md_seen)} seen, {len(self.md_ready)}/{self.n_md} Ready; "
                f"their Deployments {len(self.dep_seen)} seen, {len(self.dep_avail)} available; "
                f"ModelPipelines {len(self.mp_seen)} seen, {len(self.mp_ready)} Ready, {len(self.mp_settled)}/{self.n_mp} settled"
            )


def watch_loop(kube, path, kind, tracker, stop):
    """List, then watch from the list's resourceVersion; relist on 410 or a broken stream."""
    while not stop.is_set():
        try:
            lst = json.loads(kube.get(path + ("&" if "?" in path else "?") + "limit=500"))
            items = lst.get("items", [])
            cont = lst["metadata"].get("continue")
            rv = lst["metadata"]["resourceVersion"]
            while cont:
                more = json.loads(kube.get(path + ("&" if "?" in path else "?") + f"limit=500&continue={cont}"))
                items += more.get("items", [])
                cont = more["metadata"].get("continue")
            for o in items:
                tracker.event(kind, "ADDED", o)
            while not stop.is_set():
                c = kube.conn(timeout=120)
                sep = "&" if "?" in path else "?"
                c.request("GET", f"{path}{sep}watch=1&allowWatchBookmarks=true&timeoutSeconds=60&resourceVersion={rv}")
                r = c.getresponse()
                if r.status != 200:
                    raise RuntimeError(f"watch {path}: {r.status}")
                gone = False
                while not stop.is_set():
                    line = r.readline()
                    if not line:
                        break
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        gone = True  # 410 Gone: relist
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if ev.get("type") != "BOOKMARK":
                        tracker.event(kind, ev["type"], obj)
                c.close()
                if gone:
                    break
        except Exception as e:  # noqa: BLE001 - a watch that breaks is restarted
            tracker.errors.append(f"{kind}: {e}")
            time.sleep(1)


def cmd_watch(a):
    kube = Kube(a.kubeconfig)
    tracker = Tracker(a.prefix, a.n, a.pipelines)
    stop = threading.Event()
    paths = [
        ("/apis/modelship.io/v1alpha1/modeldeployments", "md"),
        ("/apis/modelship.io/v1alpha1/modelpipelines", "mp"),
        ("/apis/apps/v1/deployments?labelSelector=modelship.io%2Fdeployment", "dep"),
    ]
    threads = [threading.Thread(target=watch_loop, args=(kube, p, k, tracker, stop), daemon=True) for p, k in paths]
    for t in threads:
        t.start()
    if a.started:
        open(a.started, "w").write("watching\n")
    deadline = time.time() + a.timeout
    last = 0
    while not tracker.done.wait(1):
        if time.time() - last >= a.progress:
            last = time.time()
            log(tracker.progress())
        if time.time() > deadline:
            log(f"timeout after {a.timeout} s: {tracker.progress()}")
            break
    stop.set()
    log(tracker.progress())
    with tracker.lock:
        out = {
            "complete": tracker.done.is_set(),
            "md_seen": tracker.md_seen,
            "md_ready": tracker.md_ready,
            "md_phase": {k: v for k, v in tracker.md_phase.items() if k not in tracker.md_ready},
            "mp_seen": tracker.mp_seen,
            "mp_ready": tracker.mp_ready,
            "mp_settled": tracker.mp_settled,
            "mp_phase": tracker.mp_phase,
            "dep_seen": tracker.dep_seen,
            "dep_avail": tracker.dep_avail,
            "watch_errors": tracker.errors[:50],
        }
    json.dump(out, open(a.out, "w"))
    sys.exit(0 if out["complete"] else 3)


# ---------------------------------------------------------------------------------------------
# Memory.


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    """User + system CPU seconds of a process (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, IndexError, ValueError):
        return None


def cmd_rss(a):
    """One line per sample: `unix_time rss_kib`; on SIGTERM or exit, a last line with VmHWM."""
    out = open(a.out, "a", buffering=1)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    hwm = None
    while not stopping.is_set():
        rss = status_kib(a.pid, "VmRSS")
        if rss is None:
            break
        hwm = status_kib(a.pid, "VmHWM") or hwm
        out.write(f"{time.time():.3f} {rss} {cpu_seconds(a.pid)}\n")
        stopping.wait(a.interval)
    hwm = status_kib(a.pid, "VmHWM") or hwm
    out.write(f"hwm {hwm}\n")


def read_rss(path, since=None, until=None):
    samples, hwm = [], None
    for line in open(path):
        p = line.split()
        if p[0] == "hwm":
            hwm = int(p[1]) if p[1] != "None" else None
        else:
            t, v = float(p[0]), int(p[1])
            cpu = float(p[2]) if len(p) > 2 and p[2] != "None" else None
            if (since is None or t >= since) and (until is None or t <= until):
                samples.append((t, v, cpu))
    return samples, hwm


# ---------------------------------------------------------------------------------------------
# Metrics.

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text, keep):
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = LINE.match(line)
        if not m or not any(m.group(1).startswith(k) for k in keep):
            continue
        labels = dict(LABEL.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append([m.group(1), labels, value])
    return out


APISERVER_KEEP = (
    "apiserver_request_total",
    "apiserver_flowcontrol_dispatched_requests_total",
    "apiserver_request_duration_seconds_sum",
    "apiserver_request_duration_seconds_count",
    "apiserver_flowcontrol_rejected_requests_total",
    "apiserver_flowcontrol_request_wait_duration_seconds_sum",
    "apiserver_flowcontrol_request_wait_duration_seconds_count",
)
KCM_KEEP = ("rest_client_rate_limiter_duration_seconds_sum", "rest_client_rate_limiter_duration_seconds_count", "rest_client_requests_total")
OPERATOR_KEEP = ("modelship_",)


def cmd_snapshot(a):
    snap = {"time": time.time()}
    if a.kubeconfig:
        text = Kube(a.kubeconfig).get("/metrics", accept="text/plain").decode()
        snap["apiserver"] = parse_metrics(text, APISERVER_KEEP)
    if a.kcm and a.kubeconfig:
        try:
            kube = Kube(a.kubeconfig)
            kube.host, kube.port = "127.0.0.1", int(a.kcm)
            snap["kcm"] = parse_metrics(kube.get("/metrics", accept="text/plain").decode(), KCM_KEEP)
        except (OSError, RuntimeError) as e:
            snap["kcm_error"] = str(e)
    if a.operator:
        try:
            text = urllib.request.urlopen(a.operator.rstrip("/") + "/metrics", timeout=10).read().decode()
            snap["operator"] = parse_metrics(text, OPERATOR_KEEP)
        except OSError as e:
            snap["operator_error"] = str(e)
    json.dump(snap, open(a.out, "w"))


WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION", "CREATE", "UPDATE"}
# What modelship writes (its ClusterRole): its kinds' status, Deployments, Services, Jobs,
# events and the traffic providers' routes. Leases are left out (leader election is off here).
OPERATOR_RESOURCES = {"modeldeployments", "modelpipelines", "deployments", "services", "jobs", "events", "httproutes", "virtualservices"}


def writes(snap):
    """{(resource, subresource, verb, group): count} of successful and failed writes."""
    out = {}
    for name, labels, value in snap.get("apiserver", []):
        if name != "apiserver_request_total" or labels.get("verb") not in WRITE_VERBS:
            continue
        key = (labels.get("resource", ""), labels.get("subresource", ""), labels.get("verb"), labels.get("group", ""), labels.get("code", ""))
        out[key] = out.get(key, 0) + value
    return out


def write_diff(before, after):
    b, a_ = writes(before), writes(after)
    diff = {k: a_[k] - b.get(k, 0) for k in a_ if a_[k] - b.get(k, 0) > 0}
    ours = {k: v for k, v in diff.items() if k[0] in OPERATOR_RESOURCES}
    others = {k: v for k, v in diff.items() if k[0] not in OPERATOR_RESOURCES}
    fmt = lambda d: sorted(([f"{k[0]}{'/' + k[1] if k[1] else ''} {k[2]} {k[4]}", int(v)] for k, v in d.items()), key=lambda x: -x[1])
    return {"total": int(sum(ours.values())), "by": fmt(ours), "others_total": int(sum(others.values())), "others": fmt(others)}


def write_latency(before, after):
    """Mean API server latency of the writes on the operator's resources in a window, per
    resource and verb: [name, count, mean ms]."""
    def sums(snap):
        d = {}
        for n, l, v in snap.get("apiserver", []):
            if n.startswith("apiserver_request_duration_seconds_") and l.get("verb") in WRITE_VERBS and l.get("resource") in OPERATOR_RESOURCES:
                key = f"{l['resource']}{'/' + l['subresource'] if l.get('subresource') else ''} {l['verb']}"
                d.setdefault(key, [0.0, 0.0])[0 if n.endswith("_sum") else 1] += v
        return d
    b, a_ = sums(before), sums(after)
    out = []
    for k, (sm, ct) in a_.items():
        sm0, ct0 = b.get(k, [0.0, 0.0])
        if ct - ct0 > 0:
            out.append([k, int(ct - ct0), round((sm - sm0) / (ct - ct0) * 1000, 1)])
    return sorted(out, key=lambda x: -x[1])


def flow(snap, schema):
    return sum(v for n, l, v in snap.get("apiserver", []) if n == "apiserver_flowcontrol_dispatched_requests_total" and l.get("flow_schema") == schema)


def op_sum(snap, name, **match):
    return sum(v for n, l, v in snap.get("operator", []) if n == name and all(l.get(k) == w for k, w in match.items()))


def op_by(snap, name, label):
    out = {}
    for n, l, v in snap.get("operator", []):
        if n == name:
            out[l.get(label, "")] = out.get(l.get(label, ""), 0) + v
    return out


def buckets(snap, controller, before=None):
    """Cumulative buckets [(le, count)] of the reconcile histogram of one controller,
    minus those of `before` when given (a window)."""
    def get(s):
        d = {}
        for n, l, v in (s or {}).get("operator", []):
            if n == "modelship_reconcile_duration_seconds_bucket" and l.get("controller") == controller:
                le = math.inf if l["le"] == "+Inf" else float(l["le"])
                d[le] = d.get(le, 0) + v
        return d
    a_, b = get(snap), get(before)
    return sorted((le, a_[le] - b.get(le, 0)) for le in a_)


def quantile(q, bks):
    """histogram_quantile: linear interpolation inside the bucket that holds the q-th
    observation; in the +Inf bucket, the highest finite bound."""
    if not bks or bks[-1][1] <= 0:
        return None
    total = bks[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in bks:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def controllers(snap):
    return sorted({l.get("controller") for n, l, v in snap.get("operator", []) if n == "modelship_reconcile_duration_seconds_count"})


def reconcile_stats(snap, before=None):
    out = {}
    for c in controllers(snap):
        bks = buckets(snap, c, before)
        count = bks[-1][1] if bks else 0
        out[c] = {
            "count": int(count),
            "p50_ms": qms(0.5, bks),
            "p99_ms": qms(0.99, bks),
            "buckets": [[("+Inf" if math.isinf(le) else le), int(n)] for le, n in bks],
        }
    return out


def qms(q, bks):
    """The quantile in ms, or "> <highest bound>" when it falls in the +Inf bucket."""
    if not bks or bks[-1][1] <= 0:
        return None
    finite = [c for le, c in bks if not math.isinf(le)]
    if finite and finite[-1] < q * bks[-1][1]:
        return f"> {ms(bks[-2][0]):g}"
    return ms(quantile(q, bks))


def ms(x):
    return None if x is None else round(x * 1000, 2)


def fetch_operator(url):
    text = urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10).read().decode()
    return {"operator": parse_metrics(text, OPERATOR_KEEP)}


def list_all(kube, path):
    items, cont = [], ""
    while True:
        lst = json.loads(kube.get(f"{path}?limit=500" + (f"&continue={cont}" if cont else "")))
        items += lst.get("items", [])
        cont = lst["metadata"].get("continue")
        if not cont:
            return items


def cmd_conditions(a):
    """Every object's conditions (status, reason, lastTransitionTime) and resourceVersion."""
    kube = Kube(a.kubeconfig)
    out = {}
    for path in ("/apis/modelship.io/v1alpha1/modeldeployments", "/apis/modelship.io/v1alpha1/modelpipelines"):
        for o in list_all(kube, path):
            m = o["metadata"]
            if not m["namespace"].startswith(a.prefix):
                continue
            conds = {c["type"]: [c.get("status"), c.get("reason"), c.get("lastTransitionTime")] for c in (o.get("status") or {}).get("conditions") or []}
            out[f"{o['kind']}/{m['namespace']}/{m['name']}"] = {"rv": m["resourceVersion"], "conditions": conds}
    json.dump(out, open(a.out, "w"))


def conditions_diff(before, after):
    """Objects whose resourceVersion moved, and conditions whose lastTransitionTime moved
    although their status ended where it was (a flap: False and back, or a rewrite)."""
    moved, flapped = {}, {}
    for key, b in before.items():
        a_ = after.get(key)
        if not a_:
            continue
        kind = key.split("/")[0]
        if a_["rv"] != b["rv"]:
            moved[kind] = moved.get(kind, 0) + 1
        for typ, (st, reason, ltt) in b["conditions"].items():
            now = a_["conditions"].get(typ)
            if now and now[2] != ltt:
                k = f"{kind} {typ}={st}"
                flapped[k] = flapped.get(k, 0) + 1
    return {"objects_rewritten": moved, "conditions_transitioned": flapped}


def cmd_settle(a):
    """Waits until neither the operator's child applies nor the API server's writes on the
    operator's resources move for `quiet` seconds (at most `timeout`)."""
    kube = Kube(a.kubeconfig)
    start = time.time()
    last_change, last_key = time.time(), None
    while True:
        snap = {"apiserver": parse_metrics(kube.get("/metrics", accept="text/plain").decode(), APISERVER_KEEP)}
        snap.update(fetch_operator(a.operator))
        w = writes(snap)
        key = (
            op_sum(snap, "modelship_child_applies_total"),
            sum(v for k, v in w.items() if k[0] in OPERATOR_RESOURCES),
        )
        now = time.time()
        if key != last_key:
            last_key, last_change = key, now
        if now - last_change >= a.quiet:
            break
        if now - start >= a.timeout:
            log(f"still writing after {a.timeout} s; measuring anyway")
            break
        time.sleep(a.interval)
    json.dump({"settle_seconds": round(time.time() - start, 1), "quiet": a.quiet}, open(a.out, "w"))


def cmd_wait_reconciled(a):
    """Waits until the operator reconciled at least `count` objects (its reconciles_total)."""
    start = time.time()
    while time.time() - start < a.timeout:
        try:
            if op_sum(fetch_operator(a.operator), "modelship_reconciles_total") >= a.count:
                print(round(time.time() - start, 1))
                return
        except OSError:
            pass
        time.sleep(0.5)
    log(f"the operator did not reconcile {a.count} objects within {a.timeout} s")
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# The report.


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    f, c = math.floor(k), math.ceil(k)
    return s[f] + (s[c] - s[f]) * (k - f)


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def cmd_report(a):
    d = a.dir
    meta = load(d, "meta.json")
    w = load(d, "watch.json") or {}
    t = load(d, "times.json") or {}
    snaps = {k: load(d, f"snap-{k}.json") for k in ("start", "ready", "idle0", "idle1", "restart0", "restart1")}
    r = {"meta": meta}

    # Time until all Ready, from the first create request.
    t0 = t.get("create_start")
    md_ready, mp_settled = w.get("md_ready", {}), w.get("mp_settled", {})
    if t0 and md_ready:
        all_times = list(md_ready.values()) + list(mp_settled.values())
        r["create_seconds"] = round(t["create_end"] - t0, 1) if t.get("create_end") else None
        r["all_ready_seconds"] = round(max(all_times) - t0, 1) if w.get("complete") else None
        r["md_all_ready_seconds"] = round(max(md_ready.values()) - t0, 1)
        r["mp_all_settled_seconds"] = round(max(mp_settled.values()) - t0, 1) if mp_settled else None
        r["md_ready_count"] = len(md_ready)
        r["mp_settled_count"] = len(mp_settled)
        # Where an object's time goes: operator writes its children; the control plane makes
        # them available (ReplicaSet, pods, scheduling, KWOK); the operator reports Ready.
        seen, dseen, davail = w["md_seen"], w["dep_seen"], w["dep_avail"]
        to_children, to_avail, to_ready, total = [], [], [], []
        for key, ready in md_ready.items():
            ns, name = key.split("/")
            deps = [f"{ns}/{name}-stable", f"{ns}/{name}-router"]
            if not all(k in dseen and k in davail for k in deps):
                continue
            created = seen[key]
            children = min(dseen[k] for k in deps)
            avail = max(davail[k] for k in deps)
            to_children.append(children - created)
            to_avail.append(avail - children)
            to_ready.append(ready - avail)
            total.append(ready - created)
        r["md_phases"] = {
            name: {"p50": rnd(pct(v, 0.5)), "p99": rnd(pct(v, 0.99)), "max": rnd(max(v) if v else None)}
            for name, v in (("created_to_children", to_children), ("children_to_available", to_avail), ("available_to_ready", to_ready), ("created_to_ready", total))
        }
        # Ready over time: when 50 % and 90 % were Ready.
        rt = sorted(md_ready.values())
        r["md_ready_50pct_seconds"] = rnd(rt[len(rt) // 2] - t0)
        r["md_ready_90pct_seconds"] = rnd(rt[int(len(rt) * 0.9) - 1] - t0) if len(rt) >= 10 else None
    if snaps["start"] and snaps["ready"]:
        r["apiserver_latency"] = write_latency(snaps["start"], snaps["ready"])
        # API Priority and Fairness: the operator's requests (flow schema service-accounts)
        # waiting in the API server's queues, and those rejected (429).
        def apf(snap, name):
            return sum(v for n, l, v in snap.get("apiserver", []) if n == name and l.get("flow_schema") == "service-accounts")
        r["apf_operator"] = {
            "requests": int(flow(snaps["ready"], "service-accounts") - flow(snaps["start"], "service-accounts")),
            "queue_wait_s": rnd(apf(snaps["ready"], "apiserver_flowcontrol_request_wait_duration_seconds_sum") - apf(snaps["start"], "apiserver_flowcontrol_request_wait_duration_seconds_sum")),
            "rejected": int(apf(snaps["ready"], "apiserver_flowcontrol_rejected_requests_total") - apf(snaps["start"], "apiserver_flowcontrol_rejected_requests_total")),
        }
        if snaps["start"].get("kcm") and snaps["ready"].get("kcm"):
            waited = sum(v for n, l, v in snaps["ready"]["kcm"] if n == "rest_client_rate_limiter_duration_seconds_sum") - sum(v for n, l, v in snaps["start"]["kcm"] if n == "rest_client_rate_limiter_duration_seconds_sum")
            reqs = sum(v for n, l, v in snaps["ready"]["kcm"] if n == "rest_client_requests_total") - sum(v for n, l, v in snaps["start"]["kcm"] if n == "rest_client_requests_total")
            r["kcm"] = {"requests": int(reqs), "rate_limiter_wait_s": rnd(waited), "window_s": rnd(snaps["ready"]["time"] - snaps["start"]["time"])}
    r["not_ready"] = {k: v for k, v in list((w.get("md_phase") or {}).items())[:10]}
    r["watch_errors"] = w.get("watch_errors", [])[:5]

    # Reconcile durations: everything the first operator did up to the end of the idle minute.
    if snaps["idle1"]:
        r["reconcile"] = reconcile_stats(snaps["idle1"])
        r["reconcile_creation"] = reconcile_stats(snaps["ready"]) if snaps["ready"] else None
        r["reconcile_idle"] = reconcile_stats(snaps["idle1"], snaps["idle0"])
        r["child_applies"] = op_by(snaps["idle1"], "modelship_child_applies_total", "kind")
        r["reconcile_errors"] = {f"{l.get('controller')}/{l.get('error')}": int(v) for n, l, v in snaps["idle1"].get("operator", []) if n == "modelship_reconcile_errors_total" and v > 0}
    if snaps["idle0"] and snaps["idle1"]:
        r["idle"] = write_diff(snaps["idle0"], snaps["idle1"])
        r["idle"]["seconds"] = round(snaps["idle1"]["time"] - snaps["idle0"]["time"], 1)
        r["idle"]["operator_child_applies"] = int(op_sum(snaps["idle1"], "modelship_child_applies_total") - op_sum(snaps["idle0"], "modelship_child_applies_total"))
        r["idle"]["operator_reconciles"] = int(op_sum(snaps["idle1"], "modelship_reconciles_total") - op_sum(snaps["idle0"], "modelship_reconciles_total"))
        r["idle"]["operator_requests_all_verbs"] = int(flow(snaps["idle1"], "service-accounts") - flow(snaps["idle0"], "service-accounts"))
    if snaps["restart0"] and snaps["restart1"]:
        r["restart"] = write_diff(snaps["restart0"], snaps["restart1"])
        r["restart"]["seconds"] = round(snaps["restart1"]["time"] - snaps["restart0"]["time"], 1)
        r["restart"]["operator_child_applies"] = int(op_sum(snaps["restart1"], "modelship_child_applies_total"))
        r["restart"]["operator_reconciles"] = int(op_sum(snaps["restart1"], "modelship_reconciles_total"))
        r["restart"]["operator_requests_all_verbs"] = int(flow(snaps["restart1"], "service-accounts") - flow(snaps["restart0"], "service-accounts"))
        r["restart"]["reconcile"] = reconcile_stats(snaps["restart1"])
        r["restart"]["ready_seconds"] = t.get("restart_ready_seconds")
        r["restart"]["reconciled_seconds"] = t.get("restart_reconciled_seconds")
    c = {k: load(d, f"conditions-{k}.json") for k in ("idle0", "idle1", "restart0", "restart1")}
    if c["idle0"] and c["idle1"]:
        r.setdefault("idle", {})["objects"] = conditions_diff(c["idle0"], c["idle1"])
    if c["restart0"] and c["restart1"]:
        r.setdefault("restart", {})["objects"] = conditions_diff(c["restart0"], c["restart1"])

    # Memory.
    if os.path.exists(os.path.join(d, "rss-1.txt")):
        samples, hwm = read_rss(os.path.join(d, "rss-1.txt"))
        vals = [v for _, v, _ in samples]
        idle = [v for ts, v, _ in samples if t.get("idle_start") and ts >= t["idle_start"]]
        cpu_at = lambda when: next((c for ts, _, c in samples if ts >= when and c is not None), None)
        r["rss"] = {
            "peak_sampled_mib": mib(max(vals)) if vals else None,
            "hwm_mib": mib(hwm),
            "before_create_mib": mib(vals[0]) if vals else None,
            "settled_mib": mib(idle[-1]) if idle else None,
            "idle_min_mib": mib(min(idle)) if idle else None,
            "idle_max_mib": mib(max(idle)) if idle else None,
        }
        if t.get("create_start") and t.get("ready") and t.get("idle_start"):
            c0, c1, c2 = cpu_at(t["create_start"]), cpu_at(t["ready"]), cpu_at(t["idle_start"])
            last = samples[-1][2] if samples else None
            r["cpu"] = {
                "until_ready_s": rnd(c1 - c0, 2) if None not in (c0, c1) else None,
                "idle_minute_s": rnd(last - c2, 2) if None not in (c2, last) else None,
            }
    if os.path.exists(os.path.join(d, "rss-2.txt")):
        samples, hwm = read_rss(os.path.join(d, "rss-2.txt"))
        vals = [v for _, v, _ in samples]
        r.setdefault("rss", {})["restart_hwm_mib"] = mib(hwm)
        r["rss"]["restart_last_mib"] = mib(vals[-1]) if vals else None
    r["operator_log"] = load(d, "log-summary.json")
    json.dump(r, open(os.path.join(d, "report.json"), "w"), indent=1)
    print_report(r)


def rnd(x, n=1):
    return None if x is None else round(x, n)


def mib(kib):
    return None if kib is None else round(kib / 1024, 1)


def fmt(x, unit=""):
    return "-" if x is None else f"{x}{unit}"


def print_report(r):
    m = r.get("meta") or {}
    rows = []
    add = lambda k, v, goal="": rows.append((k, v, goal))
    add("ModelDeployments / ModelPipelines", f"{m.get('n')} / {m.get('pipelines')} in {m.get('namespaces')} namespaces, {m.get('nodes')} fake nodes of {m.get('pods_per_node')} pods")
    add("create requests sent in", fmt(r.get("create_seconds"), " s"))
    add("time until all Ready", fmt(r.get("all_ready_seconds"), " s"))
    add("  ModelDeployments: 50 % / 90 % / all Ready", f"{fmt(r.get('md_ready_50pct_seconds'), ' s')} / {fmt(r.get('md_ready_90pct_seconds'), ' s')} / {fmt(r.get('md_all_ready_seconds'), ' s')} ({r.get('md_ready_count')})")
    add("  ModelPipelines: all runs WaitingApproval", f"{fmt(r.get('mp_all_settled_seconds'), ' s')} ({r.get('mp_settled_count')})")
    ph = r.get("md_phases") or {}
    for name, label in (("created_to_children", "create -> Deployments created (operator)"), ("children_to_available", "Deployments created -> available (kcm, scheduler, KWOK)"), ("available_to_ready", "available -> Ready (operator)"), ("created_to_ready", "create -> Ready")):
        v = ph.get(name)
        if v:
            add(f"  per object, {label} p50/p99/max", f"{v['p50']} / {v['p99']} / {v['max']} s")
    add("  API server's mean latency of writes until all Ready [what, count, ms]", str(r.get("apiserver_latency")))
    if r.get("apf_operator"):
        a = r["apf_operator"]
        add("  operator's requests until all Ready / s queued in the API server (APF) / rejected", f"{a['requests']} / {a['queue_wait_s']} s / {a['rejected']}")
    if r.get("kcm"):
        add("  kube-controller-manager: requests / s waited on its client rate limiter", f"{r['kcm']['requests']} / {r['kcm']['rate_limiter_wait_s']} s (in {r['kcm']['window_s']} s)")
    for c, s in sorted((r.get("reconcile") or {}).items()):
        add(f"reconcile p50 / p99 ({c}, {s['count']} reconciles, from buckets)", f"{fmt(s['p50_ms'])} / {fmt(s['p99_ms'])} ms", "p99 < 50 ms")
    for c, s in sorted((r.get("reconcile_creation") or {}).items()):
        add(f"  of which until all Ready ({c}, {s['count']})", f"{fmt(s['p50_ms'])} / {fmt(s['p99_ms'])} ms")
    for c, s in sorted(((r.get("restart") or {}).get("reconcile") or {}).items()):
        add(f"  after a restart ({c}, {s['count']})", f"{fmt(s['p50_ms'])} / {fmt(s['p99_ms'])} ms")
    rss = r.get("rss") or {}
    add("operator peak RSS (VmHWM) / sampled peak", f"{fmt(rss.get('hwm_mib'), ' MiB')} / {fmt(rss.get('peak_sampled_mib'), ' MiB')}", "< 150 MiB at 5,000")
    add("operator RSS settled (end of the idle minute)", fmt(rss.get("settled_mib"), " MiB"))
    cpu = r.get("cpu") or {}
    add("operator CPU until all Ready / in the idle minute", f"{fmt(cpu.get('until_ready_s'), ' s')} / {fmt(cpu.get('idle_minute_s'), ' s')}")
    add("operator RSS before the objects were created", fmt(rss.get("before_create_mib"), " MiB"))
    add("restarted operator VmHWM / RSS at the end", f"{fmt(rss.get('restart_hwm_mib'), ' MiB')} / {fmt(rss.get('restart_last_mib'), ' MiB')}")
    idle = r.get("idle") or {}
    add(f"API writes in an idle minute ({idle.get('seconds')} s), operator's resources", f"{idle.get('total')} {idle.get('by') or ''}", "0")
    add("  operator: reconciles / child applies / requests (all verbs)", f"{idle.get('operator_reconciles')} / {idle.get('operator_child_applies')} / {idle.get('operator_requests_all_verbs')}")
    add("  other writes in the minute (nodes, leases, ...)", f"{idle.get('others_total')} {idle.get('others') or ''}")
    rs = r.get("restart") or {}
    add(f"API writes after a restart ({rs.get('seconds')} s), operator's resources", f"{rs.get('total')} {rs.get('by') or ''}", "0")
    add("  restarted operator: reconciles / child applies / requests", f"{rs.get('operator_reconciles')} / {rs.get('operator_child_applies')} / {rs.get('operator_requests_all_verbs')}")
    add("  objects rewritten / conditions that moved, idle minute", f"{(idle.get('objects') or {}).get('objects_rewritten')} / {(idle.get('objects') or {}).get('conditions_transitioned')}")
    add("  objects rewritten / conditions that moved, after restart", f"{(rs.get('objects') or {}).get('objects_rewritten')} / {(rs.get('objects') or {}).get('conditions_transitioned')}")
    add("  restarted operator: ready / every object reconciled", f"{fmt(rs.get('ready_seconds'), ' s')} / {fmt(rs.get('reconciled_seconds'), ' s')}")
    add("reconcile errors", str(r.get("reconcile_errors") or {}))
    lg = r.get("operator_log") or {}
    add("operator log: ERROR / WARN lines", f"{lg.get('error')} / {lg.get('warn')}")
    width = max(len(k) for k, _, _ in rows)
    print()
    print(f"{'figure':<{width}}  value  [goal]")
    for k, v, g in rows:
        print(f"{k:<{width}}  {v}" + (f"  [goal: {g}]" if g else ""))
    if r.get("not_ready"):
        print("not Ready (first 10):", r["not_ready"])
    for line in (lg.get("top") or [])[:8]:
        print("  log:", line)


def cmd_log_summary(a):
    """Counts the operator log's ERROR and WARN lines (text or JSON format) and their most
    frequent messages (numbers and names blurred)."""
    err = warn = 0
    top = {}
    for path in a.logs:
        if not os.path.exists(path):
            continue
        for line in open(path, errors="replace"):
            level = None
            if '"level":"ERROR"' in line or " ERROR " in line:
                level, err = "ERROR", err + 1
            elif '"level":"WARN"' in line or " WARN " in line:
                level, warn = "WARN", warn + 1
            if level:
                msg = line
                try:
                    j = json.loads(line)
                    f = j.get("fields") or j
                    msg = f"{f.get('message', '')} {f.get('error', '')}"
                except ValueError:
                    msg = line.split(level, 1)[-1]
                msg = re.sub(r"\d+", "N", msg.strip())[:200]
                key = f"{level} {msg}"
                top[key] = top.get(key, 0) + 1
    out = {"error": err, "warn": warn, "top": [f"{n}x {k}" for k, n in sorted(top.items(), key=lambda x: -x[1])[:10]]}
    json.dump(out, open(a.out, "w"))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("manifests")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--pipelines", type=int, required=True)
    s.add_argument("--namespaces", type=int, required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--pods-per-node", type=int, default=500)
    s.add_argument("--batch", type=int, default=250)
    s.add_argument("--out", required=True)
    s = sub.add_parser("watch")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--pipelines", type=int, required=True)
    s.add_argument("--timeout", type=float, default=3600)
    s.add_argument("--progress", type=float, default=15)
    s.add_argument("--started")
    s.add_argument("--out", required=True)
    s = sub.add_parser("rss")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--interval", type=float, default=0.5)
    s.add_argument("--out", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("--kubeconfig")
    s.add_argument("--operator")
    s.add_argument("--kcm", help="kube-controller-manager's port on 127.0.0.1 (its /metrics)")
    s.add_argument("--out", required=True)
    s = sub.add_parser("conditions")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("settle")
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--operator", required=True)
    s.add_argument("--quiet", type=float, default=30)
    s.add_argument("--interval", type=float, default=5)
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--out", required=True)
    s = sub.add_parser("wait-reconciled")
    s.add_argument("--operator", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--timeout", type=float, default=600)
    s = sub.add_parser("log-summary")
    s.add_argument("--out", required=True)
    s.add_argument("logs", nargs="+")
    s = sub.add_parser("report")
    s.add_argument("dir")
    a = p.parse_args()
    {
        "manifests": cmd_manifests,
        "watch": cmd_watch,
        "rss": cmd_rss,
        "snapshot": cmd_snapshot,
        "settle": cmd_settle,
        "conditions": cmd_conditions,
        "wait-reconciled": cmd_wait_reconciled,
        "log-summary": cmd_log_summary,
        "report": cmd_report,
    }[a.cmd](a)


if __name__ == "__main__":
    main()
