#!/bin/sh
# The vfiomig command line (TAP): per-command help, usage errors (exit 2,
# what was wrong, a hint), a failed save leaving no file and an existing
# target untouched, inspect on garbage, and a save/inspect/load round trip
# of a simulated device.
# Conditions reach check() as strings, evaluated after each run: single quotes on purpose.
# shellcheck disable=SC2016,SC2034,SC2317
set -u
b=${top_builddir:-.}
tool="$b/tools/vfiomig"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vfiomig-tool.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
# Saves go to $dir, which must hold nothing but what a test expects.
dir="$tmp/out"
mkdir "$dir" || exit 1
n=0
fail=0

# run ARGS...: the tool's exit status in $rc, its stdout and stderr in $out and $err.
run() {
	"$tool" "$@" >"$tmp/stdout" 2>"$tmp/stderr"
	rc=$?
	out=$(cat "$tmp/stdout")
	err=$(cat "$tmp/stderr")
}

# check DESCRIPTION COND...: one TAP line; on failure, what the tool said.
check() {
	desc=$1
	shift
	n=$((n + 1))
	if "$@"; then
		echo "ok $n - $desc"
	else
		echo "not ok $n - $desc"
		echo "# exit $rc"
		printf '%s\n' "$out" | sed 's/^/# stdout: /'
		printf '%s\n' "$err" | sed 's/^/# stderr: /'
		fail=1
	fi
}

has() { printf '%s\n' "$1" | grep -F -q -e "$2"; }
lines() { printf '%s' "$1" | grep -c ''; }

if [ ! -x "$tool" ]; then
	echo "not ok 1 - $tool is not built"
	echo "1..1"
	exit 1
fi

# ------------------------------------------------------------------- help
for c in probe demo save load inspect help; do
	run "$c" --help
	check "$c --help: exit 0, its own usage on stdout, nothing on stderr" \
		eval '[ $rc -eq 0 ] && has "$out" "usage: vfiomig $c" && has "$out" "Example:" &&
		      [ -z "$err" ]'
done
run save -h
check "save -h: the same as save --help" eval '[ $rc -eq 0 ] && has "$out" "usage: vfiomig save "'
saved_help=$out
run help save
check "help save: the same text as save --help" eval '[ $rc -eq 0 ] && [ "$out" = "$saved_help" ]'
run --help
check "--help: global usage on stdout, exit 0, lists every command and the exit codes" \
	eval '[ $rc -eq 0 ] && has "$out" "vfiomig inspect FILE" && has "$out" "Exit status" &&
	      has "$out" "2  usage error"'
run help
check "help: global usage, exit 0" eval '[ $rc -eq 0 ] && has "$out" "Commands:"'
run --version
check "--version: exit 0" eval '[ $rc -eq 0 ] && has "$out" "vfiomig "'

# --------------------------------------------------------- usage errors
# usage_error DESCRIPTION MESSAGE HINT ARGS...: exit 2, MESSAGE then HINT on stderr, no stdout.
usage_error() {
	desc=$1
	msg=$2
	hint=$3
	shift 3
	run "$@"
	check "$desc" eval '[ $rc -eq 2 ] && [ -z "$out" ] && [ "$(lines "$err")" -eq 2 ] &&
		[ "$(printf "%s\n" "$err" | sed -n 1p)" = "$msg" ] &&
		[ "$(printf "%s\n" "$err" | sed -n 2p)" = "$hint" ]'
}
usage_error "save without -o: exit 2, says '-o FILE' is missing" \
	"vfiomig save: missing -o FILE" "Try 'vfiomig save --help'." save sim:pci,mig=v2
usage_error "save without DEVICE: exit 2, says DEVICE is missing" \
	"vfiomig save: missing DEVICE" "Try 'vfiomig save --help'." save -o "$tmp/x.vfm"
usage_error "load with an unknown option: exit 2, names it" \
	"vfiomig load: unknown option '--frob'" "Try 'vfiomig load --help'." \
	load sim:pci,mig=v2 -i "$tmp/x.vfm" --frob
usage_error "demo --state 12Q: exit 2, says it is not a size" \
	"vfiomig demo: --state: '12Q' is not a size" "Try 'vfiomig demo --help'." demo --state 12Q
usage_error "demo --state without a value: exit 2" \
	"vfiomig demo: --state needs a value" "Try 'vfiomig demo --help'." demo --state
usage_error "demo --proto v3: exit 2, names the choices" \
	"vfiomig demo: --proto: 'v3' is not v1 or v2" "Try 'vfiomig demo --help'." demo --proto v3
usage_error "inspect with two files: exit 2" \
	"vfiomig inspect: unexpected argument 'b' (FILE is 'a')" "Try 'vfiomig inspect --help'." \
	inspect a b
usage_error "an unknown command: exit 2, names it" \
	"vfiomig: unknown command 'frob'" "Try 'vfiomig --help'." frob
usage_error "no command: exit 2" "vfiomig: missing command" "Try 'vfiomig --help'."
usage_error "help for an unknown command: exit 2" \
	"vfiomig: unknown command 'frob'" "Try 'vfiomig --help'." help frob
usage_error "a sim spec with an unknown key: exit 2, names the key" \
	"vfiomig probe: device spec \"sim:pci,frob=1\": unknown key \"frob\"" \
	"Try 'vfiomig probe --help'." probe sim:pci,frob=1

# ---------------------------------------------------- failed saves
target="$dir/dev.vfm"
run save sim:pci -o "$target"
check "save of a sim device without mig=: exit 1, one line saying to add mig=" \
	eval '[ $rc -eq 1 ] && [ "$(lines "$err")" -eq 1 ] &&
	      has "$err" "vfiomig save: sim:pci: the simulated device has no migration support" &&
	      has "$err" "add mig=v2"'
check "that failed save left no file" eval '[ ! -e "$target" ] && [ -z "$(ls -A "$dir")" ]'

echo precious >"$target"
run save sim:pci -o "$target"
check "a failed save does not touch an existing target" \
	eval '[ $rc -eq 1 ] && [ "$(cat "$target")" = precious ]'

run save sim:pci,mig=v2 -o "$dir/no/such/dir/dev.vfm"
check "save into a missing directory: exit 1, one line saying so, no file" \
	eval '[ $rc -eq 1 ] && [ "$(lines "$err")" -eq 1 ] &&
	      has "$err" "cannot create a temporary file in $dir/no/such/dir" && [ ! -e "$dir/no" ]'

# A save that fails half way (the file size limit: EFBIG, SIGXFSZ ignored):
# the temporary is removed, the target stays as it was.
(trap '' XFSZ; ulimit -f 64 && exec "$tool" save sim:pci,mig=v2,state=1M -o "$target") \
	>"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
out=$(cat "$tmp/stdout")
err=$(cat "$tmp/stderr")
check "a save that fails while writing: exit 1, says why, target untouched, no temporary left" \
	eval '[ $rc -eq 1 ] && has "$err" "File too large" && [ "$(cat "$target")" = precious ] &&
	      [ "$(ls -A "$dir")" = dev.vfm ]'
rm -f "$target"

# ------------------------------------------------------------ inspect
head -c 4096 /dev/urandom >"$tmp/garbage"
run inspect "$tmp/garbage"
check "inspect on garbage: exit 1, nothing on stdout, one error line" \
	eval '[ $rc -eq 1 ] && [ -z "$out" ] && [ "$(lines "$err")" -eq 1 ] &&
	      has "$err" "vfiomig inspect: $tmp/garbage: "'
run inspect "$tmp/garbage" --json
check "inspect --json on garbage: nothing on stdout" eval '[ $rc -eq 1 ] && [ -z "$out" ]'
run inspect "$tmp/garbage" --records
check "inspect --records on garbage: nothing on stdout" eval '[ $rc -eq 1 ] && [ -z "$out" ]'
: >"$tmp/empty"
run inspect "$tmp/empty"
check "inspect on an empty file: exit 1, nothing on stdout" eval '[ $rc -eq 1 ] && [ -z "$out" ]'
rm -f "$tmp/garbage" "$tmp/empty"

# ------------------------------------------------------ round trip
# A simulated device lives in one process: load into a fresh one of the same spec.
spec=sim:pci,mig=v2
run save "$spec" -o "$target"
check "save $spec: exit 0, reports the save, the file exists" \
	eval '[ $rc -eq 0 ] && has "$out" "saved 0000:00:01.0: v2" && [ -s "$target" ] &&
	      [ "$(ls -A "$dir")" = dev.vfm ]'
run inspect "$target" --records
check "inspect of the saved file: exit 0, verified, PCI 1af4:10f0, a data record" \
	eval '[ $rc -eq 0 ] && has "$out" "CRC32C verified" && has "$out" "PCI 1af4:10f0" &&
	      has "$out" "DEV_DATA_STATE"'
run inspect "$target" --json
check "inspect --json of the saved file: valid" eval '[ $rc -eq 0 ] && has "$out" "\"valid\": true"'
run load "$spec" -i "$target"
check "load $spec of the saved file: exit 0, device RUNNING" \
	eval '[ $rc -eq 0 ] && has "$out" "loaded 0000:00:01.0: v2" && has "$out" "device now RUNNING"'
run load sim:mdev,mig=v2 -i "$target"
check "load into a device of another kind: exit 1, one line naming the mismatch" \
	eval '[ $rc -eq 1 ] && [ "$(lines "$err")" -eq 1 ] && has "$err" "stream is for PCI 1af4:10f0"'
cp "$target" "$tmp/saved"
run save sim:pci -o "$target"
check "a failed save over a good stream leaves it intact" \
	eval '[ $rc -eq 1 ] && cmp -s "$target" "$tmp/saved"'

echo "1..$n"
exit $fail
