#!/bin/sh
# examples/webhook: one request. The payload (stdin) is the wake envelope:
# {"wake":{"reason":"http",...},"request":{"method":"POST","path":"/hook",
#  "query":"","headers":{...},"body":"{\"ticket\":42}",...}}
set -eu

envelope=$(cat)
method=$(printf '%s' "$envelope" | sed -n 's/.*"method"[[:space:]]*:[[:space:]]*"\([A-Z]*\)".*/\1/p' | head -n 1)
ticket=$(printf '%s' "$envelope" | sed -n 's/.*\\"ticket\\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' | head -n 1)
echo "webhook: ${method:-?} request for ticket ${ticket:-none}"
printf '{"type":"tool_call","name":"triage","input":{"ticket":"%s"},"output":"queued","ok":true,"duration_ms":1}\n' "${ticket:-none}" >> "$DISPATCH_EVENTS"
printf '{"ticket":"%s","triaged":true}\n' "${ticket:-none}" > "$DISPATCH_OUTPUT"
