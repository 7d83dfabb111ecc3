#!/usr/bin/env bash
# Contract fuzzing: schemathesis (a third-party OpenAPI fuzzer) sends
# generated requests to a real `dispatch server` and checks every answer
# against the OpenAPI document the server publishes. Exits non-zero when it
# finds anything. CI runs it (stage "OpenAPI contract fuzzing"); run it
# locally from anywhere in the checkout:
#
#   crates/dispatch-server/scripts/schemathesis.sh
#
# Knobs (environment): SCHEMATHESIS_EXAMPLES (generated cases per operation
# and phase, default 25), SCHEMATHESIS_MAX_TIME (seconds, default 120),
# SCHEMATHESIS_SEED (default: a fixed seed, so a CI failure reproduces;
# `random` for a new one), SCHEMATHESIS_VENV (where schemathesis is
# installed, default /tmp/dispatch-schemathesis-venv), SCHEMATHESIS_OPENAPI
# (the document, already written by the contract test; default: the test
# writes it here), DISPATCH_BIN (a built
# `dispatch`; default: the one `cargo test --workspace --no-run` builds).
#
# The server: SQLite in a throwaway state directory, a bearer token
# required, an ephemeral loopback port, no worker slots (nothing the fuzzer
# creates runs, so no agent, model or callback ever reaches out), and no
# callback secret (so every `callback_url` is refused).
#
# Checks: not_a_server_error, status_code_conformance,
# content_type_conformance, response_schema_conformance and
# response_headers_conformance. Left off: negative_data_rejection and
# positive_data_acceptance, because the server is deliberately more
# forgiving than the schema in places (`wait=1` for `true`, a number or
# "2M" for a quota), and because many valid-looking requests are refused
# for the state they name (a run that does not exist is a 404, not a 2xx);
# the stateful phase, because the document declares no links; the streamed
# and long-polled forms of logs, events and runs (schemathesis.toml pins
# them to their bounded forms: see there); and ignored_auth and the other
# security checks, which tests/it/web_guard.rs and the auth tests cover with
# real tokens. Generation is in both modes (valid and invalid requests).
# The seed fixes the cases in their order; the time bound decides how many
# run, so a slower machine runs fewer.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export CARGO_INCREMENTAL=0

examples=${SCHEMATHESIS_EXAMPLES:-25}
max_time=${SCHEMATHESIS_MAX_TIME:-120}
seed=${SCHEMATHESIS_SEED:-20261126}
venv=${SCHEMATHESIS_VENV:-/tmp/dispatch-schemathesis-venv}
version=4.32.5

work=$(mktemp -d /tmp/dispatch-schemathesis.XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version" "hypothesis==6.170.17"
fi

# The document the contract test writes; `--workspace` so that the build of
# the README's test command (`cargo test --workspace`) is reused: selecting
# one package resolves features differently and rebuilds most of the tree.
if [ -n "${SCHEMATHESIS_OPENAPI:-}" ]; then
  cp "$SCHEMATHESIS_OPENAPI" "$work/openapi.json"
else
  OPENAPI_OUT="$work/openapi.json" cargo test -q --workspace --test it -- \
    --exact openapi_contract::writes_the_document >/dev/null
fi
if [ -z "${DISPATCH_BIN:-}" ]; then
  # The tests' build makes the binary too (a no-op after the step above).
  cargo test -q --workspace --no-run
  DISPATCH_BIN="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/dispatch"
fi

export DISPATCH_ROOT="$work/state"
token=$("$DISPATCH_BIN" token create --name schemathesis | grep -o 'dsp_[A-Za-z0-9_]*' | head -1)
[ -n "$token" ] || { echo "error: no token from \`dispatch token create\`"; exit 1; }
"$DISPATCH_BIN" server --listen 127.0.0.1:0 --workers 0 --require-auth >"$work/server.log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 300); do
  addr=$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | head -1 | sed 's|.*http://||' || true)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "error: dispatch server did not start:"
  cat "$work/server.log"
  exit 1
fi
echo "== dispatch server on $addr; schemathesis $version, $examples examples per operation, at most $max_time s, seed $seed"

# Something to find: a parcel and a run of it (queued: no worker takes it).
curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"files": {"Agentfile": "FROM noop\nNAME bench\n"}}' "http://$addr/v1/parcels" >/dev/null
curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"parcel": "bench"}' "http://$addr/v1/runs" >/dev/null

seed_args=(--seed "$seed")
[ "$seed" = random ] && seed_args=()
fuzz() {
  "$venv/bin/schemathesis" --no-color --config-file crates/dispatch-server/scripts/schemathesis.toml \
    run "$work/openapi.json" \
    --url "http://$addr" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" \
    --max-time "$max_time" \
    --request-timeout 20 \
    --workers 1 \
    --generation-database none \
    "${seed_args[@]}" 2>&1 | tee "$work/fuzz.log"
}
status=0
fuzz || status=$?
# Python 3.11's `ast.parse` can raise "AST constructor recursion depth
# mismatch" inside hypothesis's own introspection of the generator's
# lambdas: CPython 3.11 keeps the AST converter's depth in one state shared
# by every thread, so two of schemathesis's workers parsing at once corrupt
# it (gh-106905). Hypothesis 6.170 parses whole modules there, which made it
# frequent: two CI runs in a row failed with `--workers 2`, so one worker.
# schemathesis reports it as a Runtime Error of one operation, which is the
# tool failing, not the API. Should it still happen, the same seed once more.
if [ "$status" -ne 0 ] && grep -q "AST constructor recursion depth mismatch" "$work/fuzz.log" \
  && ! grep -qE "^[[:space:]]*(❌|FAILED)|Failures:" "$work/fuzz.log"; then
  echo "== schemathesis itself failed (CPython's AST recursion bug, not a finding): once more"
  status=0
  fuzz || status=$?
fi
if [ "$status" -ne 0 ]; then
  echo "== schemathesis found something (exit $status); the server's log:"
  tail -n 50 "$work/server.log"
fi
exit "$status"
