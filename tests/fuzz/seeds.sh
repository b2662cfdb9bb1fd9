#!/bin/sh
# make check: replay the fuzz seed corpus through the fuzz targets built
# normally (no libFuzzer), TAP. For each target: every seed listed in its
# manifest (tests/data/fuzz/TARGET/EXPECTED) must have exactly the outcome
# written there, with every invariant of the target holding; every seed
# must be listed; and FUZZ_CHECK_MUTATIONS (default 40) format-aware
# mutations of every seed must run with every invariant holding (a short,
# deterministic fuzzing run; a broken invariant leaves the input in
# $FUZZ_CRASH_DIR, default the build directory).
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
n=0
fail=0
muts=${FUZZ_CHECK_MUTATIONS:-40}
FUZZ_CRASH_DIR=${FUZZ_CRASH_DIR:-$(pwd)}
export FUZZ_CRASH_DIR

result() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		fail=1
	fi
}

for t in stream return; do
	bin=$b/tests/fuzz/fuzz_$t
	dir=$s/tests/data/fuzz/$t
	manifest=$dir/EXPECTED
	if [ ! -f "$manifest" ]; then
		result 1 "fuzz_$t: no manifest $manifest"
		continue
	fi
	listed=" "
	while read -r name outcome; do
		case $name in '' | '#'*) continue ;; esac
		listed="$listed$name "
		if [ ! -f "$dir/$name" ]; then
			result 1 "fuzz_$t $name: listed in EXPECTED, but there is no such seed"
			continue
		fi
		out=$("$bin" --expect "$outcome" "$dir/$name" 2>&1)
		rc=$?
		[ $rc -eq 0 ] || printf '%s\n' "$out" | sed 's/^/# /'
		result $rc "fuzz_$t $name: $outcome"
	done <"$manifest"
	missing=
	for f in "$dir"/*.bin; do
		case $listed in *" $(basename "$f") "*) ;; *) missing="$missing $(basename "$f")" ;; esac
	done
	[ -z "$missing" ] || echo "# not in $manifest:$missing (scripts/fuzz-corpus.sh writes it)"
	result "$([ -z "$missing" ] && echo 0 || echo 1)" "fuzz_$t: every seed has an expected outcome"
	out=$("$bin" --mutate "$muts" "$dir"/*.bin 2>&1)
	rc=$?
	printf '%s\n' "$out" | tail -5 | sed 's/^/# /'
	result $rc "fuzz_$t: $muts format-aware mutations of each seed keep every invariant"
done
echo "1..$n"
exit $fail
