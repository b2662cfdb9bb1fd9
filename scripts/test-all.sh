#!/bin/sh
# The README's second command (and exactly what .ci/run runs): install
# dependencies, then build and run every test: the unit suite with -Werror
# (the fault sweep, the fuzz corpus replayed with its expected results and
# the tool's two-process migrations included), the symbol and ABI guards,
# the real-kernel suite in a QEMU guest, the suite again under gcc
# ASan+UBSan, clang, clang ASan+UBSan and gcc ThreadSanitizer, a libFuzzer
# smoke run of every fuzz target, make distcheck, and, in a git checkout,
# that none of it left a file behind.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

# A clean clone must stay clean: every build product either lives in a
# build-*/ directory or is in .gitignore. Only checked when $top is itself
# the top of a git work tree (not a tarball unpacked somewhere inside one).
in_git=no
if command -v git >/dev/null 2>&1 &&
	[ "$(git -C "$top" rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ]; then
	in_git=yes
	dirty_before=$(git -C "$top" status --porcelain --untracked-files=all)
fi
scripts/install-deps.sh
autoreconf -fi >/dev/null 2>&1 || autoreconf -fi

jobs=$(nproc)
status=0
step() {
	echo
	echo "== $* =="
}

step "build (-Werror) and make check"
rm -rf build-ci && mkdir build-ci && cd build-ci
"$top/configure" --quiet --enable-werror
make -j"$jobs" --quiet
make -j"$jobs" check || { cat test-suite.log 2>/dev/null | tail -100; status=1; }

step "make check-abi"
make check-abi || status=1

step "make check-kernel (Linux 6.12 VFIO in a QEMU guest)"
make check-kernel || status=1

step "ASan + UBSan build and make check"
cd "$top"
rm -rf build-asan && mkdir build-asan && cd build-asan
"$top/configure" --quiet --enable-werror --enable-asan
make -j"$jobs" --quiet
make -j"$jobs" check || { cat test-suite.log 2>/dev/null | tail -100; status=1; }

step "clang build (-Werror) and make check"
cd "$top"
rm -rf build-clang && mkdir build-clang && cd build-clang
"$top/configure" --quiet --enable-werror CC=clang
make -j"$jobs" --quiet
make -j"$jobs" check || { cat test-suite.log 2>/dev/null | tail -100; status=1; }

step "clang ASan + UBSan build and make check"
cd "$top"
rm -rf build-clang-asan && mkdir build-clang-asan && cd build-clang-asan
"$top/configure" --quiet --enable-werror --enable-asan CC=clang
make -j"$jobs" --quiet
make -j"$jobs" check || { cat test-suite.log 2>/dev/null | tail -100; status=1; }

# gcc, not clang: gcc's TSan runtime is a shared library, so the libraries keep
# -Wl,--no-undefined (clang 14's crashes at start-up), and compile-modes' gcc
# programs run on the same runtime; clang is built above (docs/toolchains.md).
# A race report fails its test.
step "ThreadSanitizer build (gcc) and make check"
cd "$top"
rm -rf build-tsan && mkdir build-tsan && cd build-tsan
"$top/configure" --quiet --enable-werror --enable-tsan
make -j"$jobs" --quiet
make -j"$jobs" check || { cat test-suite.log 2>/dev/null | tail -100; status=1; }

step "make fuzz (libFuzzer smoke run: ${FUZZ_SMOKE_SECONDS:-20} s per target, docs/fuzzing.md)"
cd "$top/build-ci"
make fuzz FUZZ_SECONDS="${FUZZ_SMOKE_SECONDS:-20}" >fuzz.log 2>&1 || { tail -80 fuzz.log; status=1; }
grep -E "^== fuzz_|DONE|^stat::(number_of_executed_units|average_exec_per_sec)" fuzz.log || true

step "make distcheck"
cd "$top/build-ci"
make -j"$jobs" distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-werror >distcheck.log 2>&1 \
	|| { tail -60 distcheck.log; status=1; }
grep -E "archives ready for distribution|^# (TOTAL|PASS|FAIL)" distcheck.log || true

if [ "$in_git" = yes ]; then
	step "git status clean after the builds"
	dirty=$(git -C "$top" status --porcelain --untracked-files=all)
	if [ -n "$dirty" ]; then
		echo "the run left modified or untracked files in the source tree (ignore or stop generating them):"
		printf '%s\n' "$dirty" | sed 's/^/  /'
		if [ -n "$dirty_before" ]; then
			echo "(already there before the run, so not necessarily made by it:)"
			printf '%s\n' "$dirty_before" | sed 's/^/  /'
		fi
		status=1
	else
		echo "git status: clean"
	fi
fi

echo
if [ "$status" -eq 0 ]; then echo "test-all: every step passed"; else echo "test-all: FAILED"; fi
exit "$status"
