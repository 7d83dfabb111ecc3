#!/bin/sh
# examples/hello: reads its payload, reports usage, a step, a tool call and a
# checkpoint, writes an artifact and an output. Needs nothing but POSIX sh.
set -eu

payload=$(cat)                                  # the payload is on stdin (and in $DISPATCH_PAYLOAD)
name=$(printf '%s' "$payload" | sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
[ -n "$name" ] || name="world"

emit() { printf '%s\n' "$1" >> "$DISPATCH_EVENTS"; }

emit '{"type":"step","name":"greet","phase":"start"}'
echo "hello agent: run $DISPATCH_RUN_ID, attempt $DISPATCH_ATTEMPT, operation $DISPATCH_OPERATION"
greeting="Hello, $name!"
emit "{\"type\":\"tool_call\",\"name\":\"compose\",\"input\":{\"name\":\"$name\"},\"output\":\"$greeting\",\"ok\":true,\"duration_ms\":1}"
emit '{"type":"usage","model":"demo-model","input_tokens":1200,"output_tokens":300,"cost_usd":0.0123}'
emit "{\"type\":\"checkpoint\",\"step\":\"greet\",\"state\":{\"greeted\":\"$name\"}}"
printf '%s\n' "$greeting" > "$DISPATCH_ARTIFACTS/greeting.txt"
emit '{"type":"step","name":"greet","phase":"end"}'
printf '{"greeting":"%s"}\n' "$greeting" > "$DISPATCH_OUTPUT"
echo "$greeting"
