#!/bin/sh
# Run the example VMM integration (TAP): it migrates two simulated devices
# and exits non-zero if a destination differs from its source.
set -u
b=${top_builddir:-.}
out=$("$b/examples/vmm-embed" 2>&1)
rc=$?
printf '%s\n' "$out" | sed 's/^/# /'
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "both destinations match"; then
	echo "ok 1 - examples/vmm-embed migrates two devices and they match"
else
	echo "not ok 1 - examples/vmm-embed (exit $rc)"
fi
echo "1..1"
