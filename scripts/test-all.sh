#!/bin/sh
# The README's second command (and exactly what .ci/run runs): install
# dependencies, then build and run every test: the unit suite with -Werror,
# the symbol and ABI guards, the real-kernel suite in a QEMU guest, the
# suite again under ASan+UBSan (leaks checked in every test), and make
# distcheck.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
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

step "make distcheck"
cd "$top/build-ci"
make -j"$jobs" distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-werror >distcheck.log 2>&1 \
	|| { tail -60 distcheck.log; status=1; }
grep -E "archives ready for distribution|^# (TOTAL|PASS|FAIL)" distcheck.log || true

echo
if [ "$status" -eq 0 ]; then echo "test-all: every step passed"; else echo "test-all: FAILED"; fi
exit "$status"
