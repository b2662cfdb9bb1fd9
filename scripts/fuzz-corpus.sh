#!/bin/sh
# Regenerate the fuzz seed corpus and its manifests, on purpose:
#
#   scripts/fuzz-corpus.sh BUILDDIR
#
# BUILDDIR is a configured and built tree (`make check` there builds the
# replayers tests/fuzz/fuzz_stream and tests/fuzz/fuzz_return; `make`
# builds tools/vfiomig). It rewrites
#
#   tests/data/fuzz/stream/   streams: `vfiomig save` of every simulated
#                             device kind and protocol (small states), the
#                             golden streams of tests/data/streams, and
#                             streams only the library's API can make (a
#                             VMM config record, a cancelled save)
#   tests/data/fuzz/return/   return-path messages: the golden
#                             return-path.bin and what a real destination
#                             sends back (loaded, failed, ack only)
#
# plus, in both, the inputs the fuzzers found that are kept for good
# (tests/data/fuzz/found/TARGET/*.bin, copied as found-*.bin),
# and each directory's EXPECTED manifest: one line per seed, its file name
# and the outcome the replayer reports for it (inspect and load results
# and the loaded state's CRC32C; the return_recv results at each stage of
# the save), which `make check` then requires of every build. Review the
# diff of EXPECTED before committing: a changed line is a changed
# behaviour. The `vfiomig save` streams are deterministic (the simulated
# devices are named and seeded the same way every time).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -ne 1 ]; then
	echo "usage: $0 BUILDDIR" >&2
	exit 2
fi
b=$(cd "$1" && pwd)
tool=$b/tools/vfiomig
fs=$b/tests/fuzz/fuzz_stream
fr=$b/tests/fuzz/fuzz_return
for x in "$tool" "$fs" "$fr"; do
	[ -x "$x" ] || { echo "$0: $x is missing: run make and make check in $b first" >&2; exit 1; }
done
s=$top/tests/data/fuzz/stream
r=$top/tests/data/fuzz/return
rm -rf "$s" "$r"
mkdir -p "$s" "$r"

# Every simulated kind and protocol, 8 KiB of state that changes while it is
# saved (dirty=1), so the streams carry pre-copy rounds and re-sent pages.
for kind in pci mdev; do
	for mig in v1 v1-trapped v2 v2-p2p v2-precopy v2-p2p-precopy; do
		"$tool" save "sim:$kind,mig=$mig,state=8K,dirty=1" --allow-v1 --rounds 1 \
			-o "$s/save-$kind-$mig.bin" >/dev/null
	done
done
"$tool" save sim:pci,mig=v2-p2p-precopy,state=8K,dirty=1 --no-precopy \
	-o "$s/save-pci-v2-p2p-precopy-noprecopy.bin" >/dev/null
"$tool" save sim:mdev,mig=v1,state=8K,dirty=1 --allow-v1 --no-precopy \
	-o "$s/save-mdev-v1-noprecopy.bin" >/dev/null

for f in "$top"/tests/data/streams/*.bin; do
	case $f in
	*/return-path.bin) cp "$f" "$r/golden-return-path.bin" ;;
	*) cp "$f" "$s/golden-$(basename "$f")" ;;
	esac
done
"$fs" --make-seeds "$s"
"$fr" --make-seeds "$r"
# Inputs the fuzzers found, kept once the bug is fixed (tests/data/fuzz/found/TARGET/,
# see docs/fuzzing.md): they stay in the corpus for good.
for t in stream return; do
	for f in "$top/tests/data/fuzz/found/$t"/*.bin; do
		[ -e "$f" ] || continue
		cp "$f" "$top/tests/data/fuzz/$t/found-$(basename "$f")"
	done
done

manifest() {
	echo "# Seeds of tests/fuzz/fuzz_$1 and the outcome each must have (make check replays"
	echo "# them): written by scripts/fuzz-corpus.sh; see docs/fuzzing.md. Do not edit by hand."
	(cd "$2" && "$3" --describe ./*.bin) | sed 's|^\./||'
}
manifest stream "$s" "$fs" >"$s/EXPECTED"
manifest return "$r" "$fr" >"$r/EXPECTED"
echo "fuzz-corpus: $(find "$s" -name "*.bin" | wc -l) stream seeds, $(find "$r" -name "*.bin" | wc -l) return-path seeds"
