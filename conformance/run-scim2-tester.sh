#!/usr/bin/env bash
# Runs scim2-tester (the python-scim project's RFC 7643/7644 compliance checker) against
# `scimgate demo` and prints every check, then "N passed, M failed, K skipped".
# Exits non-zero when any check failed.
#
#   conformance/run-scim2-tester.sh [check.py options...]
#
# e.g. `--verbose` (print every check's data). Environment:
#   PYTHON                      interpreter for the venv (default python3)
#   SCIM2_TESTER_UNADAPTED      set to 1 to run scim2-tester without the two adaptations
#                               check.py applies by default (--email-usernames,
#                               --ignore-unsent-read-only: see conformance/README.md)
#
# Leaves in target/conformance/: scimgate-demo.log (the gateway's output),
# http.log (every request and response), results.json (every check with its data).
set -euo pipefail
cd "$(dirname "$0")/.."

root=$PWD
venv=$root/target/conformance-venv
out=$root/target/conformance
requirements=$root/conformance/requirements.txt
python=${PYTHON:-python3}
mkdir -p "$out"

# 1. The venv, installed from the pinned, hashed requirements; reused (no network) while
#    requirements.txt is unchanged and the packages import.
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]] &&
  "$venv/bin/python" -c 'import scim2_tester, scim2_client, httpx2' 2>/dev/null; then
  echo "conformance venv up to date: $venv"
else
  echo "installing conformance/requirements.txt into $venv"
  if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv" || {
      echo "cannot create a venv with $python (on Debian: apt-get install python3-venv)" >&2
      exit 1
    }
  fi
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --require-hashes -r "$requirements"
  echo "$want" >"$stamp"
fi

# 2. The gateway.
# CONFORMANCE_BIN names an already built binary (the cargo test that runs this script).
if [ -n "${CONFORMANCE_BIN:-}" ]; then
  bin=$CONFORMANCE_BIN
else
  cargo build --locked --bin scimgate
  bin=${CARGO_TARGET_DIR:-$root/target}/debug/scimgate
fi

# 3. The demo on a free port, with a random token; stopped whatever happens next.
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
log=$out/scimgate-demo.log
pid=
checker=
cleanup() {
  local p
  for p in $checker $pid; do
    if kill -0 "$p" 2>/dev/null; then
      kill "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$bin" demo --listen 127.0.0.1:0 --token "$token" >"$log" 2>&1 &
pid=$!

base_url=
for _ in $(seq 1 300); do
  base_url=$(sed -n 's/.*SCIM base URL:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$log" | head -n1)
  [[ -n $base_url ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "scimgate demo exited before printing its base URL:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z $base_url ]]; then
  echo "scimgate demo printed no 'SCIM base URL:' within 30 s:" >&2
  cat "$log" >&2
  exit 1
fi
echo "scimgate demo at $base_url (pid $pid)"

# 4. scim2-tester, through conformance/check.py (one line per check, then the counts).
args=(--url "$base_url" --json "$out/results.json" --trace "$out/http.log")
if [[ ${SCIM2_TESTER_UNADAPTED:-0} != 1 ]]; then
  args+=(--email-usernames --ignore-unsent-read-only)
fi
# In the background, so that a signal to this script is handled at once (bash runs traps
# only between commands, but interrupts `wait`).
SCIM_TOKEN=$token "$venv/bin/python" "$root/conformance/check.py" "${args[@]}" "$@" &
checker=$!
status=0
wait "$checker" || status=$?
checker=
exit "$status"
