#!/usr/bin/env python3
"""Loopback benchmark of `modelship mirror` against the model server directly and nginx's
`mirror` module, with one load generator (bench/loadgen) for every target.

Each run measures, for every scenario (healthy shadow, shadow 10x slower, shadow down):
  - latency (p50, p99) at a fixed request rate (open loop: the generator sends at the rate
    whatever the answers do),
  - the highest sustained throughput (closed loop: a fixed number of connections, each
    sending its next request when the previous one is answered), with the proxy's CPU time
    per request and how busy each CPU was,
  - peak RSS (VmHWM) of the router and of nginx.
Figures are medians over the runs; ratios are taken within each run, then their median.

Run through bench/run.sh, which builds the binaries and the generator and installs nginx.

`--wrk` measures instead as a user would (see `wrk_main`): wrk against the router and against
nginx's mirror, both in front of two nginx upstreams, nothing pinned.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BODY = b'{"instances":[[1.5,2.0,3.0]]}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer within {timeout}s")
        time.sleep(0.05)


def http(method, url, body=None):
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as r:
        return r.read()


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid):
    """User and system CPU time of a process, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def cpus_busy():
    """Busy clock ticks of each CPU (user, nice, system, irq, softirq, steal)."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v]
                busy[int(name[3:])] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy


TICK = os.sysconf("SC_CLK_TCK")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def set_realtime(pids, priority):
    """SCHED_FIFO at `priority` for every thread of `pids` and their children; 0 restores
    the normal policy."""
    policy = ["-f", str(priority)] if priority else ["-o", "0"]
    for pid in pids:
        for p in [pid] + children(pid):
            subprocess.run(["chrt", "-a"] + policy[:1] + ["-p", policy[1], str(p)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


class Proc:
    """A background process pinned to `cpus`, with its output in `log`."""

    def __init__(self, name, argv, cpus, log_dir, env=None):
        self.name = name
        self.log = open(os.path.join(log_dir, f"{name}.log"), "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(["taskset", "-c", cpus] + argv, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)

    @property
    def pid(self):
        return self.popen.pid

    def peak_rss_mib(self):
        """Peak RSS of the process and its children (nginx's workers), in MiB."""
        return (vm_hwm_kib(self.pid) + sum(vm_hwm_kib(c) for c in children(self.pid))) / 1024

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.logs = tempfile.mkdtemp(prefix="logs-", dir=self.out)
        self.body_file = os.path.join(self.out, "body.json")
        with open(self.body_file, "wb") as f:
            f.write(BODY)
        self.procs = []

    def start(self, name, argv, cpus, env=None, ready=None):
        proc = Proc(name, argv, cpus, self.logs, env)
        self.procs.append(proc)
        if ready:
            wait_http(ready)
        return proc

    def model_server(self, name, port):
        return self.start(
            name,
            [self.args.model_server, "--listen", f"127.0.0.1:{port}", "--model-uri", self.args.model,
             "--model-version", name, "--log", "warn"],
            self.args.upstream_cpus,
            env={"TOKIO_WORKER_THREADS": str(self.args.upstream_threads)},
            ready=f"http://127.0.0.1:{port}/healthz",
        )

    def router(self, port, metrics_port, stable, shadow):
        return self.start(
            "router",
            [self.args.modelship, "--log", "warn", "mirror", "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}", "--stable", f"http://127.0.0.1:{stable}",
             "--shadow", f"http://127.0.0.1:{shadow}", "--mirror-percent", "100",
             "--compare-pointer", "/predictions", "--shadow-timeout", "5s", "--connect-timeout", "1s"],
            self.args.proxy_cpus,
            env={"MODELSHIP_MIRROR_WORKERS": str(self.args.proxy_threads)},
            ready=f"http://127.0.0.1:{metrics_port}/readyz",
        )

    def nginx(self, port, stable, shadow):
        prefix = tempfile.mkdtemp(prefix="nginx-", dir=self.out)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(prefix=prefix, port=port, stable=stable, shadow=shadow,
                                      workers=self.args.proxy_threads))
        proc = self.start("nginx", [self.args.nginx, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")],
                          self.args.proxy_cpus)
        wait_http(f"http://127.0.0.1:{port}/__health")
        return proc

    def attack(self, port, rate, duration, connections=None, realtime=0):
        """One measurement by the load generator, after a warm-up of the same load that is not
        counted; returns its JSON report. With `realtime`, the generator runs SCHED_FIFO."""
        a = self.args
        argv = [a.loadgen, "--url", f"http://127.0.0.1:{port}/predict", "--body-file", self.body_file,
                "--header", "Content-Type: application/json", "--duration", str(duration),
                "--warmup", str(a.warmup), "--timeout", "10"]
        if rate:
            argv += ["--rate", str(rate), "--arrivals", a.arrivals]
        else:
            argv += ["--rate", "0", "--connections", str(connections)]
        rt = ["chrt", "-f", str(realtime)] if realtime else []
        out = subprocess.run(rt + ["taskset", "-c", a.generator_cpus] + argv, stdout=subprocess.PIPE, check=True).stdout
        return json.loads(out)

    def measure(self, port, label, proxy=None):
        """Latency at the fixed rate, then throughput; `proxy` is the process whose CPU time
        per request is measured at saturation."""
        a = self.args
        pids = [p.pid for p in self.procs if p.popen.poll() is None]
        # Latency at a low, fixed load: with real-time priority, so that unrelated work on
        # the machine does not preempt the processes under test (see docs/benchmarks.md).
        set_realtime(pids, a.rt_priority)
        try:
            fixed = self.attack(port, a.rate, a.duration, realtime=a.rt_priority)
        finally:
            set_realtime(pids, 0)
        # Saturation: normal priority, so the machine's other work is never starved.
        proxy_pids = [proxy.pid] + children(proxy.pid) if proxy else []
        before_cpu, before_busy = sum(cpu_ticks(p) for p in proxy_pids), cpus_busy()
        started = time.monotonic()
        peak = self.attack(port, 0, a.duration, connections=a.connections)
        wall = time.monotonic() - started
        after_cpu, after_busy = sum(cpu_ticks(p) for p in proxy_pids), cpus_busy()
        for name, r in (("fixed rate", fixed), ("peak", peak)):
            if r["success"] < 1.0:
                print(f"  warning: {label}: success {r['success']:.4f} at the {name}; codes {r['codes']}, "
                      f"errors {r['errors']}", file=sys.stderr)
        result = {"p50_ms": fixed["p50_ms"], "p99_ms": fixed["p99_ms"], "p999_ms": fixed["p999_ms"],
                  "max_rps": peak["throughput"], "lag_p99_ms": fixed["lag_p99_ms"],
                  # Busy share of each CPU over the whole attack (warm-up included).
                  "cpu_busy": {str(c): round((after_busy[c] - before_busy[c]) / TICK / wall, 3) for c in after_busy}}
        if proxy:
            # Over warm-up and measurement, at the same load: CPU time over requests answered.
            answered = peak["throughput"] * (a.duration + a.warmup)
            result["proxy_us_per_request"] = (after_cpu - before_cpu) / TICK / answered * 1e6
        print(f"  {label}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
              f"{result['max_rps']:.0f} req/s, CPUs busy {result['cpu_busy']}"
              + (f", proxy {result['proxy_us_per_request']:.1f} us/request" if proxy else ""), file=sys.stderr)
        return result

    def run_once(self, index):
        ports = {k: free_port() for k in ("stable", "shadow", "router", "metrics", "nginx")}
        stable = self.model_server("stable", ports["stable"])
        shadow = self.model_server("shadow", ports["shadow"])
        router = self.router(ports["router"], ports["metrics"], ports["stable"], ports["shadow"])
        nginx = self.nginx(ports["nginx"], ports["stable"], ports["shadow"])
        result = {}
        try:
            print(f"run {index}: healthy shadow", file=sys.stderr)
            result["direct"] = self.measure(ports["stable"], "direct")
            result["router"] = self.measure(ports["router"], "router", router)
            result["nginx"] = self.measure(ports["nginx"], "nginx", nginx)

            # 10x slower than stable as measured directly in this run (the timer rounds up to 1 ms).
            slow_ms = 10 * result["direct"]["p50_ms"]
            http("PUT", f"http://127.0.0.1:{ports['shadow']}/admin/knobs", json.dumps({"latency_ms": slow_ms}).encode())
            print(f"run {index}: shadow slowed by {slow_ms:.3f} ms", file=sys.stderr)
            result["router_slow"] = self.measure(ports["router"], "router, slow shadow", router)
            result["nginx_slow"] = self.measure(ports["nginx"], "nginx, slow shadow", nginx)

            shadow.stop()
            print(f"run {index}: shadow down", file=sys.stderr)
            result["router_down"] = self.measure(ports["router"], "router, shadow down", router)
            result["nginx_down"] = self.measure(ports["nginx"], "nginx, shadow down", nginx)

            result["router_rss_mib"] = router.peak_rss_mib()
            result["nginx_rss_mib"] = nginx.peak_rss_mib()
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).read().decode()
            result["router_comparisons"] = {
                line.split('"')[1]: float(line.split()[-1])
                for line in metrics.splitlines() if line.startswith("modelship_mirror_comparisons_total{")
            }
            result["router_dropped"] = {
                line.split('"')[1]: float(line.split()[-1])
                for line in metrics.splitlines() if line.startswith("modelship_mirror_dropped_total{")
            }
        finally:
            for proc in (nginx, router, shadow, stable):
                proc.stop()
            self.procs.clear()
        return result


NGINX_CONF = """
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    # A failed copy is counted by the router, not logged; nginx does not log it either.
    error_log {prefix}/error.log crit;
    # Upstream connections are kept as long as the router keeps its own (nginx's defaults
    # would close each one after 1000 requests or 60 s idle).
    upstream stable {{ server 127.0.0.1:{stable}; keepalive 256; keepalive_requests 1000000; keepalive_timeout 90s; }}
    upstream shadow {{ server 127.0.0.1:{shadow}; keepalive 256; keepalive_requests 1000000; keepalive_timeout 90s; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /__health {{ return 200 "ok\\n"; }}
        location / {{
            mirror /__mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://stable;
        }}
        # The copy, as the router sends it: no credentials, marked, its own timeouts.
        location = /__mirror {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header Cookie "";
            proxy_set_header X-Modelship-Shadow 1;
            proxy_connect_timeout 1s;
            proxy_send_timeout 5s;
            proxy_read_timeout 5s;
            proxy_pass http://shadow$request_uri;
        }}
    }}
}}
"""


def median(values):
    return statistics.median(values) if values else float("nan")


def summarize(runs):
    def m(key, field):
        return median([r[key][field] for r in runs])

    def ratio(a, b, field):
        return median([r[a][field] / r[b][field] for r in runs])

    lines = []
    add = lines.append
    add(f"median of {len(runs)} runs")
    add("")
    add("| scenario | target | p50 ms | p99 ms | max req/s | proxy CPU µs/request at max |")
    add("|---|---|---:|---:|---:|---:|")
    for key, scenario, target in [
        ("direct", "healthy", "direct"), ("router", "healthy", "modelship mirror"), ("nginx", "healthy", "nginx mirror"),
        ("router_slow", "shadow 10x slower", "modelship mirror"), ("nginx_slow", "shadow 10x slower", "nginx mirror"),
        ("router_down", "shadow down", "modelship mirror"), ("nginx_down", "shadow down", "nginx mirror"),
    ]:
        cpu = median([r[key]["proxy_us_per_request"] for r in runs if "proxy_us_per_request" in r[key]])
        cpu = "" if cpu != cpu else f"{cpu:.1f}"
        add(f"| {scenario} | {target} | {m(key, 'p50_ms'):.3f} | {m(key, 'p99_ms'):.3f} | {m(key, 'max_rps'):.0f} | {cpu} |")
    add("")
    add("CPUs busy during the throughput measurements (median): " + ", ".join(
        f"{key} " + "/".join(f"{median([r[key]['cpu_busy'][c] for r in runs]):.0%}" for c in sorted(runs[0][key]["cpu_busy"]))
        for key in ("direct", "router", "nginx", "router_down", "nginx_down")))
    add("")
    router_p99_over_direct = median([r["router"]["p99_ms"] - r["direct"]["p99_ms"] for r in runs])
    tput_vs_nginx = ratio("router", "nginx", "max_rps")
    slow_p99 = ratio("router_slow", "router", "p99_ms")
    down_p99 = ratio("router_down", "router", "p99_ms")
    add("| ratio (median of per-run ratios) | value | goal |")
    add("|---|---:|---|")
    add(f"| router p99 - direct p99 (ms) | {router_p99_over_direct:+.3f} | <= +1 ms: {'met' if router_p99_over_direct <= 1 else 'MISSED'} |")
    add(f"| router p99 / direct p99 | {ratio('router', 'direct', 'p99_ms'):.2f} | |")
    add(f"| router p99 / nginx p99 | {ratio('router', 'nginx', 'p99_ms'):.2f} | |")
    add(f"| router max req/s / direct | {ratio('router', 'direct', 'max_rps'):.2f} | |")
    add(f"| router max req/s / nginx | {tput_vs_nginx:.2f} | >= 2: {'met' if tput_vs_nginx >= 2 else 'MISSED'} |")
    add(f"| router p99, slow shadow / healthy | {slow_p99:.2f} | <= 1.10: {'met' if slow_p99 <= 1.1 else 'MISSED'} |")
    add(f"| router p99, shadow down / healthy | {down_p99:.2f} | <= 1.10: {'met' if down_p99 <= 1.1 else 'MISSED'} |")
    slow_of_medians = m("router_slow", "p99_ms") / m("router", "p99_ms")
    down_of_medians = m("router_down", "p99_ms") / m("router", "p99_ms")
    add(f"| the same as ratios of the medians: slow shadow, shadow down | {slow_of_medians:.2f}, {down_of_medians:.2f} | "
        f"<= 1.10: {'met' if slow_of_medians <= 1.1 else 'MISSED'}, {'met' if down_of_medians <= 1.1 else 'MISSED'} |")
    add(f"| nginx p99, slow shadow / healthy | {ratio('nginx_slow', 'nginx', 'p99_ms'):.2f} | |")
    add(f"| nginx max req/s, slow shadow / healthy | {ratio('nginx_slow', 'nginx', 'max_rps'):.2f} | |")
    add(f"| router max req/s, slow shadow / healthy | {ratio('router_slow', 'router', 'max_rps'):.2f} | |")
    add("")
    add(f"peak RSS: router {median([r['router_rss_mib'] for r in runs]):.1f} MiB, "
        f"nginx (master + workers) {median([r['nginx_rss_mib'] for r in runs]):.1f} MiB")
    comparisons = runs[-1].get("router_comparisons", {})
    dropped = runs[-1].get("router_dropped", {})
    add(f"router comparisons in the last run: {comparisons}; copies dropped: {dropped}")
    return "\n".join(lines)


# --- wrk mode -------------------------------------------------------------------------
# The setting a user reproduces with stock tools: two nginx upstreams answering a fixed JSON
# prediction (the shadow differently on about a tenth of requests), the router or nginx's
# mirror in front of them, and wrk as the client; no process pinned, default threads.

UPSTREAM_CONF = """
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    # The shadow answers differently on {differ}% of requests, decided per request.
    split_clients "${{request_id}}" $variant {{ {differ}% other; * same; }}
    map $variant $answer {{
        same  '{same}';
        other '{other}';
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location = /__health {{ return 200 "ok\\n"; }}
        location / {{ return 200 '{answer}'; }}
    }}
}}
"""

STABLE_ANSWER = '{"model_version":"v1","predictions":[{"score":0.7311,"label":"churn"},{"score":0.1824,"label":"stay"}]}'
SHADOW_SAME = '{"model_version":"v2","predictions":[{"score":0.7311,"label":"churn"},{"score":0.1824,"label":"stay"}]}'
SHADOW_OTHER = '{"model_version":"v2","predictions":[{"score":0.4502,"label":"stay"},{"score":0.1824,"label":"stay"}]}'

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
-- One JSON line with the exact figures; wrk's own report is printed before it.
done = function(summary, latency, requests)
  io.write(string.format(
    '{{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def ticks_of(pids):
    return sum(cpu_ticks(p) for p in pids)


def tree(proc):
    return [proc.pid] + children(proc.pid)


def comparisons(metrics_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("modelship_mirror_comparisons_total{") or line.startswith("modelship_mirror_dropped_total{"):
            counts[line.split('"')[1]] = float(line.split()[-1])
    return counts


class WrkBench(Bench):
    def start(self, name, argv, cpus=None, env=None, ready=None):
        # Nothing pinned: every process may run on every CPU, as in a user's set-up.
        proc = Proc(name, argv, self.args.all_cpus, self.logs, env)
        self.procs.append(proc)
        if ready:
            wait_http(ready)
        return proc

    def upstream(self, name, port, answer):
        prefix = tempfile.mkdtemp(prefix=f"{name}-", dir=self.out)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(UPSTREAM_CONF.format(prefix=prefix, port=port, workers=self.args.upstream_workers,
                                         differ=self.args.differ_percent, same=SHADOW_SAME,
                                         other=SHADOW_OTHER, answer=answer))
        proc = self.start(name, [self.args.nginx, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")])
        wait_http(f"http://127.0.0.1:{port}/__health")
        return proc

    def router(self, port, metrics_port, stable, shadow):
        return self.start(
            "router",
            [self.args.modelship, "--log", "warn", "mirror", "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}", "--stable", f"http://127.0.0.1:{stable}",
             "--shadow", f"http://127.0.0.1:{shadow}", "--mirror-percent", "100",
             "--compare-pointer", "/predictions", "--shadow-timeout", "5s", "--connect-timeout", "1s"],
            ready=f"http://127.0.0.1:{metrics_port}/readyz",
        )

    def nginx(self, port, stable, shadow):
        prefix = tempfile.mkdtemp(prefix="nginx-", dir=self.out)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(prefix=prefix, port=port, stable=stable, shadow=shadow, workers="auto"))
        proc = self.start("nginx", [self.args.nginx, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")])
        wait_http(f"http://127.0.0.1:{port}/__health")
        return proc

    def wrk(self, port, duration):
        """One wrk run; returns its figures and its own CPU seconds."""
        a = self.args
        argv = [a.wrk_path, f"-t{a.wrk_threads}", f"-c{a.wrk_connections}", f"-d{duration}s", "--latency",
                "-s", self.wrk_script, f"http://127.0.0.1:{port}/predict"]
        with open(os.path.join(self.logs, "wrk.log"), "ab") as log:
            popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
            out = popen.stdout.read().decode()
            _, status, usage = os.wait4(popen.pid, 0)
            log.write(out.encode())
        if status != 0:
            raise SystemExit(f"wrk failed ({status}): {out}")
        report = json.loads(out.strip().splitlines()[-1])
        report["cpu_s"] = usage.ru_utime + usage.ru_stime
        return report

    def measure(self, label, port, proxy, upstreams, metrics_port=None):
        a = self.args
        if a.wrk_warmup:
            self.wrk(port, a.wrk_warmup)
        groups = {"proxy": tree(proxy), "upstreams": [p for u in upstreams for p in tree(u)]}
        ours = [p for pids in groups.values() for p in pids]
        before = {k: ticks_of(v) for k, v in groups.items()}
        busy_before = cpus_busy()
        metrics_before = comparisons(metrics_port) if metrics_port else {}
        r = self.wrk(port, a.wrk_duration)
        after = {k: ticks_of(v) for k, v in groups.items()}
        busy_after = cpus_busy()
        wall = r["duration_us"] / 1e6
        result = {"rps": r["requests"] / wall, "p50_ms": r["p50_us"] / 1e3, "p90_ms": r["p90_us"] / 1e3,
                  "p99_ms": r["p99_us"] / 1e3, "p999_ms": r["p999_us"] / 1e3, "errors": r["errors"],
                  "requests": r["requests"]}
        for k in groups:
            result[f"{k}_cpu_s"] = (after[k] - before[k]) / TICK
        result["wrk_cpu_s"] = r["cpu_s"]
        busy = sum(busy_after.values()) - sum(busy_before.values())
        # CPU time spent on the machine by anything but the processes under test and wrk.
        result["other_cpu_s"] = max(0.0, busy / TICK - sum(result[f"{k}_cpu_s"] for k in groups) - r["cpu_s"])
        result["wall_s"] = wall
        if metrics_port:
            m = comparisons(metrics_port)
            d = {k: m.get(k, 0) - metrics_before.get(k, 0) for k in m}
            judged = d.get("match", 0) + d.get("mismatch", 0)
            result["comparisons"] = d
            result["disagreement"] = d.get("mismatch", 0) / judged if judged else float("nan")
        us = lambda k: result[k] / r["requests"] * 1e6
        print(f"  {label}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms; "
              f"CPU µs/request: proxy {us('proxy_cpu_s'):.1f}, upstreams {us('upstreams_cpu_s'):.1f}, "
              f"wrk {us('wrk_cpu_s'):.1f}; other work {result['other_cpu_s']:.1f} CPU s"
              + (f"; disagreement {result['disagreement']:.4f} {result['comparisons']}" if metrics_port else ""),
              file=sys.stderr)
        if r["errors"]:
            print(f"  warning: {label}: {r['errors']} wrk errors", file=sys.stderr)
        return result

    def run_once(self, index):
        ports = {k: free_port() for k in ("stable", "shadow", "router", "metrics", "nginx")}
        self.wrk_script = os.path.join(self.out, "post.lua")
        with open(self.wrk_script, "w") as f:
            f.write(WRK_SCRIPT.format(body=BODY.decode()))
        stable = self.upstream("stable", ports["stable"], STABLE_ANSWER)
        shadow = self.upstream("shadow", ports["shadow"], "$answer")
        router = self.router(ports["router"], ports["metrics"], ports["stable"], ports["shadow"])
        nginx = self.nginx(ports["nginx"], ports["stable"], ports["shadow"])
        result = {}
        try:
            print(f"round {index}", file=sys.stderr)
            # Alternate which goes first, so a drift of the machine's load favours neither.
            order = [("router", router), ("nginx", nginx)]
            for key, proc in (order if index % 2 else order[::-1]):
                if key == "router":
                    result[key] = self.measure("modelship mirror", ports["router"], router, [stable, shadow],
                                               ports["metrics"])
                else:
                    result[key] = self.measure("nginx mirror", ports["nginx"], nginx, [stable, shadow])
        finally:
            for proc in (nginx, router, shadow, stable):
                proc.stop()
            self.procs.clear()
        return result


def wrk_summary(runs, args):
    def us(r, k):
        return r[k] / r["requests"] * 1e6

    lines = []
    add = lines.append
    add(f"wrk -t{args.wrk_threads} -c{args.wrk_connections} -d{args.wrk_duration}s --latency, POST, "
        f"{args.wrk_warmup}s warm-up not counted; nothing pinned; {os.cpu_count()} CPUs; median of {len(runs)} rounds")
    add("")
    add("| round | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | upstreams µs/req | wrk µs/req | other work CPU s | disagreement | copies dropped |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(runs, 1):
        for key, name in (("router", "modelship mirror"), ("nginx", "nginx mirror")):
            x = r[key]
            dis = f"{x['disagreement']:.3f}" if "disagreement" in x else ""
            dropped = ""
            if "comparisons" in x:
                dropped = f"{sum(x['comparisons'].get(k, 0) for k in ('body_too_large', 'in_flight_limit', 'shadow_unavailable')):.0f}"
            add(f"| {i} | {name} | {x['rps']:.0f} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} | {us(x, 'proxy_cpu_s'):.1f} | "
                f"{us(x, 'upstreams_cpu_s'):.1f} | {us(x, 'wrk_cpu_s'):.1f} | {x['other_cpu_s']:.1f} | {dis} | {dropped} |")
    for key, name in (("router", "modelship mirror"), ("nginx", "nginx mirror")):
        m = lambda f: median([r[key][f] for r in runs])
        mu = lambda f: median([us(r[key], f) for r in runs])
        dis = f"{median([r[key]['disagreement'] for r in runs]):.3f}" if key == "router" else ""
        add(f"| median | {name} | {m('rps'):.0f} | {m('p50_ms'):.3f} | {m('p99_ms'):.3f} | {mu('proxy_cpu_s'):.1f} | "
            f"{mu('upstreams_cpu_s'):.1f} | {mu('wrk_cpu_s'):.1f} | {m('other_cpu_s'):.1f} | {dis} | |")
    add("")
    ratios = [r["router"]["rps"] / r["nginx"]["rps"] for r in runs]
    p99s = [r["router"]["p99_ms"] / r["nginx"]["p99_ms"] for r in runs]
    tput = median(ratios)
    p99 = median(p99s)
    add("| ratio | per round | median | goal |")
    add("|---|---|---:|---|")
    add(f"| router req/s / nginx req/s | {', '.join(f'{x:.2f}' for x in ratios)} | {tput:.2f} | >= 2: {'met' if tput >= 2 else 'MISSED'} |")
    add(f"| router p99 / nginx p99 | {', '.join(f'{x:.2f}' for x in p99s)} | {p99:.2f} | <= 1: {'met' if p99 <= 1 else 'MISSED'} |")
    # What each request costs the processes under test together (proxy, upstreams, wrk): the
    # throughput ratio both would reach with the same CPU, whatever else ran meanwhile.
    def cost(x):
        return us(x, "proxy_cpu_s") + us(x, "upstreams_cpu_s") + us(x, "wrk_cpu_s")
    costs = [cost(r["nginx"]) / cost(r["router"]) for r in runs]
    add(f"| CPU per request, nginx side / router side | {', '.join(f'{x:.2f}' for x in costs)} | {median(costs):.2f} | |")
    return "\n".join(lines)


def wrk_main(args):
    args.all_cpus = f"0-{os.cpu_count() - 1}"
    bench = WrkBench(args)
    runs = []
    try:
        for i in range(1, args.runs + 1):
            runs.append(bench.run_once(i))
            with open(os.path.join(args.out, "wrk-runs.json"), "w") as f:
                json.dump(runs, f, indent=1)
    finally:
        for proc in bench.procs:
            proc.stop()
    print(wrk_summary(runs, args))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modelship", required=True)
    parser.add_argument("--model-server", required=True)
    parser.add_argument("--model", required=True, help="model JSON file")
    parser.add_argument("--loadgen", required=True, help="bench/loadgen's binary")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000, help="fixed request rate for latency, per second")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--arrivals", choices=["uniform", "poisson"], default="uniform",
                        help="how the fixed-rate load spaces its requests (poisson: exponential gaps)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of the same load before each measurement")
    parser.add_argument("--connections", type=int, default=64, help="closed-loop connections for the throughput measurement")
    parser.add_argument("--generator-cpus", default="0", help="taskset CPU list of the load generator")
    parser.add_argument("--proxy-cpus", default="1", help="taskset CPU list of the router and nginx")
    parser.add_argument("--upstream-cpus", default="0", help="taskset CPU list of the model servers")
    parser.add_argument("--proxy-threads", type=int, default=1, help="router worker threads = nginx worker processes")
    parser.add_argument("--upstream-threads", type=int, default=1, help="worker threads of each model server")
    parser.add_argument("--rt-priority", type=int, default=10 if os.geteuid() == 0 else 0,
                        help="SCHED_FIFO priority during the fixed-rate measurements (0: off; needs root)")
    parser.add_argument("--wrk", action="store_true",
                        help="measure with wrk against nginx upstreams, nothing pinned (see wrk_main); "
                             "--runs defaults to 3 then")
    parser.add_argument("--wrk-path", default=shutil.which("wrk") or "/usr/bin/wrk")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--wrk-duration", type=int, default=10, help="seconds per wrk measurement")
    parser.add_argument("--wrk-warmup", type=int, default=2, help="seconds of wrk before each measurement, not counted")
    parser.add_argument("--upstream-workers", default="1", help="worker processes of each nginx upstream (wrk mode)")
    parser.add_argument("--differ-percent", type=float, default=10,
                        help="share of requests the shadow upstream answers differently (wrk mode)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".out"))
    args = parser.parse_args()
    if args.wrk:
        if "--runs" not in sys.argv:
            args.runs = 3
        return wrk_main(args)

    bench = Bench(args)
    runs = []
    try:
        for i in range(1, args.runs + 1):
            runs.append(bench.run_once(i))
            with open(os.path.join(args.out, "runs.json"), "w") as f:
                json.dump(runs, f, indent=1)
    finally:
        for proc in bench.procs:
            proc.stop()
    print(f"loopback, rate {args.rate}/s ({args.arrivals} arrivals) for latency, {args.connections} closed-loop connections for throughput, "
          f"{args.duration}s per measurement after {args.warmup}s of warm-up; load generator on CPU {args.generator_cpus}, "
          f"proxy on CPU {args.proxy_cpus} "
          f"with {args.proxy_threads} thread(s)/worker(s), model servers on CPU {args.upstream_cpus}; "
          f"fixed-rate runs at SCHED_FIFO {args.rt_priority or 'off'}")
    print(summarize(runs))


if __name__ == "__main__":
    main()
