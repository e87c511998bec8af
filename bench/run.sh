#!/usr/bin/env bash
# End-to-end benchmark of scimgate (issue 8), in one run, on loopback:
#
#   one canned upstream: nginx answering exactly the Blacksmith calls the gateway makes
#   (a) straight to the upstream      — the equivalent upstream call for each workload
#   (b) through an nginx proxy_pass   — keep-alive to the upstream: the "nginx hop" yardstick
#   (c) through scimgate              — `scimgate serve`, introspection auth, RUST_LOG=warn
#   (d) for GET /Users/{id} only: the floor — examples/passthrough.rs, the gateway's stack
#       (its serving threads, hyper's HTTP/1 server, a keep-alive pool per thread) forwarding
#       the upstream call with no SCIM work; not a target, it shows how much of (b)/(c) the
#       stack itself accounts for
#
# Workloads: GET /Users/{id} (median of 3 runs), GET /Users?filter=userName eq "…",
# GET /Users?count=100, POST /Users, Okta's PATCH deactivate, a group PATCH adding 10 members.
# Load: wrk, 32 connections, 2 threads. Also: scimgate's peak and idle RSS, start-to-ready
# time, mapping reload time, and CPU instructions per request under callgrind (compared with
# bench/baseline.json by --check). Results and logs go to bench/out/<timestamp>/.
#
# Usage: bench/run.sh [options]          (see --help; BENCHMARKS.md has the recorded results)
set -euo pipefail

usage() {
  cat <<'EOF'
bench/run.sh [options]
  --duration S        seconds per measured wrk run (default 10)
  --slices N          measure each run in N slices of duration/N seconds, the targets'
                      slices interleaved (default 5; 1 runs the targets one after another)
  --warmup S          seconds of wrk before each workload's first run, per target (default 2)
  --connections N     wrk connections (default 32)
  --threads N         wrk threads (default 2)
  --requests N        requests per workload under callgrind (default 2000)
  --only W[,W...]     run only these workloads (get_user filter list100 create deactivate group_add10)
  --skip-load         skip the wrk, RSS, start and reload measurements
  --skip-callgrind    skip the instruction counts and profiles
  --check             exit non-zero when a workload costs >10% more instructions than
                      bench/baseline.json records, or an issue-8 target is missed
  --record-baseline   write this run's instructions per request to bench/baseline.json
  --binary PATH       benchmark this scimgate binary instead of building one (the floor,
                      (d), is then examples/passthrough beside it when it is there)
  --no-floor          do not measure (d), the pass-through floor
  --out DIR           results directory (default bench/out/<timestamp>)
  --no-install        do not apt-get missing tools; fail instead
Environment: CARGO_TARGET_DIR is honoured for the release build.
EOF
}

DURATION=10
SLICES=5
WARMUP=2
CONNECTIONS=32
THREADS=2
CG_REQUESTS=2000
ONLY=""
SKIP_LOAD=0
SKIP_CG=0
CHECK=0
RECORD=0
BINARY=""
OUT=""
INSTALL=1
FLOOR=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --slices) SLICES="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --requests) CG_REQUESTS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --skip-load) SKIP_LOAD=1; shift ;;
    --skip-callgrind) SKIP_CG=1; shift ;;
    --check) CHECK=1; shift ;;
    --record-baseline) RECORD=1; shift ;;
    --binary) BINARY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-floor) FLOOR=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 64 ;;
  esac
done
for n in "$DURATION" "$SLICES" "$WARMUP" "$CONNECTIONS" "$THREADS" "$CG_REQUESTS"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "not a whole number: $n" >&2; exit 64; }
done
if [ "$SLICES" -lt 1 ] || [ $((DURATION % SLICES)) != 0 ]; then
  echo "--slices must divide --duration into whole seconds" >&2; exit 64
fi
SLICE_S=$((DURATION / SLICES))

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="$ROOT/bench"
TOOL=(python3 "$BENCH/tool.py")
log() { printf '\n==> %s\n' "$*"; }

# --- tools ---------------------------------------------------------------------------------
need=()
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
if [ "$SKIP_LOAD" = 0 ]; then
  command -v wrk >/dev/null || need+=(wrk)
fi
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
if [ "$SKIP_CG" = 0 ]; then
  { command -v valgrind && command -v callgrind_control && command -v callgrind_annotate; } >/dev/null || need+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || { echo "missing: ${need[*]} (and --no-install)" >&2; exit 69; }
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # Installing nginx must not start the distribution's own server on port 80: services stay
  # stopped for the duration of the install (policy-rc.d 101), unless a policy is already set.
  POLICY_SET=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    POLICY_SET=1
  fi
  install_rc=0
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } || install_rc=$?
  [ "$POLICY_SET" = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
  [ "$install_rc" = 0 ] || { echo "apt-get failed ($install_rc)" >&2; exit 69; }
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# --- the gateway binary ----------------------------------------------------------------------
if [ -z "$BINARY" ]; then
  command -v cargo >/dev/null || { echo "cargo is required to build scimgate (or pass --binary)" >&2; exit 69; }
  log "building scimgate (release${CARGO_TARGET_DIR:+, CARGO_TARGET_DIR=$CARGO_TARGET_DIR})"
  (cd "$ROOT" && cargo build --release --locked --bin scimgate)
  [ "$FLOOR" = 0 ] || (cd "$ROOT" && cargo build --release --locked --example passthrough)
  target_dir="${CARGO_TARGET_DIR:-target}"
  [[ "$target_dir" = /* ]] || target_dir="$ROOT/$target_dir"  # cargo ran in $ROOT
  BINARY="$target_dir/release/scimgate"
fi
[ -x "$BINARY" ] || { echo "no binary at $BINARY" >&2; exit 66; }
BINARY="$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")"
FLOOR_BINARY="$(dirname "$BINARY")/examples/passthrough"
if [ "$FLOOR" = 1 ] && [ ! -x "$FLOOR_BINARY" ]; then
  echo "no pass-through floor at $FLOOR_BINARY (cargo build --release --example passthrough); (d) skipped" >&2
  FLOOR=0
fi

# --- scratch space, results, cleanup -------------------------------------------------------
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$BENCH/out/$STAMP}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# Scratch space inside the results directory (removed at the end; logs are kept).
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK"
mkdir -p "$WORK/nginx-tmp"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# Whether pid $1 runs (a zombie left to an init that does not reap counts as gone).
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
# Stops the process whose pid is in file $1 (TERM, then KILL after 5 s); only our own pids.
stop_pidfile() {
  local f="$1" pid i
  [ -s "$f" ] || return 0
  pid="$(cat "$f")"
  rm -f "$f"
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do
    alive "$pid" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for f in "$WORK"/gateway.pid "$WORK"/floor.pid "$WORK"/callgrind.pid "$WORK"/cgproxy.pid "$WORK"/proxy.pid "$WORK"/upstream.pid; do
    stop_pidfile "$f"
  done
  # Keep the logs with the results, then drop the scratch space.
  for f in "$WORK"/*.log "$WORK"/*.conf "$WORK"/gateway.toml; do
    [ -e "$f" ] && cp "$f" "$OUT/" 2>/dev/null
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r PORT_UP PORT_PROXY PORT_GW PORT_ADMIN PORT_CGPROXY PORT_FLOOR < <("${TOOL[@]}" free-ports 6)

"${TOOL[@]}" canned --dir "$WORK"
BODIES="$WORK/bodies"

start_upstream() {  # $1: "--log" for the verification pass, "" for measuring
  "${TOOL[@]}" upstream-conf --dir "$WORK" --port "$PORT_UP" ${1:-} >"$WORK/upstream.conf"
  # In the foreground of a background job: a child of this script, reaped by it.
  "$NGINX" -p "$WORK" -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log" -g "daemon off;" &
  echo $! >"$WORK/upstream.pid"
  wait_port "$PORT_UP"
}
start_proxy() {
  "${TOOL[@]}" proxy-conf --dir "$WORK" --port "$PORT_PROXY" --upstream-port "$PORT_UP" >"$WORK/proxy.conf"
  "$NGINX" -p "$WORK" -c "$WORK/proxy.conf" -e "$WORK/proxy-error.log" -g "daemon off;" &
  echo $! >"$WORK/proxy.pid"
  wait_port "$PORT_PROXY"
}
start_floor() {
  "$FLOOR_BINARY" "127.0.0.1:$PORT_FLOOR" "127.0.0.1:$PORT_UP" >"$WORK/floor.log" 2>&1 &
  echo $! >"$WORK/floor.pid"
  wait_port "$PORT_FLOOR"
}
wait_port() {
  local i
  for i in $(seq 100); do
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$1/" && return 0
    sleep 0.05
  done
  echo "nothing answers on 127.0.0.1:$1" >&2
  exit 1
}

cat >"$WORK/gateway.toml" <<EOF
# generated by bench/run.sh
listen = "127.0.0.1:$PORT_GW"
admin_listen = "127.0.0.1:$PORT_ADMIN"
mappings = "$ROOT/mappings/blacksmith"
log_format = "text"

[upstream]
url = "http://127.0.0.1:$PORT_UP"
token = "svc-bench-token"

[auth]
mode = "introspect"

# One tenant sends all the load: the per-tenant rate limit (100/s by default) would turn
# nearly every request into a 429 and the run into a measurement of the limiter.
[limits]
rate_per_second = 0
EOF

# Launches the gateway (optionally under a wrapper such as valgrind) and prints the
# milliseconds from spawn to /healthz answering 200. $1: pid file; $2: ready timeout (s).
launch_gateway() {
  local pidfile="$1" timeout="$2"
  shift 2
  RUST_LOG=warn timeout 300 "${TOOL[@]}" launch --log "$WORK/gateway.log" --pidfile "$pidfile" \
    --port "$PORT_GW" --timeout "$timeout" -- "$@" "$BINARY" serve --config "$WORK/gateway.toml"
}

# Workload table (from tool.py): name repeats scim_method scim_path status up_method up_path
# has_scim_body has_up_body.
WORKLOADS=()
while read -r line; do
  name="${line%% *}"
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  WORKLOADS+=("$line")
done < <("${TOOL[@]}" workloads)
[ ${#WORKLOADS[@]} -gt 0 ] || { echo "--only names no workload" >&2; exit 64; }

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain -- src mappings Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  COMMIT="$COMMIT+uncommitted"
fi
WRK_VERSION="-"
command -v wrk >/dev/null && WRK_VERSION="$(wrk -v 2>&1 | head -1 | cut -d' ' -f2 || true)"
"${TOOL[@]}" record kind=meta commit="$COMMIT" date="$STAMP" nproc="$(nproc)" \
  cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)" \
  kernel="$(uname -r)" load_before="$(cut -d' ' -f1-3 /proc/loadavg)" \
  nginx="$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')" wrk="$WRK_VERSION" \
  duration="$DURATION" slices="$SLICES" connections="$CONNECTIONS" threads="$THREADS" \
  callgrind_requests="$CG_REQUESTS" >>"$RESULTS"

# --- 1. check every canned call through the gateway, before measuring anything --------------
log "checking the canned upstream through scimgate (upstream access log on)"
start_upstream --log
start_proxy
[ "$FLOOR" = 1 ] && start_floor
launch_gateway "$WORK/gateway.pid" 30 >/dev/null
for line in "${WORKLOADS[@]}"; do
  read -r name repeats smethod spath status umethod upath sbody ubody <<<"$line"
  "${TOOL[@]}" verify --port "$PORT_GW" --access-log "$WORK/upstream-access.log" "$name"
  # The equivalent upstream call must succeed straight, through the proxy and the floor.
  ports=("$PORT_UP" "$PORT_PROXY")
  [ "$FLOOR" = 1 ] && [ "$name" = get_user ] && ports+=("$PORT_FLOOR")
  for port in "${ports[@]}"; do
    ustatus=200
    [ "$umethod" = POST ] && [[ "$upath" != */deactivate ]] && ustatus=201
    body=()
    [ "$ubody" = 1 ] && body=(--body-file "$BODIES/$name.up.json")
    timeout 30 "${TOOL[@]}" seq --port "$port" --method "$umethod" --path "$upath" "${body[@]}" \
      --auth "Bearer svc-bench-token" --n 1 --expect "$ustatus" >/dev/null
  done
done
stop_pidfile "$WORK/gateway.pid"
stop_pidfile "$WORK/floor.pid"
stop_pidfile "$WORK/proxy.pid"
stop_pidfile "$WORK/upstream.pid"

start_upstream ""
start_proxy
[ "$FLOOR" = 1 ] && [ "$SKIP_LOAD" = 0 ] && start_floor

# --- 2. load: wrk against (a), (b), (c) -------------------------------------------------------
rss() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

run_wrk() {  # label seconds url method body_file auth ctype out
  local label="$1" seconds="$2" url="$3" method="$4" body="$5" auth="$6" ctype="$7" out="$8"
  WRK_LABEL="$label" WRK_METHOD="$method" WRK_BODY_FILE="$body" WRK_AUTH="$auth" \
    WRK_CTYPE="$ctype" WRK_ACCEPT="$ctype" WRK_OUT="$out" \
    timeout -k 5 $((seconds + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s \
    --latency -s "$BENCH/wrk.lua" "$url" >>"$OUT/wrk.log" 2>&1
}

if [ "$SKIP_LOAD" = 0 ]; then
  log "start to ready (5 launches; /healthz polled every 0.5 ms)"
  ready=()
  for i in 1 2 3 4 5; do
    ready+=("$(launch_gateway "$WORK/gateway.pid" 30)")
    [ "$i" = 5 ] || stop_pidfile "$WORK/gateway.pid"
  done
  python3 -c 'import json,statistics,sys; ms=[float(x) for x in sys.argv[1:]]; print(json.dumps({"kind":"ready","ms":ms,"median_ms":statistics.median(ms)}))' "${ready[@]}" >>"$RESULTS"
  echo "   ${ready[*]} ms"
  GW_PID="$(cat "$WORK/gateway.pid")"
  sleep 1
  printf '{"kind":"idle_rss","kb":%s}\n' "$(rss "$GW_PID" VmRSS)" >>"$RESULTS"
  echo "   idle RSS $(rss "$GW_PID" VmRSS) kB"

  log "mapping reload time (SIGHUP, 5 times)"
  timeout 60 "${TOOL[@]}" reload-time --pid "$GW_PID" --admin-port "$PORT_ADMIN" --n 5 | tee -a "$RESULTS"

  HWM_RESET=0
  echo 5 >"/proc/$GW_PID/clear_refs" 2>/dev/null && HWM_RESET=1
  log "wrk: -t$THREADS -c$CONNECTIONS, ${DURATION} s per run in $SLICES slices (warm-up ${WARMUP} s), results in $OUT/wrk.log"
  # Each run is measured in slices, the targets' slices interleaved and their order rotated
  # from slice to slice: this host's speed drifts by tens of percent over a minute, and a
  # ratio of two 10 s runs taken one after the other measured that drift as much as the
  # gateway (BENCHMARKS.md, "Measuring on a drifting host").
  target() {  # mode: sets url method body auth ctype for the workload read last
    if [ "$1" = c ]; then
      url="http://127.0.0.1:$PORT_GW$spath"; method="$smethod"; auth="Bearer scim-bench-key"; ctype=application/scim+json
      body=""; [ "$sbody" = 1 ] && body="$BODIES/$name.scim.json"
      return 0
    fi
    # (a), (b) and (d) all make the equivalent upstream call; only the port differs.
    local port
    case "$1" in a) port="$PORT_UP" ;; b) port="$PORT_PROXY" ;; d) port="$PORT_FLOOR" ;; esac
    url="http://127.0.0.1:$port$upath"; method="$umethod"; auth="Bearer svc-bench-token"; ctype=application/json
    body=""; [ "$ubody" = 1 ] && body="$BODIES/$name.up.json"
    return 0
  }
  for line in "${WORKLOADS[@]}"; do
    read -r name repeats smethod spath status umethod upath sbody ubody <<<"$line"
    [ "$HWM_RESET" = 1 ] && echo 5 >"/proc/$GW_PID/clear_refs"
    modes=(a b c)
    [ "$FLOOR" = 1 ] && [ "$name" = get_user ] && modes=(a b c d)
    if [ "$WARMUP" -gt 0 ]; then
      for mode in "${modes[@]}"; do
        target "$mode"
        run_wrk "warmup:$name:$mode:0" "$WARMUP" "$url" "$method" "$body" "$auth" "$ctype" "$WORK/warmup.jsonl"
      done
    fi
    for rep in $(seq "$repeats"); do
      for slice in $(seq "$SLICES"); do
        for k in "${!modes[@]}"; do
          mode="${modes[$(( (k + slice + rep) % ${#modes[@]} ))]}"
          target "$mode"
          run_wrk "load:$name:$mode:$rep" "$SLICE_S" "$url" "$method" "$body" "$auth" "$ctype" "$RESULTS"
        done
      done
      for mode in "${modes[@]}"; do
        "${TOOL[@]}" last "$RESULTS" --label "load:$name:$mode:$rep"
      done
    done
    printf '{"kind":"peak_rss","workload":"%s","kb":%s,"reset":%s}\n' "$name" "$(rss "$GW_PID" VmHWM)" "$HWM_RESET" >>"$RESULTS"
    echo "   scimgate peak RSS during $name: $(rss "$GW_PID" VmHWM) kB"
  done
  sleep 2
  printf '{"kind":"idle_rss_after","kb":%s}\n' "$(rss "$GW_PID" VmRSS)" >>"$RESULTS"
  stop_pidfile "$WORK/gateway.pid"
fi

# --- 3. instructions per request under callgrind ---------------------------------------------
# The gateway, and for reference the nginx hop (one nginx process, no master) forwarding the
# equivalent upstream call, each under callgrind; N sequential requests per workload between
# a zero and a dump of the counters.
PROFILE_MD="$OUT/profile.md"
: >"$PROFILE_MD"
up_status() {  # expected status of a workload's equivalent upstream call: method path
  if [ "$1" = POST ] && [[ "$2" != */deactivate ]]; then echo 201; else echo 200; fi
}
send_seq() {  # target(scim|up) name n port
  local target="$1" name="$2" n="$3" port="$4" line smethod spath status umethod upath sbody ubody body=()
  for line in "${WORKLOADS[@]}"; do
    [ "${line%% *}" = "$name" ] || continue
    read -r _ _ smethod spath status umethod upath sbody ubody <<<"$line"
    if [ "$target" = scim ]; then
      [ "$sbody" = 1 ] && body=(--body-file "$BODIES/$name.scim.json")
      timeout 1800 "${TOOL[@]}" seq --port "$port" --method "$smethod" --path "$spath" "${body[@]}" \
        --auth "Bearer scim-bench-key" --ctype application/scim+json --accept application/scim+json \
        --n "$n" --expect "$status" --timeout 120 >/dev/null
    else
      [ "$ubody" = 1 ] && body=(--body-file "$BODIES/$name.up.json")
      timeout 1800 "${TOOL[@]}" seq --port "$port" --method "$umethod" --path "$upath" "${body[@]}" \
        --auth "Bearer svc-bench-token" --n "$n" --expect "$(up_status "$umethod" "$upath")" \
        --timeout 120 >/dev/null
    fi
  done
}
# Counts one process: an idle window first (its cost per second is subtracted from every
# window, so a slower machine does not look like a costlier request), then each workload.
# $1: kind (instr | instr_nginx); $2: pid; $3: callgrind output base; $4: target; $5: port.
count_instructions() {
  local kind="$1" pid="$2" base="$3" target="$4" port="$5" line name t0 t1 f dumps=0 idle_rate
  dump() {  # label number -> the new dump file (callgrind numbers them 1, 2, …)
    callgrind_control -d "$1" "$pid" >/dev/null 2>&1
    local f="$base.$2" i
    for i in $(seq 300); do
      [ -s "$f" ] && grep -q '^totals:' "$f" && { echo "$f"; return 0; }
      sleep 0.1
    done
    echo "callgrind dump $f did not appear" >&2
    exit 1
  }
  for line in "${WORKLOADS[@]}"; do send_seq "$target" "${line%% *}" 20 "$port"; done
  callgrind_control -z "$pid" >/dev/null 2>&1
  t0=$(date +%s.%N); sleep 5; t1=$(date +%s.%N)
  dumps=$((dumps + 1)); f="$(dump idle "$dumps")"
  idle_rate="$("${TOOL[@]}" idle-rate --file "$f" --t0 "$t0" --t1 "$t1")"
  echo "   idle: $idle_rate instructions/s"
  for line in "${WORKLOADS[@]}"; do
    name="${line%% *}"
    send_seq "$target" "$name" 50 "$port"
    callgrind_control -z "$pid" >/dev/null 2>&1
    t0=$(date +%s.%N)
    send_seq "$target" "$name" "$CG_REQUESTS" "$port"
    t1=$(date +%s.%N)
    dumps=$((dumps + 1)); f="$(dump "$name" "$dumps")"
    [ "$kind" = instr ] && cp "$f" "$OUT/callgrind.$name.out"
    "${TOOL[@]}" instr-record --kind "$kind" --workload "$name" --file "$f" --t0 "$t0" --t1 "$t1" \
      --idle-rate "$idle_rate" --requests "$CG_REQUESTS" >>"$RESULTS"
    "${TOOL[@]}" last "$RESULTS"
  done
}
if [ "$SKIP_CG" = 0 ]; then
  CG="$WORK/callgrind"
  mkdir -p "$CG"
  log "callgrind, scimgate: $CG_REQUESTS sequential requests per workload"
  launch_gateway "$WORK/callgrind.pid" 180 \
    valgrind --tool=callgrind --callgrind-out-file="$CG/scimgate.out" >/dev/null
  # valgrind runs the gateway in its own process: this pid is the gateway's.
  count_instructions instr "$(cat "$WORK/callgrind.pid")" "$CG/scimgate.out" scim "$PORT_GW"
  stop_pidfile "$WORK/callgrind.pid"

  log "callgrind, the nginx hop (reference): the equivalent upstream call, $CG_REQUESTS per workload"
  "${TOOL[@]}" proxy-conf --dir "$WORK" --port "$PORT_CGPROXY" --upstream-port "$PORT_UP" \
    --workers 1 --name cgproxy >"$WORK/cgproxy.conf"
  valgrind --tool=callgrind --callgrind-out-file="$CG/nginx.out" --log-file="$WORK/cgproxy-valgrind.log" \
    "$NGINX" -p "$WORK" -c "$WORK/cgproxy.conf" -e "$WORK/cgproxy-error.log" \
    -g "daemon off; master_process off;" &
  echo $! >"$WORK/cgproxy.pid"
  wait_port "$PORT_CGPROXY"
  count_instructions instr_nginx "$(cat "$WORK/cgproxy.pid")" "$CG/nginx.out" up "$PORT_CGPROXY"
  stop_pidfile "$WORK/cgproxy.pid"

  for name in get_user list100; do
    [ -e "$OUT/callgrind.$name.out" ] || continue
    callgrind_annotate --inclusive=no --threshold=100 "$OUT/callgrind.$name.out" >"$OUT/annotate.$name.self.txt" 2>/dev/null || true
    callgrind_annotate --inclusive=yes --threshold=100 "$OUT/callgrind.$name.out" >"$OUT/annotate.$name.inclusive.txt" 2>/dev/null || true
    "${TOOL[@]}" profile --self "$OUT/annotate.$name.self.txt" --inclusive "$OUT/annotate.$name.inclusive.txt" \
      --requests "$CG_REQUESTS" --title "$name" >>"$PROFILE_MD"
  done
fi

# --- 4. report ----------------------------------------------------------------------------
log "results ($OUT)"
skipped=()
[ "$SKIP_LOAD" = 1 ] && skipped+=(load)
[ "$SKIP_CG" = 1 ] && skipped+=(callgrind)
report=(--results "$RESULTS" --baseline "$BENCH/baseline.json" --markdown "$OUT/report.md"
        --skipped "$(IFS=,; echo "${skipped[*]:-}")")
[ "$CHECK" = 1 ] && report+=(--check)
[ "$RECORD" = 1 ] && report+=(--record)
[ -n "$ONLY" ] && report+=(--partial)
"${TOOL[@]}" record kind=load_after load="$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
rc=0
"${TOOL[@]}" report "${report[@]}" || rc=$?
[ -s "$PROFILE_MD" ] && { echo; cat "$PROFILE_MD"; cat "$PROFILE_MD" >>"$OUT/report.md"; }
exit "$rc"
