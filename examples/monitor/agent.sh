#!/bin/sh
# examples/monitor: one heartbeat. The payload (stdin) is the wake envelope:
# {"wake":{"reason":"schedule","schedule":"*/10 * * * * *",...},"payload":{...}}
set -eu

envelope=$(cat)
reason=$(printf '%s' "$envelope" | sed -n 's/.*"reason"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1)
used=$(df -P . | awk 'NR==2 {print $5}')
echo "monitor: woken by ${reason:-unknown}; disk ${used:-?} used"
printf '%s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${reason:-unknown}" "${used:-?}" >> "$DISPATCH_STATE_DIR/history.log"
printf '{"type":"step","name":"check-disk","phase":"end"}\n' >> "$DISPATCH_EVENTS"
printf '{"disk_used":"%s","reason":"%s"}\n' "${used:-?}" "${reason:-unknown}" > "$DISPATCH_OUTPUT"
