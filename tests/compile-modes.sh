#!/bin/sh
# The public headers in every language mode a caller may build with,
# warnings as errors: examples/opts-tour.c (C) and tests/compile/opts_tour.cc
# (C++) use every sized struct of include/vfiomig/*.h (VFIOMIG_OPTS in C and
# C++20, vfiomig_opts<T>() before C++20). One TAP line per mode; the gcc C99
# build and the g++ builds are also linked against the built libraries and
# run. A mode whose compiler is missing fails (scripts/install-deps.sh
# installs them all). Emits TAP.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
n=0
fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vfiomig-modes.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

libdir=$(cd "$b/lib/.libs" 2>/dev/null && pwd)
# A sanitizer build of the libraries needs the same runtime in what links them.
san_cflags=$(sed -n 's/^SAN_CFLAGS = //p' "$b/Makefile" 2>/dev/null)
san_ldflags=$(sed -n 's/^SAN_LDFLAGS = //p' "$b/Makefile" 2>/dev/null)
# A clang sanitizer build carries clang's runtime in the libraries: a gcc or g++
# program would load a second runtime beside it, which aborts. There the run
# modes only compile (docs/toolchains.md).
clang_san=$(sed -n 's/^SAN_LT_LDFLAGS = //p; s/^SAN_LIB_LDFLAGS = //p' "$b/Makefile" 2>/dev/null |
	tr -d ' ')

diag() { sed -n 's/^/# /; 1,60p' "$1"; }

# mode LINK SOURCE COMPILER FLAGS...  (LINK: run = also link and run, cc = compile only)
mode() {
	link=$1 src=$2 cc=$3
	shift 3
	n=$((n + 1))
	desc="$cc $* -Werror: $src"
	if ! command -v "$cc" >/dev/null 2>&1; then
		echo "not ok $n - $desc: compiler $cc not found (run scripts/install-deps.sh)"
		fail=1
		return
	fi
	exe="$tmp/prog$n"
	if [ "$link" = run ] && [ -n "$clang_san" ]; then
		link=cc
		desc="$desc (compile only: the libraries carry clang's sanitizer runtime)"
	fi
	if [ "$link" = run ]; then
		# shellcheck disable=SC2086 # the flag lists are meant to split
		set -- "$@" -Werror $san_cflags -I"$s/include" -I"$b/include" "$s/$src" -o "$exe" \
			$san_ldflags -L"$libdir" -lvfiomig-sim -lvfiomig
	else
		set -- "$@" -Werror -I"$s/include" -I"$b/include" -c "$s/$src" -o "$exe.o"
	fi
	if ! "$cc" "$@" >"$tmp/log" 2>&1; then
		echo "not ok $n - $desc"
		diag "$tmp/log"
		fail=1
		return
	fi
	echo "ok $n - $desc"
	[ "$link" = run ] || return 0
	n=$((n + 1))
	if LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$exe" >"$tmp/log" 2>&1 &&
		grep -q "done, nothing leaked" "$tmp/log"; then
		echo "ok $n - $src built by $cc $1 runs: migrates a simulated device, leaks nothing"
		diag "$tmp/log"
	else
		echo "not ok $n - $src built by $cc $1 runs (see its output below)"
		diag "$tmp/log"
		fail=1
	fi
}

c=examples/opts-tour.c
cxx=tests/compile/opts_tour.cc
mode run $c gcc -std=c99 -pedantic -Wall -Wextra -Wpadded
mode cc $c gcc -std=c11 -Wall -Wextra -Wpadded
mode cc $c clang -std=c99 -pedantic -Wall -Wextra
mode run $cxx g++ -std=c++17 -Wall -Wextra
mode cc $cxx clang++ -std=c++17 -Wall -Wextra
mode run $cxx g++ -std=c++20 -Wall -Wextra -pedantic
mode cc $cxx clang++ -std=c++20 -Wall -Wextra -pedantic
echo "1..$n"
exit $fail
