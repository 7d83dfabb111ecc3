#!/bin/sh
msg=$(cat)
lang=$(printf '%s' "$msg" | sed -n 's/.*"agent":"\([a-z]*\)".*/\1/p')
case "$lang" in
  es) text="hola mundo" ;;
  fr) text="bonjour le monde" ;;
  de) text="hallo Welt" ;;
  *) text="hello world" ;;
esac
printf '{"type":"output","value":"%s"}\n' "$text" >> "$DISPATCH_EVENTS"
