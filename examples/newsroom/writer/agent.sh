#!/bin/sh
# stdin: one message from __join__ whose payload holds the latest message of
# each upstream member (the researcher's notes and the analyst's findings the
# first time, the analyst's revision the second), with the thread.
msg=$(cat)
topic=$(printf '%s' "$msg" | sed -n 's/.*"topic":"\([^"]*\)".*/\1/p')
printf '{"type":"usage","model":"sh","input_tokens":80,"output_tokens":50,"cost_usd":0.0}\n' >> "$DISPATCH_EVENTS"
case "$msg" in
  *'"revised":true'*)
    echo "the findings hold; filing the story" >&2
    # No message: the output goes along `ROUTE writer -> __end__`.
    printf '{"type":"output","value":{"headline":"Why %s turn","body":"%s are driven by the moon, and sailors plan by them."}}\n' \
      "$topic" "$topic" >> "$DISPATCH_EVENTS" ;;
  *)
    echo "asking the analyst to double-check" >&2
    printf '{"type":"message","to":"analyst","kind":"VALIDATION","payload":{"topic":"%s","feedback":"cite the cause"}}\n' \
      "$topic" >> "$DISPATCH_EVENTS" ;;
esac
