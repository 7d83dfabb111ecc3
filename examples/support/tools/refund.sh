#!/bin/sh
# Runs only once someone approved it (APPROVAL confirm); a real one would call billing.
input=$(cat)
echo "refund issued: $input"
