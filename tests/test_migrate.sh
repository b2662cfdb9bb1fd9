#!/bin/sh
# vfiomig migrate between two processes (TAP): the destination runs in the
# background, the source in the foreground, over unix sockets in a temporary
# directory and over TCP loopback (the destination listens on port 0 and
# says which port it got). Successes compare the state checksums of both
# sides; failures check the exit status, which side the one-line error
# blames, and that the source's devices were resumed. Damage to the channel
# comes from tests/chanproxy (a flipped byte, a cut). No sleep synchronises
# anything: the script polls, bounded, for what a process has printed.
# Conditions reach check() as strings, evaluated after each run: single quotes on purpose.
# shellcheck disable=SC2016,SC2034,SC2317
set -u
b=${top_builddir:-.}
tool="$b/tools/vfiomig"
proxy="$b/tests/chanproxy"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vfiomig-mig.XXXXXX") || exit 1
pids=""
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
n=0
fail=0

# A device that pre-copies, and one whose pre-copy surely outlasts the time a
# test needs to interrupt it (zero pages are free; 16 KiB rounds are many).
dev="sim:pci,mig=v2-p2p-precopy,state=64M"
long="sim:pci,mig=v2-p2p-precopy,state=2G"
long_opts="--round-bytes 16K --max-rounds 1000000"

# check DESCRIPTION COND...: one TAP line; on failure, what both sides said.
check() {
	desc=$1
	shift
	n=$((n + 1))
	if "$@"; then
		echo "ok $n - $desc"
	else
		echo "not ok $n - $desc"
		echo "# source exit ${src_rc:-?}, destination exit ${dst_rc:-?}"
		for f in s.err d.err s.out d.out p.err; do
			[ -s "$tmp/$f" ] && sed "s/^/# $f: /" "$tmp/$f"
		done
		fail=1
	fi
}

has() { grep -F -q -e "$2" "$tmp/$1"; }
# json FILE KEY: the values of KEY in a JSON summary, one per line.
json() { sed -n "s/^ *\"$2\": \\(.*\\)\$/\\1/p" "$tmp/$1" | sed 's/,$//'; }

# wait_for FILE TEXT: until FILE (a process's output) holds TEXT; 1 after 20 s.
wait_for() {
	i=0
	until grep -F -q -e "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 2000 ] && return 1
		sleep 0.01
	done
}

# dest ARGS...: start the destination in the background ($dst_pid); wait until it listens.
dest() {
	rm -f "$tmp/d.out" "$tmp/d.err"
	"$tool" migrate "$@" >"$tmp/d.out" 2>"$tmp/d.err" &
	dst_pid=$!
	pids="$pids $dst_pid"
	wait_for "$tmp/d.err" "listening on" || echo "# the destination did not start listening"
	addr=$(sed -n 's/.*: listening on //p' "$tmp/d.err")
}

# src ARGS...: run the source in the foreground.
src() {
	"$tool" migrate "$@" >"$tmp/s.out" 2>"$tmp/s.err"
	src_rc=$?
}

# dest_done: wait for the destination; its exit status in $dst_rc (128 + N: killed by signal N).
dest_done() {
	wait "$dst_pid"
	dst_rc=$?
}

same_state() { [ -n "$(json s.out state_crc32c)" ] &&
	       [ "$(json s.out state_crc32c)" = "$(json d.out state_crc32c)" ]; }

for x in "$tool" "$proxy"; do
	if [ ! -x "$x" ]; then
		echo "not ok 1 - $x is not built"
		echo "1..1"
		exit 1
	fi
done

# ------------------------------------------------------------- successes
# Record bodies of 128-256 KiB go out as frames of their own: they must not
# overtake the small frames queued before them (their record headers).
dest --listen "unix:$tmp/r" "sim:pci,mig=v2-p2p-precopy,state=16M" --json
src "sim:pci,mig=v2-p2p-precopy,state=16M,dirty=8" --round-bytes 200K --to "$addr" --json
dest_done
check "records of 200 KiB keep their order on the wire: both exit 0, same state" \
	eval '[ "$src_rc" = 0 ] && [ "$dst_rc" = 0 ] && same_state'

dest --listen "unix:$tmp/s" "$dev" --json
src "$dev,dirty=8" --to "$addr" --json
dest_done
check "unix socket, 64 MiB pre-copy migration: both exit 0, the destination holds the source's state" \
	eval '[ $src_rc -eq 0 ] && [ "$dst_rc" -eq 0 ] && same_state &&
	      [ "$(json s.out result)" = "\"ok\"" ] && [ "$(json d.out running)" = true ] &&
	      [ "$(json s.out stream_bytes)" = "$(json d.out stream_bytes)" ]'
check "the source's summary reports pre-copy rounds, bandwidth, convergence and downtime_ms" \
	eval 'json s.out downtime_ms | grep -q "^[0-9][0-9.]*$" &&
	      [ "$(json s.out precopy_rounds | tail -n 1)" -gt 1 ] &&
	      [ "$(json s.out converged)" = true ] &&
	      json s.out bandwidth_bytes_per_s | grep -q "^[1-9][0-9]*$" &&
	      [ "$(json s.out device_state)" = "\"STOP\"" ]'
check "the unix socket file is gone after the run" eval '[ ! -e "$tmp/s" ]'

dest --listen 127.0.0.1:0 "$dev" --json
check "TCP: the destination listening on port 0 says which port it got" \
	eval 'printf "%s\n" "$addr" | grep -q "^127\.0\.0\.1:[1-9][0-9]*$"'
src "$dev,dirty=8" --to "$addr" --json
dest_done
check "TCP loopback, 64 MiB pre-copy migration: both exit 0, same state" \
	eval '[ $src_rc -eq 0 ] && [ "$dst_rc" -eq 0 ] && same_state &&
	      json s.out downtime_ms | grep -q "^[0-9][0-9.]*$"'

dest --listen "unix:$tmp/s" "$dev" "sim:pci,mig=v2-p2p-precopy,state=1M" --json
src "$dev,dirty=4" "sim:pci,mig=v2-p2p-precopy,state=1M,dirty=2" --to "$addr" --json
dest_done
check "two devices (a set): both exit 0, each destination device holds its source's state" \
	eval '[ $src_rc -eq 0 ] && [ "$dst_rc" -eq 0 ] && same_state &&
	      [ "$(json s.out state_crc32c | wc -l)" -eq 2 ] &&
	      [ "$(json s.out state_crc32c | sort -u | wc -l)" -eq 2 ]'

dest --listen "unix:$tmp/s" "$dev" --json
src "$dev,dirty=8" --to "$addr" --no-precopy --json
dest_done
check "--no-precopy: stop-and-copy only, same state" \
	eval '[ $src_rc -eq 0 ] && [ "$dst_rc" -eq 0 ] && same_state &&
	      [ "$(json s.out precopy_rounds | tail -n 1)" -eq 0 ]'

# ------------------------------------------------------------- refusals
dest --listen "unix:$tmp/s" "$dev,vendor=0x8086" --json
src "$dev" --to "$addr" --json
dest_done
check "a destination device of another kind: both exit 1, the source names the destination's reason and resumed" \
	eval '[ $src_rc -eq 1 ] && [ "$dst_rc" -eq 1 ] &&
	      has s.err "vfiomig migrate: the destination failed: " && has s.err "8086" &&
	      has s.err "source devices resumed" && [ "$(json s.out resumed)" = true ] &&
	      [ "$(json s.out failed_side)" = "\"destination\"" ] &&
	      [ "$(json s.out device_state)" = "\"RUNNING\"" ] &&
	      has d.err "device is PCI 8086" && has d.err "destination devices reset" &&
	      [ "$(json d.out running)" = false ]'

dest --listen "unix:$tmp/s" "$dev"
src "$dev" "$dev" --to "$addr"
dest_done
check "device counts differ: the destination refuses in HELLO, both say so, exit 1" \
	eval '[ $src_rc -eq 1 ] && [ "$dst_rc" -eq 1 ] &&
	      has s.err "the destination refused: the source migrates 2 devices, this destination has 1" &&
	      has d.err "the source migrates 2 devices, this destination has 1"'

# ---------------------------------------------------- a damaged channel
# proxied ARGS...: destination on $tmp/b, chanproxy ARGS from $tmp/a to it, source to $tmp/a.
proxied() {
	dest --listen "unix:$tmp/b" "$dev" --json
	rm -f "$tmp/a"
	"$proxy" --listen "$tmp/a" --connect "$tmp/b" "$@" 2>"$tmp/p.err" &
	pids="$pids $!"
	wait_for_socket "$tmp/a"
	src "$dev,dirty=8" --to "unix:$tmp/a" --json
	dest_done
}
wait_for_socket() {
	i=0
	until [ -S "$1" ]; do
		i=$((i + 1))
		[ $i -gt 2000 ] && return 1
		sleep 0.01
	done
}

proxied --flip-at 5000000
check "a byte flipped in the forward stream: the destination exits 1 reporting the corruption" \
	eval '[ "$dst_rc" -eq 1 ] && has d.err "corrupt" && has d.err "destination devices reset" &&
	      [ "$(json d.out running)" = false ]'
check "... and the source exits 1 with the destination's reason, its devices resumed" \
	eval '[ $src_rc -eq 1 ] && has s.err "the destination failed: " && has s.err "corrupt" &&
	      [ "$(json s.out resumed)" = true ]'

proxied --cut-at 5000000
check "the channel cut mid-stream: both exit 1, the source resumed, the destination reset" \
	eval '[ $src_rc -eq 1 ] && [ "$dst_rc" -eq 1 ] && [ "$(json s.out resumed)" = true ] &&
	      has s.err "source devices resumed" && has d.err "the source disappeared" &&
	      has d.err "destination devices reset"'

# ------------------------------------------------------------ signals
# interrupted WHO SIGNAL: a long pre-copy; once the destination loads, WHO gets SIGNAL.
interrupted() {
	dest --listen "unix:$tmp/s" "$long" --json
	"$tool" migrate "$long" --to "$addr" $long_opts --json >"$tmp/s.out" 2>"$tmp/s.err" &
	src_pid=$!
	pids="$pids $src_pid"
	wait_for "$tmp/d.err" "loading" || echo "# the destination did not start loading"
	if [ "$1" = source ]; then kill -"$2" "$src_pid"; else kill -"$2" "$dst_pid"; fi
	wait "$src_pid"
	src_rc=$?
	dest_done
}

interrupted destination KILL
check "the destination killed (SIGKILL) mid pre-copy: the source exits 1, says it disappeared, resumed" \
	eval '[ $src_rc -eq 1 ] && has s.err "the destination disappeared" &&
	      has s.err "source devices resumed" && [ "$(json s.out resumed)" = true ] &&
	      [ "$(json s.out device_state)" = "\"RUNNING\"" ] && [ ! -s "$tmp/d.out" ]'

interrupted source INT
check "SIGINT to the source mid pre-copy: the destination exits 1 saying the source cancelled" \
	eval '[ "$dst_rc" -eq 1 ] && has d.err "the source cancelled: interrupted by SIGINT on the source" &&
	      has d.err "destination devices reset" && [ "$(json d.out running)" = false ]'
check "... and the source exits 1, its devices resumed" \
	eval '[ $src_rc -eq 1 ] && has s.err "interrupted (SIGINT)" && [ "$(json s.out resumed)" = true ]'

interrupted destination TERM
check "SIGTERM to the destination mid pre-copy: it sends FAILED; the source says so, resumed" \
	eval '[ "$dst_rc" -eq 1 ] && [ $src_rc -eq 1 ] &&
	      has s.err "the destination failed: interrupted by SIGTERM on the destination" &&
	      [ "$(json s.out resumed)" = true ]'

# --------------------------------------------------------------- timeouts
"$tool" migrate --listen "unix:$tmp/s" "$dev" --timeout-s 1 >"$tmp/d.out" 2>"$tmp/d.err"
dst_rc=$?
check "a destination nobody connects to gives up after --timeout-s: exit 1, says so" \
	eval '[ "$dst_rc" -eq 1 ] && has d.err "no source connected" && [ ! -e "$tmp/s" ]'

# ------------------------------------------------------------ usage errors
# usage DESCRIPTION MESSAGE ARGS...: exit 2, MESSAGE on stderr, nothing on stdout.
usage() {
	desc=$1
	msg=$2
	shift 2
	src "$@"
	check "$desc" eval '[ $src_rc -eq 2 ] && [ ! -s "$tmp/s.out" ] && has s.err "$msg" &&
			    has s.err "Try '"'"'vfiomig migrate --help'"'"'."'
}
usage "neither --to nor --listen: exit 2" "missing --to ADDR (source) or --listen ADDR" "$dev"
usage "both --to and --listen: exit 2" "--to and --listen" "$dev" --to unix:/x --listen unix:/y
usage "no DEVICE: exit 2" "missing DEVICE" --to unix:/x
usage "ADDR without a port: exit 2" "is not HOST:PORT or unix:PATH" "$dev" --to localhost
usage "ADDR with a bad port: exit 2" "is not a port number" "$dev" --to localhost:99999
usage "ADDR with port 0 to connect to: exit 2" "is not a port number" "$dev" --to 127.0.0.1:0
usage "unix: without a path: exit 2" "no socket path" "$dev" --to unix:
usage "an unbracketed IPv6 address: exit 2" "in brackets" "$dev" --to ::1:4444
usage "a source option on the destination: exit 2" "is a source option" "$dev" --listen unix:/x --max-rounds 3
usage "sim and real devices mixed: exit 2" "cannot be mixed" "$dev" 0000:03:00.0 --to unix:/x
src --help
check "migrate --help: exit 0, documents the wire protocol and the JSON summary" \
	eval '[ $src_rc -eq 0 ] && has s.out "usage: vfiomig migrate" && has s.out "Wire protocol" &&
	      has s.out "state_crc32c" && has s.out "Example"'

echo "1..$n"
exit $fail
