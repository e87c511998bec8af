#!/usr/bin/env python3
"""Helpers for bench/run.sh: the workloads and canned upstream answers, the nginx configs,
a readiness-timing launcher, a sequential client (for callgrind), reload timing, and the
report / --check against bench/baseline.json.

Standard library only. Every subcommand is driven by run.sh; `tool.py --help` lists them.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

COMPANY = 42
USER_ID = 1042
TEAM_ID = 7
MEMBERS_ADDED = [str(2001 + i) for i in range(10)]
SCIM_KEY = "scim-bench-key"          # what Okta sends the gateway
SERVICE_TOKEN = "svc-bench-token"    # the gateway's credential upstream (also sent in (a), (b))
API = f"/api/v1/companies/{COMPANY}"
TS = "2026-01-02T03:04:05Z"


def user(uid, email, status="active", first="Ada", last="Lovelace", external="00u1abcd"):
    return {
        "id": uid, "email": email, "first_name": first, "last_name": last,
        "display_name": f"{first} {last}", "title": "Engineer", "department": "R&D",
        "phone": "+1 555 0100", "role": "member", "status": status,
        "external_id": external, "manager_id": None, "created_at": TS, "updated_at": TS,
    }


ADA = user(USER_ID, "ada@example.com")
NEW_USER = user(1043, "grace@example.com", first="Grace", last="Hopper", external="00u2efgh")
PAGE_OF_100 = [
    user(5001 + i, f"user{5001 + i}@example.com", first=f"First{i}", last=f"Last{i}",
         external=f"00u{5001 + i}")
    for i in range(100)
]
TEAM = {"id": TEAM_ID, "name": "Security", "description": "Blue team", "member_count": 3,
        "created_at": TS, "updated_at": TS}
TEAM_MEMBERS = [{"user_id": 1042 + i, "email": f"m{i}@example.com"} for i in range(3)]


def compact(value):
    return json.dumps(value, separators=(",", ":"))


# Upstream answers: (location, method) -> (status, body). The upstream nginx serves exactly
# these and answers 404/405 to anything else, so a call the gateway makes that is not canned
# shows up as an error in the verification step, not as a silently wrong benchmark.
ANSWERS = {
    ("/api/v1/scim_keys/introspect", "POST"): (200, {
        "active": True, "company_id": COMPANY, "key_id": "k_bench",
        "purpose": "SCIM Provisioning"}),
    (f"{API}/users/{USER_ID}", "GET"): (200, {"data": ADA}),
    (f"{API}/users/{USER_ID}", "PATCH"): (200, {"data": ADA}),
    (f"{API}/users/{USER_ID}/deactivate", "POST"): (200, {"data": dict(ADA, status="deactivated")}),
    (f"{API}/users/{USER_ID}/reactivate", "POST"): (200, {"data": ADA}),
    (f"{API}/users", "POST"): (201, {"data": NEW_USER}),
    # GET /users?email=… (a filter pushed down) and GET /users?page=… (a plain list) share a
    # location; the config tells them apart by the email argument.
    (f"{API}/users", "GET+email"): (200, {
        "data": [ADA], "meta": {"page": 1, "per_page": 100, "total": 1}}),
    (f"{API}/users", "GET"): (200, {
        "data": PAGE_OF_100, "meta": {"page": 1, "per_page": 100, "total": 1000}}),
    (f"{API}/teams/{TEAM_ID}", "GET"): (200, {"data": TEAM}),
    (f"{API}/teams/{TEAM_ID}/members", "GET"): (200, {
        "data": TEAM_MEMBERS, "meta": {"page": 1, "per_page": 100, "total": 3}}),
    (f"{API}/teams/{TEAM_ID}/members", "POST"): (201, {
        "data": {"team_id": TEAM_ID, "user_id": int(MEMBERS_ADDED[0])}}),
}

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

# The Okta create body (as Okta's SCIM 2.0 integration sends it).
OKTA_CREATE = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "userName": "grace@example.com",
    "name": {"givenName": "Grace", "familyName": "Hopper"},
    "emails": [{"primary": True, "value": "grace@example.com", "type": "work"}],
    "displayName": "Grace Hopper", "locale": "en-US", "externalId": "00u2efgh",
    "groups": [], "password": "xK9#mQ2!vB", "active": True,
}
OKTA_DEACTIVATE = {"schemas": [PATCH_OP],
                   "Operations": [{"op": "replace", "value": {"active": False}}]}
OKTA_GROUP_ADD = {"schemas": [PATCH_OP], "Operations": [{
    "op": "add", "path": "members",
    "value": [{"value": v, "display": f"user{v}@example.com"} for v in MEMBERS_ADDED]}]}

FILTER = urllib.parse.quote('userName eq "ada@example.com"', safe="")

# Each workload: the SCIM request (c), the equivalent single upstream request used for (a)
# and (b), the SCIM status expected, and the upstream calls the gateway must make for one SCIM
# request (checked against the upstream's access log before anything is measured).
WORKLOADS = [
    {
        "name": "get_user", "title": "GET /Users/{id}", "repeats": 3,
        "scim": ("GET", f"/scim/v2/Users/{USER_ID}", None), "status": 200,
        "up": ("GET", f"{API}/users/{USER_ID}", None),
        "calls": [f"GET {API}/users/{USER_ID}"],
    },
    {
        "name": "filter", "title": 'GET /Users?filter=userName eq "…"', "repeats": 1,
        "scim": ("GET", f"/scim/v2/Users?filter={FILTER}&startIndex=1&count=100", None),
        "status": 200,
        "up": ("GET", f"{API}/users?email=ada%40example.com&page=1&per_page=100", None),
        "calls": [f"GET {API}/users?email=ada%40example.com&page=1&per_page=100"],
    },
    {
        "name": "list100", "title": "GET /Users?count=100 (100 users)", "repeats": 1,
        "scim": ("GET", "/scim/v2/Users?startIndex=1&count=100", None), "status": 200,
        "up": ("GET", f"{API}/users?page=1&per_page=100", None),
        "calls": [f"GET {API}/users?page=1&per_page=100"],
    },
    {
        "name": "create", "title": "POST /Users", "repeats": 1,
        "scim": ("POST", "/scim/v2/Users", OKTA_CREATE), "status": 201,
        "up": ("POST", f"{API}/users", {"user": {
            "email": "grace@example.com", "external_id": "00u2efgh", "first_name": "Grace",
            "last_name": "Hopper", "display_name": "Grace Hopper", "role": "member"}}),
        "calls": [f"POST {API}/users"],
    },
    {
        "name": "deactivate", "title": "PATCH /Users/{id} active=false (Okta)", "repeats": 1,
        "scim": ("PATCH", f"/scim/v2/Users/{USER_ID}", OKTA_DEACTIVATE), "status": 200,
        "up": ("POST", f"{API}/users/{USER_ID}/deactivate", None),
        "calls": [f"GET {API}/users/{USER_ID}", f"POST {API}/users/{USER_ID}/deactivate"],
    },
    {
        "name": "group_add10", "title": "PATCH /Groups/{id} add 10 members", "repeats": 1,
        "scim": ("PATCH", f"/scim/v2/Groups/{TEAM_ID}", OKTA_GROUP_ADD), "status": 204,
        "up": ("POST", f"{API}/teams/{TEAM_ID}/members", {"user_id": int(MEMBERS_ADDED[0])}),
        "calls": [f"GET {API}/teams/{TEAM_ID}"]
                 + [f"POST {API}/teams/{TEAM_ID}/members"] * len(MEMBERS_ADDED),
        # The yardstick here is upstream member calls per second.
        "member_calls": len(MEMBERS_ADDED),
    },
]
BY_NAME = {w["name"]: w for w in WORKLOADS}

# Issue 8's targets that can be measured inside the repository.
TARGETS = {
    "get_user_ratio": 0.70,       # scimgate / nginx hop, requests/s, median of 3
    "get_user_p99_extra_ms": 1.0,  # scimgate p99 - nginx hop p99
    "list100_ratio": 0.25,
    "group_member_calls_ratio": 0.50,  # scimgate member calls/s / nginx hop calls/s
    "peak_rss_mb": 40.0,
    "idle_rss_mb": 15.0,
    "ready_ms": 100.0,
    "reload_ms": 20.0,
    "instr_growth": 0.10,         # above bench/baseline.json
}


# ---------------------------------------------------------------------------------------
# files and configs

def cmd_canned(args):
    """Request bodies for every workload, and the list page served as a static file."""
    os.makedirs(os.path.join(args.dir, "bodies"), exist_ok=True)
    os.makedirs(os.path.join(args.dir, "www"), exist_ok=True)
    for w in WORKLOADS:
        for side in ("scim", "up"):
            body = w[side][2]
            if body is not None:
                with open(os.path.join(args.dir, "bodies", f"{w['name']}.{side}.json"), "w") as f:
                    f.write(compact(body))
    with open(os.path.join(args.dir, "www", "users_page.json"), "w") as f:
        f.write(compact(ANSWERS[(f"{API}/users", "GET")][1]))


def nginx_literal(value):
    text = compact(value)
    if any(c in text for c in "'\\$"):
        raise SystemExit(f"canned answer not representable as an nginx literal: {text[:60]}")
    return f"'{text}'"


def worker_user():
    """Run as root, nginx's workers would become `nobody`, who may not reach the results
    directory (under a home directory, say): they stay root instead. Otherwise they run as
    the invoking user, who owns it."""
    return "user root root;\n" if os.geteuid() == 0 else ""


def cmd_upstream_conf(args):
    """The canned Blacksmith upstream: `return` with literal bodies, one location per path."""
    d = args.dir
    by_path = {}
    for (path, method), answer in ANSWERS.items():
        by_path.setdefault(path, {})[method] = answer
    locations = []
    for path, methods in by_path.items():
        lines = [f"        location = {path} {{"]
        for method, (status, body) in methods.items():
            if method not in ("GET", "GET+email"):
                lines.append(f"            if ($request_method = {method}) "
                             f"{{ return {status} {nginx_literal(body)}; }}")
        if "GET" in methods:
            lines.append("            if ($request_method != GET) { return 405; }")
            if "GET+email" in methods:
                status, body = methods["GET+email"]
                lines.append(f"            if ($arg_email != \"\") "
                             f"{{ return {status} {nginx_literal(body)}; }}")
            status, body = methods["GET"]
            if path == f"{API}/users":
                # The 100-user page (~35 kB) as a static file, the way nginx usually serves.
                lines.append("            try_files /users_page.json =500;")
            else:
                lines.append(f"            return {status} {nginx_literal(body)};")
        else:
            lines.append("            return 405;")
        lines.append("        }")
        locations.append("\n".join(lines))
    access = (f"access_log {d}/upstream-access.log calls;" if args.log
              else "access_log off;")
    conf = f"""# generated by bench/tool.py: the canned Blacksmith upstream
{worker_user()}worker_processes {args.workers};
pid {d}/upstream-nginx.pid;
error_log {d}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/json;
    log_format calls '$request_method $request_uri $status';
    {access}
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {d}/nginx-tmp/upstream-body;
    proxy_temp_path {d}/nginx-tmp/upstream-proxy;
    fastcgi_temp_path {d}/nginx-tmp/upstream-fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/upstream-uwsgi;
    scgi_temp_path {d}/nginx-tmp/upstream-scgi;
    server {{
        listen 127.0.0.1:{args.port} backlog=4096;
        root {d}/www;
{chr(10).join(locations)}
        location / {{ return 404 '{{"error":{{"code":"not_found","message":"not canned"}}}}'; }}
    }}
}}
"""
    sys.stdout.write(conf)


def cmd_proxy_conf(args):
    d, n = args.dir, args.name
    sys.stdout.write(f"""# generated by bench/tool.py: a plain pass-through reverse proxy in front of the upstream
{worker_user()}worker_processes {args.workers};
pid {d}/{n}-nginx.pid;
error_log {d}/{n}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {d}/nginx-tmp/{n}-body;
    proxy_temp_path {d}/nginx-tmp/{n}-proxy;
    fastcgi_temp_path {d}/nginx-tmp/{n}-fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/{n}-uwsgi;
    scgi_temp_path {d}/nginx-tmp/{n}-scgi;
    upstream blacksmith {{
        server 127.0.0.1:{args.upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{args.port} backlog=4096;
        location / {{
            proxy_pass http://blacksmith;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")


def cmd_workloads(args):
    """One line per workload for the shell: name repeats scim_method scim_path status
    up_method up_path has_scim_body has_up_body."""
    for w in WORKLOADS:
        print(" ".join(str(x) for x in (
            w["name"], w["repeats"], w["scim"][0], w["scim"][1], w["status"],
            w["up"][0], w["up"][1], int(w["scim"][2] is not None), int(w["up"][2] is not None))))


def cmd_free_ports(args):
    socks, ports = [], []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


# ---------------------------------------------------------------------------------------
# processes

def http_get_status(host, port, path, timeout=0.5):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        return r.status, body
    finally:
        conn.close()


def cmd_launch(args):
    """Starts a command, polls http://127.0.0.1:PORT/healthz every 0.5 ms, prints the
    milliseconds from spawn to the first 200 (and leaves the process running; its pid goes to
    --pidfile so run.sh's trap can stop it)."""
    log = open(args.log, "ab")
    started = time.perf_counter()
    proc = subprocess.Popen(args.cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    with open(args.pidfile, "w") as f:
        f.write(str(proc.pid))
    deadline = started + args.timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the process exited with {proc.returncode} before it was ready (see {args.log})")
        try:
            status, _ = http_get_status("127.0.0.1", args.port, args.path, timeout=0.2)
            if status == 200:
                print(f"{(time.perf_counter() - started) * 1000:.1f}")
                return
        except OSError:
            pass
        time.sleep(0.0005)
    raise SystemExit(f"not ready after {args.timeout} s (see {args.log})")


def rss_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def cmd_reload_time(args):
    """SIGHUP forces a reload; the time until scimgate_mapping_reloads_total{result="success"}
    moves on the admin listener is the reload time (signal to swap visible)."""
    pattern = re.compile(rb'scimgate_mapping_reloads_total\{result="success"\} (\d+)')

    def reloads():
        status, body = http_get_status("127.0.0.1", args.admin_port, "/metrics", timeout=1)
        m = pattern.search(body)
        return int(m.group(1)) if m else 0

    times = []
    for _ in range(args.n):
        before = reloads()
        started = time.perf_counter()
        os.kill(args.pid, signal.SIGHUP)
        while reloads() == before:
            if time.perf_counter() - started > 5:
                raise SystemExit("no reload was counted within 5 s of SIGHUP")
            time.sleep(0.0002)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.2)
    print(json.dumps({"kind": "reload", "ms": times, "median_ms": statistics.median(times)}))


def cmd_seq(args):
    """Sends N requests one after another on one keep-alive connection; any status other than
    the expected one is an error."""
    body = None
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    headers = {"Accept": args.accept}
    if args.auth:
        headers["Authorization"] = args.auth
    if body is not None:
        headers["Content-Type"] = args.ctype
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.timeout)
    started = time.perf_counter()
    for i in range(args.n):
        conn.request(args.method, args.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != args.expect:
            raise SystemExit(f"request {i}: {args.method} {args.path} answered {r.status}: {data[:300]!r}")
    conn.close()
    print(f"{time.perf_counter() - started:.2f}")


def cmd_verify(args):
    """Checks the gateway and the upstream access log for one SCIM request per workload."""
    w = BY_NAME[args.workload]
    log_before = os.path.getsize(args.access_log)
    method, path, body = w["scim"]
    headers = {"Authorization": f"Bearer {SCIM_KEY}", "Accept": "application/scim+json"}
    data = None
    if body is not None:
        data = compact(body).encode()
        headers["Content-Type"] = "application/scim+json"
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    answer = r.read()
    conn.close()
    time.sleep(0.05)  # nginx writes its access log line after the answer is sent
    with open(args.access_log) as f:
        f.seek(log_before)
        lines = [l.strip() for l in f if l.strip()]
    calls = [" ".join(l.split()[:2]) for l in lines
             if "/scim_keys/introspect" not in l]
    statuses = [l.split()[2] for l in lines]
    problems = []
    if r.status != w["status"]:
        problems.append(f"scimgate answered {r.status}, expected {w['status']}: {answer[:400]!r}")
    if sorted(calls) != sorted(w["calls"]):
        problems.append("upstream calls differ:\n      made:     " + "\n                "
                        .join(calls) + "\n      expected: " + "\n                ".join(w["calls"]))
    bad = [s for s in statuses if not s.startswith("2")]
    if bad:
        problems.append(f"the upstream answered {', '.join(bad)} to some calls: {lines}")
    if w["name"] == "list100":
        try:
            doc = json.loads(answer)
            if len(doc.get("Resources", [])) != 100:
                problems.append(f"the list holds {len(doc.get('Resources', []))} users, not 100")
        except ValueError:
            problems.append("the list answer is not JSON")
    made = []  # consecutive identical calls shown once with a count
    for line in lines:
        if made and made[-1][0] == line:
            made[-1][1] += 1
        else:
            made.append([line, 1])
    print(f"  {w['title']:<40} scimgate {r.status}; upstream: "
          + ", ".join(f"{l}" + (f" ×{k}" if k > 1 else "") for l, k in made))
    if problems:
        for p in problems:
            print(f"    PROBLEM: {p}")
        raise SystemExit(1)


# ---------------------------------------------------------------------------------------
# callgrind

def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"{path}: no totals line")


def cmd_record(args):
    """Prints key=value pairs as one JSON object (whole numbers become numbers)."""
    out = {}
    for pair in args.pairs:
        key, _, value = pair.partition("=")
        out[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
    print(json.dumps(out))


ERROR_KEYS = ("err_status", "err_connect", "err_read", "err_write", "err_timeout")


def mixture_quantile(slices, p):
    """The `p`th percentile (µs) of all the slices' requests together: each slice's latency
    distribution is known at a grid of quantiles (wrk.lua) and taken as linear between them;
    the slices are mixed in proportion to their requests. Beyond a slice's grid its
    distribution is taken as flat, which matters only when slices differ wildly."""
    total = sum(sl["requests"] for sl in slices) or 1

    def cdf(grid, x):
        if x < grid[0][1]:
            return grid[0][0]
        for (q0, x0), (q1, x1) in zip(grid, grid[1:]):
            if x0 <= x < x1:
                return q0 + (q1 - q0) * (x - x0) / (x1 - x0)
        return grid[-1][0]

    def mixed(x):
        return sum(sl["requests"] * cdf(sl["quantiles"], x) for sl in slices) / total

    xs = sorted({x for sl in slices for _, x in sl["quantiles"]})
    below = xs[0]
    for x in xs:
        at = mixed(x)
        if at >= p:
            before = mixed(below)
            if x == below or at == before:
                return x
            return round(below + (x - below) * (p - before) / (at - before))
        below = x
    return xs[-1]


def merge_slices(slices):
    """A run measured in slices (each its own wrk process, interleaved with the other
    targets' slices: bench/run.sh) as one result: requests, seconds and errors added, the
    mean weighted by requests, the percentiles those of all its requests."""
    if len(slices) == 1:
        return slices[0]
    requests = sum(sl["requests"] for sl in slices)
    seconds = sum(sl["seconds"] for sl in slices)
    merged = dict(slices[0])
    merged.update(
        requests=requests, seconds=round(seconds, 3), rps=requests / (seconds or 1),
        mean_us=sum(sl["mean_us"] * sl["requests"] for sl in slices) / (requests or 1),
        max_us=max(sl["max_us"] for sl in slices), slices=len(slices),
        **{k: sum(sl[k] for sl in slices) for k in ERROR_KEYS},
        **{f"p{p}_us": mixture_quantile(slices, p) for p in (50, 75, 90, 99)})
    del merged["quantiles"]
    return merged


def load_runs(rows):
    """The load runs, `(workload, target) -> [run, ...]` in the order measured, each run
    merged from its slices."""
    by_label = {}
    for r in rows:
        if "label" in r and r["label"].startswith("load:"):
            by_label.setdefault(r["label"], []).append(r)
    runs = {}
    for label, slices in by_label.items():
        _, name, mode, _rep = label.split(":")
        runs.setdefault((name, mode), []).append(merge_slices(slices))
    return runs


def cmd_last(args):
    """Prints the last result line of the results file for the console, or with `--label`
    that run merged from its slices so far."""
    with open(args.results) as f:
        lines = [l for l in f if l.strip()]
    if args.label:
        slices = [r for r in map(json.loads, lines) if r.get("label") == args.label]
        if not slices:
            return
        r = merge_slices(slices)
    else:
        r = json.loads(lines[-1])
    if r.get("kind") in ("instr", "instr_nginx"):
        print(f"   {r['workload']:<12} {r['per_request']:>12,.0f} instructions/request "
              f"(raw {r['raw_per_request']:,.0f}; {r['window_s']} s window)")
    else:
        errors = sum(r[k] for k in ERROR_KEYS)
        print(f"   {r['label']:<24} {r['rps']:>10,.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
              f"p99 {r['p99_us'] / 1000:6.2f} ms" + (f"  ERRORS {errors}" if errors else ""))


def cmd_callgrind_total(args):
    print(callgrind_total(args.file))


def cmd_idle_rate(args):
    print(round(callgrind_total(args.file) / (args.t1 - args.t0)))


def cmd_instr_record(args):
    """One workload's count: the dump's total less the idle cost of the window, per request."""
    total = callgrind_total(args.file)
    idle = args.idle_rate * (args.t1 - args.t0)
    n = args.requests
    print(json.dumps({
        "kind": args.kind, "workload": args.workload, "requests": n, "total": total,
        "window_s": round(args.t1 - args.t0, 2), "idle_subtracted": round(idle),
        "raw_per_request": total / n, "per_request": (total - idle) / n}))


ANNOTATE_LINE = re.compile(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$")


def annotate_entries(path):
    """(instructions, percent, function) from `callgrind_annotate` output."""
    entries = []
    with open(path) as f:
        for line in f:
            m = ANNOTATE_LINE.match(line)
            if m and "PROGRAM TOTALS" not in m.group(3):
                entries.append((int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)))
    return entries


def short_name(text, width=110):
    m = re.match(r"^(.*?):(.*?)(?: \[(.*)\])?$", text)
    if not m:
        return text[:width]
    _, fn, obj = m.groups()
    if obj and not obj.endswith("/scimgate"):
        fn = f"{fn} ({os.path.basename(obj).split('.so')[0]})"
    fn = fn.replace("|", "\\|")
    return fn if len(fn) <= width else fn[:width - 1] + "…"


def cmd_profile(args):
    """Markdown: the top functions by own instructions and the costliest scimgate functions
    including what they call, per request."""
    n = args.requests
    own = annotate_entries(args.self_file)
    total = None
    with open(args.self_file) as f:
        for line in f:
            m = ANNOTATE_LINE.match(line)
            if m and "PROGRAM TOTALS" in m.group(3):
                total = int(m.group(1).replace(",", ""))
    # A dump taken while the server runs charges the frames still on the stack (thread start,
    # the runtime's loop) with everything under them even in the self view: drop them.
    frames = [e for e in own if e[1] >= 50.0]
    own = [e for e in own if e[1] < 50.0]
    print(f"\n#### {args.title}: top {args.top} functions by own instructions "
          f"({(total or 0) / n:,.0f} instructions per request in all, {n:,} requests)\n")
    print("| # | instructions per request | share | function |")
    print("|---:|---:|---:|---|")
    for i, (ir, pct, fn) in enumerate(own[:args.top], 1):
        print(f"| {i} | {ir / n:,.0f} | {pct:.1f}% | `{short_name(fn)}` |")
    if frames:
        print(f"\n(Left out: {len(frames)} stack frames that a mid-run dump charges with everything under them.)")
    if args.inclusive:
        entries = [e for e in annotate_entries(args.inclusive) if e[1] < 100.0]

        def name_of(entry):
            return entry[2].split(" [")[0]

        # Recursive instances (`'2`) would count their callees twice.
        ours = [e for e in entries if "scimgate::" in name_of(e) and "'" not in name_of(e)]
        print(f"\n{args.title}: scimgate's own functions including what they call (top {args.top}):\n")
        print("| instructions per request | share | function |")
        print("|---:|---:|---|")
        for ir, pct, fn in ours[:args.top]:
            print(f"| {ir / n:,.0f} | {pct:.1f}% | `{short_name(fn)}` |")
        print(f"\n{args.title}: library work including what it calls (the first match of each):\n")
        print("| instructions per request | share | what | function |")
        print("|---:|---:|---|---|")
        for what, pattern in LIBRARY_COSTS:
            for entry in entries:
                name = name_of(entry)
                if "'" not in name and re.search(pattern, name):
                    ir, pct, fn = entry
                    print(f"| {ir / n:,.0f} | {pct:.1f}% | {what} | `{short_name(fn, 80)}` |")
                    break


# Library functions worth seeing inclusive of their callees, with what they stand for here.
LIBRARY_COSTS = [
    ("malloc, all callers", r"^\./malloc/\./malloc/malloc\.c:malloc$"),
    ("free, all callers", r"^\./malloc/\./malloc/malloc\.c:free$"),
    ("JSON text → serde_json::Value (upstream answers, request bodies)",
     r"serde_json::de::from_trait$"),
    ("Value → JSON bytes (the SCIM answer)", r"^\?\?\?:serde_json::ser::to_vec$"),
    ("serializing a sequence (`collect_seq`: into bytes, or into a new Value by `json!`/`to_value`)",
     r"^\?\?\?:serde_core::ser::Serializer::collect_seq$"),
    ("dropping Values", r"drop_in_place<serde_json::value::Value>$"),
    ("JSONPath queries", r"serde_json_path_core::spec::query::Query as .*Queryable>::query$"),
    ("the upstream request until its answer's headers are in (reqwest/hyper)",
     r"reqwest::async_impl::client::PendingRequest as core::future::future::Future>::poll$"),
    ("SHA-256 (the bearer token's hash; the mapping poll's content hash)", r"sha2::sha256::soft::compress$"),
    ("tracing dispatch", r"tracing_core::dispatcher::get_default$"),
]


# ---------------------------------------------------------------------------------------
# report and check

def load_results(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def fmt_ms(us):
    return f"{us / 1000:.2f} ms"


def fmt_rps(x):
    return f"{x:,.0f}"


def cmd_report(args):
    rows = load_results(args.results)
    runs = load_runs(rows)
    misc = {r["kind"]: r for r in rows if r.get("kind") in ("ready", "reload", "idle_rss", "idle_rss_after", "meta", "load_after")}
    peak = {r["workload"]: r["kb"] for r in rows if r.get("kind") == "peak_rss"}
    instr = {r["workload"]: r for r in rows if r.get("kind") == "instr"}
    instr_nginx = {r["workload"]: r for r in rows if r.get("kind") == "instr_nginx"}
    baseline = {}
    if args.baseline and os.path.exists(args.baseline):
        with open(args.baseline) as f:
            baseline = json.load(f).get("instructions_per_request", {})
    recorded_before = dict(baseline)
    if args.record:
        # This run's figures become the baseline it is checked against.
        baseline.update({n: round(i["per_request"]) for n, i in instr.items()})

    def median_run(name, mode):
        """The runs of one workload and target summed up: requests/s, p50 and p99 each the
        median of the runs' (not the percentiles of whichever run had the median rate)."""
        rs = runs.get((name, mode))
        if not rs:
            return None
        return {key: statistics.median(r[key] for r in rs) for key in ("rps", "p50_us", "p99_us")}

    failures = []
    errors = [r for rs in runs.values() for r in rs
              if any(r[k] for k in ERROR_KEYS)]
    for r in errors:
        failures.append(f"{r['label']}: errors during the run (status {r['err_status']}, connect "
                        f"{r['err_connect']}, read {r['err_read']}, write {r['err_write']}, timeout {r['err_timeout']})")

    out = []
    w = out.append
    meta = misc.get("meta", {})
    if meta:
        w(f"scimgate {meta.get('commit', '?')}, {meta.get('date', '?')}; {meta.get('nproc', '?')} cores "
          f"({meta.get('cpu', '?')}), kernel {meta.get('kernel', '?')}; nginx {meta.get('nginx', '?')}, "
          f"wrk {meta.get('wrk', '?')}; load average {meta.get('load_before', '?')} before, "
          f"{misc.get('load_after', {}).get('load', '?')} after.\n")
    if runs:
        w(f"wrk {meta.get('threads', '?')} threads, {meta.get('connections', '?')} connections, "
          f"{meta.get('duration', '?')} s per run, measured in {meta.get('slices', 1)} slices "
          f"interleaved with the other targets'; `GET /Users/{{id}}`: median of "
          f"{BY_NAME['get_user']['repeats']} runs per column.\n")
        w("| workload | (a) upstream req/s | p50 | p99 | (b) nginx hop req/s | p50 | p99 | (c) scimgate req/s | p50 | p99 | scimgate / nginx hop |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios = {}
    for wl in WORKLOADS:
        name = wl["name"]
        a, b, c = (median_run(name, m) for m in "abc")
        if not (a or b or c):
            continue
        cells = []
        for r in (a, b, c):
            cells += [fmt_rps(r["rps"]), fmt_ms(r["p50_us"]), fmt_ms(r["p99_us"])] if r else ["–"] * 3
        ratio_text = "–"
        if b and c:
            if wl.get("member_calls"):
                ratio = c["rps"] * wl["member_calls"] / b["rps"]
                ratio_text = (f"**{ratio:.2f}×** in upstream member calls/s "
                              f"({fmt_rps(c['rps'] * wl['member_calls'])} vs {fmt_rps(b['rps'])}); "
                              f"{c['rps'] / b['rps']:.2f}× in requests/s")
            else:
                ratio = c["rps"] / b["rps"]
                ratio_text = f"**{ratio:.2f}×**" if ratio >= 0.1 else f"**{ratio:.3f}×**"
            ratios[name] = ratio
        w(f"| {wl['title']} | " + " | ".join(cells) + f" | {ratio_text} |")
    b, c, d = (median_run("get_user", m) for m in "bcd")
    if d:
        # Not a target: what the gateway's stack costs before any SCIM work.
        w("")
        w(f"(d) the floor, `examples/passthrough.rs` (the gateway's serving threads, hyper's HTTP/1 "
          f"server and a keep-alive pool per thread forwarding the upstream call, no SCIM work), `GET /Users/{{id}}`'s "
          f"upstream call, median of {len(runs[('get_user', 'd')])}: {fmt_rps(d['rps'])} req/s, "
          f"p50 {fmt_ms(d['p50_us'])}, p99 {fmt_ms(d['p99_us'])}"
          + (f"; **{d['rps'] / b['rps']:.2f}×** the nginx hop" if b else "")
          + (f"; scimgate is **{c['rps'] / d['rps']:.2f}×** the floor" if c else "") + ".")

    if peak or instr:
        w("")
        w("| workload | upstream calls per SCIM request | scimgate peak RSS during the runs | scimgate instructions per request (callgrind) | recorded in baseline.json | change | nginx hop instructions per request, same upstream call (reference) | scimgate ÷ nginx hop |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for wl in WORKLOADS:
            name = wl["name"]
            p = peak.get(name)
            i = instr.get(name)
            if not (p or i):
                continue
            base = baseline.get(name)
            change = "–"
            if i and base:
                delta = i["per_request"] / base - 1
                change = f"{delta * 100:+.1f}%"
            w(f"| {wl['title']} | {len(wl['calls'])} | {p / 1024:.1f} MB |" if p else f"| {wl['title']} | {len(wl['calls'])} | – |")
            out[-1] += (f" {i['per_request']:,.0f} | " if i else " – | ") + (f"{base:,.0f} | " if base else "– | ") + change + " |"
            ng = instr_nginx.get(name)
            out[-1] += (f" {ng['per_request']:,.0f} |" if ng else " – |")
            out[-1] += (f" {i['per_request'] / ng['per_request']:.1f}× |" if ng and i else " – |")

    # Targets.
    w("")
    w("| issue 8 target | measured | verdict |")
    w("|---|---|---|")
    skipped = set(args.skipped.split(",")) if args.skipped else set()

    def target(text, value, ok, phase):
        if value is None:
            quiet = phase in skipped or args.partial
            verdict = "skipped" if quiet else "**not measured**"
            if not quiet:
                failures.append(f"{text}: not measured")
        else:
            verdict = "met" if ok else "**MISSED**"
            if not ok:
                failures.append(f"{text}: {value}")
        w(f"| {text} | {value if value is not None else '–'} | {verdict} |")

    t = TARGETS
    r = ratios.get("get_user")
    target(f"GET /Users/{{id}}: ≥ {t['get_user_ratio']}× nginx hop req/s (median of 3)",
           f"{r:.2f}×" if r is not None else None, r is not None and r >= t["get_user_ratio"], "load")
    b, c = median_run("get_user", "b"), median_run("get_user", "c")
    extra = (c["p99_us"] - b["p99_us"]) / 1000 if b and c else None
    target(f"GET /Users/{{id}}: p99 ≤ nginx hop p99 + {t['get_user_p99_extra_ms']:.0f} ms",
           f"{fmt_ms(c['p99_us'])} vs {fmt_ms(b['p99_us'])} ({extra:+.2f} ms)" if extra is not None else None,
           extra is not None and extra <= t["get_user_p99_extra_ms"], "load")
    r = ratios.get("list100")
    target(f"GET /Users of 100: ≥ {t['list100_ratio']}× nginx hop req/s",
           f"{r:.3f}×" if r is not None else None, r is not None and r >= t["list100_ratio"], "load")
    r = ratios.get("group_add10")
    target(f"group PATCH: ≥ {t['group_member_calls_ratio']}× nginx hop upstream calls/s",
           f"{r:.2f}×" if r is not None else None, r is not None and r >= t["group_member_calls_ratio"], "load")
    peak_mb = max(peak.values()) / 1024 if peak else None
    target(f"peak RSS under load ≤ {t['peak_rss_mb']:.0f} MB",
           f"{peak_mb:.1f} MB" if peak_mb is not None else None,
           peak_mb is not None and peak_mb <= t["peak_rss_mb"], "load")
    idle = misc.get("idle_rss")
    idle_mb = idle["kb"] / 1024 if idle else None
    after = misc.get("idle_rss_after")
    idle_text = None
    if idle_mb is not None:
        idle_text = f"{idle_mb:.1f} MB after start"
        if after:
            idle_text += f" ({after['kb'] / 1024:.1f} MB idle after the load)"
    target(f"idle RSS ≤ {t['idle_rss_mb']:.0f} MB", idle_text,
           idle_mb is not None and idle_mb <= t["idle_rss_mb"], "load")
    ready = misc.get("ready")
    target(f"process start to ready ≤ {t['ready_ms']:.0f} ms",
           (f"{ready['median_ms']:.1f} ms median of {len(ready['ms'])} (max {max(ready['ms']):.1f})"
            if ready else None), ready is not None and ready["median_ms"] <= t["ready_ms"], "load")
    reload = misc.get("reload")
    target(f"mapping reload (Blacksmith set) ≤ {t['reload_ms']:.0f} ms",
           (f"{reload['median_ms']:.1f} ms median of {len(reload['ms'])} (SIGHUP to swap counted)"
            if reload else None), reload is not None and reload["median_ms"] <= t["reload_ms"], "load")
    if instr:
        grown = []
        for name, i in instr.items():
            base = baseline.get(name)
            if base is None:
                grown.append(f"{name}: no baseline")
            elif i["per_request"] > base * (1 + t["instr_growth"]):
                grown.append(f"{name}: {i['per_request']:,.0f} vs {base:,.0f} "
                             f"({(i['per_request'] / base - 1) * 100:+.1f}%)")
        target(f"instructions per request ≤ baseline + {t['instr_growth'] * 100:.0f}%, every workload",
               "; ".join(grown) if grown else "all within", not grown, "callgrind")
    else:
        target(f"instructions per request ≤ baseline + {t['instr_growth'] * 100:.0f}%, every workload",
               None, False, "callgrind")
    w("| every workload but the group PATCH: ≥ 4× scimgateway's req/s | run outside the repo | not checked here |")
    w("| a mapping with 10× the attributes costs at most proportionally more | not measured by this script | not checked here |")

    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.record and instr:
        record = {
            "note": "instructions per request (callgrind) per workload, recorded by bench/run.sh --record-baseline; "
                    "--check fails when a workload costs more than 10% above its figure",
            "recorded": time.strftime("%Y-%m-%d"),
            "commit": misc.get("meta", {}).get("commit", ""),
            "requests_per_workload": misc.get("meta", {}).get("callgrind_requests"),
            "instructions_per_request": dict(
                recorded_before, **{n: round(i["per_request"]) for n, i in instr.items()}),
        }
        with open(args.baseline, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        print(f"\nrecorded {args.baseline}")
    if failures:
        print("\nMissed or failed:" if args.check else "\nMissed (run with --check to fail on these):")
        for f_ in failures:
            print(f"  - {f_}")
    if args.check and failures:
        sys.exit(1)
    if errors:
        sys.exit(2)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("canned"); s.add_argument("--dir", required=True); s.set_defaults(fn=cmd_canned)
    s = sub.add_parser("upstream-conf"); s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True); s.add_argument("--workers", type=int, default=2)
    s.add_argument("--log", action="store_true"); s.set_defaults(fn=cmd_upstream_conf)
    s = sub.add_parser("proxy-conf"); s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True); s.add_argument("--upstream-port", type=int, required=True)
    s.add_argument("--workers", type=int, default=2); s.add_argument("--name", default="proxy")
    s.set_defaults(fn=cmd_proxy_conf)
    s = sub.add_parser("workloads"); s.set_defaults(fn=cmd_workloads)
    s = sub.add_parser("free-ports"); s.add_argument("n", type=int); s.set_defaults(fn=cmd_free_ports)
    s = sub.add_parser("launch"); s.add_argument("--log", required=True); s.add_argument("--pidfile", required=True)
    s.add_argument("--port", type=int, required=True); s.add_argument("--path", default="/healthz")
    s.add_argument("--timeout", type=float, default=30); s.add_argument("cmd", nargs="+"); s.set_defaults(fn=cmd_launch)
    s = sub.add_parser("reload-time"); s.add_argument("--pid", type=int, required=True)
    s.add_argument("--admin-port", type=int, required=True); s.add_argument("--n", type=int, default=5)
    s.set_defaults(fn=cmd_reload_time)
    s = sub.add_parser("seq"); s.add_argument("--port", type=int, required=True)
    s.add_argument("--method", default="GET"); s.add_argument("--path", required=True)
    s.add_argument("--body-file"); s.add_argument("--auth"); s.add_argument("--ctype", default="application/json")
    s.add_argument("--accept", default="application/json"); s.add_argument("--n", type=int, required=True)
    s.add_argument("--expect", type=int, default=200); s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_seq)
    s = sub.add_parser("verify"); s.add_argument("--port", type=int, required=True)
    s.add_argument("--access-log", required=True); s.add_argument("workload"); s.set_defaults(fn=cmd_verify)
    s = sub.add_parser("record"); s.add_argument("pairs", nargs="*"); s.set_defaults(fn=cmd_record)
    s = sub.add_parser("last"); s.add_argument("results"); s.add_argument("--label")
    s.set_defaults(fn=cmd_last)
    s = sub.add_parser("idle-rate"); s.add_argument("--file", required=True)
    s.add_argument("--t0", type=float, required=True); s.add_argument("--t1", type=float, required=True)
    s.set_defaults(fn=cmd_idle_rate)
    s = sub.add_parser("instr-record"); s.add_argument("--kind", required=True)
    s.add_argument("--workload", required=True); s.add_argument("--file", required=True)
    s.add_argument("--t0", type=float, required=True); s.add_argument("--t1", type=float, required=True)
    s.add_argument("--idle-rate", type=float, required=True); s.add_argument("--requests", type=int, required=True)
    s.set_defaults(fn=cmd_instr_record)
    s = sub.add_parser("callgrind-total"); s.add_argument("file"); s.set_defaults(fn=cmd_callgrind_total)
    s = sub.add_parser("profile"); s.add_argument("--self", dest="self_file", required=True)
    s.add_argument("--inclusive"); s.add_argument("--requests", type=int, required=True)
    s.add_argument("--title", required=True); s.add_argument("--top", type=int, default=10)
    s.set_defaults(fn=cmd_profile)
    s = sub.add_parser("report"); s.add_argument("--results", required=True)
    s.add_argument("--partial", action="store_true")
    s.add_argument("--baseline"); s.add_argument("--check", action="store_true")
    s.add_argument("--record", action="store_true"); s.add_argument("--skipped", default="")
    s.add_argument("--markdown"); s.set_defaults(fn=cmd_report)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
