#!/bin/sh
# make fuzz: run each fuzz target for SECONDS on a copy of its seed corpus.
#   tests/fuzz/run.sh FUZZDIR SRCDIR SECONDS
# The committed corpus is only read: it is copied into FUZZDIR/work/TARGET/
# corpus, where libFuzzer adds what it finds (kept between runs, so later
# runs start further on). A crash, leak, timeout or broken invariant leaves
# its input in FUZZDIR/work/TARGET/ (crash-*, leak-*, timeout-*) and fails
# the run; reproduce with `FUZZDIR/fuzz_TARGET FILE`.
set -u
o=$1
src=$2
secs=$3
status=0
for t in stream return caps; do
	case $t in
	caps) seeds=$src/tests/data/caps ;;
	*) seeds=$src/tests/data/fuzz/$t ;;
	esac
	work=$o/work/$t
	mkdir -p "$work/corpus"
	cp "$seeds"/*.bin "$work/corpus/"
	dict=
	[ -f "$src/tests/fuzz/$t.dict" ] && dict=-dict=$src/tests/fuzz/$t.dict
	echo "== fuzz_$t: $secs s, $(find "$work/corpus" -type f | wc -l) inputs to start from =="
	# shellcheck disable=SC2086
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		"$o/fuzz_$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$work/" $dict ${FUZZ_ARGS:-} \
		"$work/corpus" >"$work/log" 2>&1
	rc=$?
	grep -E "^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)" "$work/log" | tail -1
	grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" \
		"$work/log"
	if [ $rc -ne 0 ]; then
		status=1
		echo "fuzz_$t FAILED (exit $rc); the end of $work/log:"
		tail -40 "$work/log"
		ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null
	fi
done
exit $status
