#!/usr/bin/env bash
# make autobahn: Autobahn|Testsuite's fuzzing client (all cases, compression
# included) against an echo server built from this package. Installs the suite
# (Python 2.7 under pyenv, as the machine image provides) when it is missing.
# Fails on any FAILED case, any UNIMPLEMENTED compression case, or an
# unexplained NON-STRICT/INFORMATIONAL one (scripts/autobahn/check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin:$HOME/.local/bin:$HOME/.pyenv/bin:$HOME/.pyenv/shims"
WSTEST="$HOME/.local/bin/wstest"
CASES="${AUTOBAHN_CASES:-*}"
CONFIG="${AUTOBAHN_CONFIG:-debug}"
if [ ! -x "$WSTEST" ]; then
  echo "autobahn: installing autobahntestsuite (Python 2.7 from pyenv, packages from PyPI)"
  command -v python2 >/dev/null 2>&1 || { echo "autobahn: python2 (pyenv 2.7.18) not found" >&2; exit 1; }
  PYENV_VERSION=2.7.18 python2 -m pip install --user --quiet --disable-pip-version-check autobahntestsuite
fi
swift build -c "$CONFIG" --product Benchmarks
BIN="$(swift build -c "$CONFIG" --show-bin-path)/Benchmarks"
OUT=artifacts/autobahn
rm -rf "$OUT" && mkdir -p "$OUT"
PORT="${AUTOBAHN_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
"$BIN" echo --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
  sleep 0.1
done
python3 - "$PORT" "$CASES" "$OUT" > "$OUT/spec.json" <<'PY'
import json, sys
port, cases, out = sys.argv[1], sys.argv[2], sys.argv[3]
print(json.dumps({
    "outdir": out,
    "servers": [{"agent": "ClusterWS", "url": "ws://127.0.0.1:%s" % port}],
    "cases": cases.split(","),
    "exclude-cases": [],
    "exclude-agent-cases": {},
}))
PY
echo "autobahn: fuzzingclient against ws://127.0.0.1:$PORT ($CONFIG build), cases: $CASES"
start=$(date +%s)
PYENV_VERSION=2.7.18 "$WSTEST" -m fuzzingclient -s "$OUT/spec.json" > "$OUT/wstest.log" 2>&1 || {
  echo "autobahn: wstest failed"; tail -20 "$OUT/wstest.log"; exit 1; }
echo "autobahn: done in $(( $(date +%s) - start )) s"
kill $SERVER 2>/dev/null || true
python3 scripts/autobahn/check.py "$OUT/index.json" | tee "$OUT/summary.md"
