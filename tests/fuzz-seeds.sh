#!/bin/sh
# Replay the capability-parser seed corpus through tests/fuzz_caps (TAP).
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
n=0; fail=0
for f in "$s"/tests/data/caps/*.bin; do
	n=$((n + 1))
	if "$b/tests/fuzz_caps" "$f" >/dev/null 2>&1; then
		echo "ok $n - fuzz_caps $(basename "$f")"
	else
		echo "not ok $n - fuzz_caps $(basename "$f")"; fail=1
	fi
done
[ "$n" -gt 0 ] || { echo "not ok 1 - no seed files under $s/tests/data/caps"; n=1; fail=1; }
echo "1..$n"
exit $fail
