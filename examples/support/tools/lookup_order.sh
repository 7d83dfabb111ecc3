#!/bin/sh
# The arguments arrive as JSON on stdin (and in $TOOL_INPUT); stdout is the result.
order=$(sed 's/.*"order" *: *"\([^"]*\)".*/\1/')
printf '{"order":"%s","status":"delivered damaged","paid":40.00,"currency":"EUR"}\n' "$order"
