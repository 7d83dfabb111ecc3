#!/bin/sh
# stdin: the message (RESULT from the researcher, or VALIDATION from the writer).
msg=$(cat)
topic=$(printf '%s' "$msg" | sed -n 's/.*"topic":"\([^"]*\)".*/\1/p')
case "$msg" in
  '{"from":"writer","kind":"VALIDATION"'*) revised=true; echo "reworking after the writer's review" >&2 ;;
  *) revised=false; echo "analysing the notes" >&2 ;;
esac
printf '{"type":"usage","model":"sh","input_tokens":60,"output_tokens":30,"cost_usd":0.0}\n' >> "$DISPATCH_EVENTS"
printf '{"type":"output","value":{"topic":"%s","finding":"%s are driven by the moon","revised":%s}}\n' \
  "$topic" "$topic" "$revised" >> "$DISPATCH_EVENTS"
