#!/bin/sh
# A demo agent for the reliability features. The payload chooses what it does:
#   {"fail_first":true}  fails attempt 1 in step 3; attempt 2 resumes at step 3
#   {"fail":true}        fails every attempt in step 3 (ends in the dead-letter queue)
#   {"ask":true}         asks for approval `send-email` and waits for the decision
#   {"sleep":N}          sleeps N seconds inside step `work` (try --step-timeout)
#   {"tokens":N}         reports N more tokens, then works for 5 s (try --max-tokens)
# With --session, it counts its turns in $DISPATCH_SESSION_FILE.
ev() { echo "$1" >> "$DISPATCH_EVENTS"; }
payload=$(cat "$DISPATCH_PAYLOAD")
has() { echo "$payload" | grep -q "\"$1\""; }
num() { echo "$payload" | sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p"; }

i=1
if [ -n "$DISPATCH_CHECKPOINT" ]; then
  i=$(sed -n 's/.*"next":\([0-9][0-9]*\).*/\1/p' "$DISPATCH_CHECKPOINT")
  echo "resuming at step $i"
fi
while [ "$i" -le 3 ]; do
  ev "{\"type\":\"step\",\"name\":\"step$i\",\"phase\":\"start\"}"
  echo "attempt $DISPATCH_ATTEMPT: step $i"
  if [ "$i" -eq 3 ] && { has fail || { has fail_first && [ "$DISPATCH_ATTEMPT" = 1 ]; }; }; then
    echo "failing in step 3" >&2
    exit 1
  fi
  ev '{"type":"tool_call","name":"search","input":{},"output":"ok","ok":true,"duration_ms":42}'
  ev '{"type":"usage","model":"demo-model","input_tokens":100,"output_tokens":20,"cost_usd":0.001}'
  ev "{\"type\":\"checkpoint\",\"step\":\"step$i\",\"state\":{\"next\":$((i + 1))}}"
  ev "{\"type\":\"step\",\"name\":\"step$i\",\"phase\":\"end\"}"
  i=$((i + 1))
done

tokens=$(num tokens)
if [ -n "$tokens" ]; then
  ev "{\"type\":\"usage\",\"model\":\"demo-model\",\"input_tokens\":$tokens,\"output_tokens\":0}"
  sleep 5
fi
secs=$(num sleep)
if [ -n "$secs" ]; then
  ev '{"type":"step","name":"work","phase":"start"}'
  sleep "$secs"
  ev '{"type":"step","name":"work","phase":"end"}'
fi
if has ask; then
  ev '{"type":"approval","id":"send-email","summary":"Send the refund email?","timeout_s":3600}'
  while [ ! -e "$DISPATCH_APPROVALS/send-email.json" ]; do sleep 0.2; done
  if grep -q '"decision":"approve"' "$DISPATCH_APPROVALS/send-email.json"; then
    echo "email sent"
  else
    echo "email not sent: denied"
  fi
fi
if [ -n "$DISPATCH_SESSION_FILE" ]; then
  n=$(cat "$DISPATCH_SESSION_FILE" 2>/dev/null || echo 0)
  echo $((n + 1)) > "$DISPATCH_SESSION_FILE"
  echo "session turn $((n + 1))"
fi
echo "{\"done\":true,\"attempt\":$DISPATCH_ATTEMPT}" > "$DISPATCH_OUTPUT"
