#!/bin/sh
# stdin: {"from":"__start__","kind":"TASK","payload":{"topic":…},…}
topic=$(sed -n 's/.*"topic":"\([^"]*\)".*/\1/p')
[ -n "$topic" ] || topic="the news"
echo "researching $topic" >&2
printf '{"type":"usage","model":"sh","input_tokens":40,"output_tokens":20,"cost_usd":0.0}\n' >> "$DISPATCH_EVENTS"
printf '{"type":"output","value":{"topic":"%s","notes":["%s rises and falls","%s matters to sailors"]}}\n' \
  "$topic" "$topic" "$topic" >> "$DISPATCH_EVENTS"
