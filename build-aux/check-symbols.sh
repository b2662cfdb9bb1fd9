#!/bin/sh
# Exported symbols must be exactly those in the version scripts, all
# vfiomig_-prefixed and versioned. Emits TAP.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
n=0; fail=0
check() { # lib sym node
	n=$((n + 1))
	so="$b/lib/.libs/$1.so"
	exp=$(sed -n 's/^[[:space:]]*\(vfiomig_[a-z0-9_]*\);.*/\1/p' "$s/$2" | sort)
	got=$(nm -D --defined-only "$so" 2>/dev/null | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort)
	bad=$(printf '%s\n' "$got" | grep -v "^vfiomig_.*@@\?$3" || true)
	names=$(printf '%s\n' "$got" | sed 's/@.*//' | grep -v "^$3\$" | sort)
	if [ -z "$got" ]; then
		echo "not ok $n - $1: no exported symbols found in $so"; fail=1
	elif [ -n "$bad" ]; then
		echo "not ok $n - $1: symbols that are not vfiomig_* in node $3:"; printf '# %s\n' $bad; fail=1
	elif [ "$names" != "$exp" ]; then
		echo "not ok $n - $1: exported set differs from $2"
		printf '%s\n' "$exp" > "$b/$1.sym.expected"; printf '%s\n' "$names" > "$b/$1.sym.got"
		diff "$b/$1.sym.expected" "$b/$1.sym.got" | sed 's/^/# /'; fail=1
	else
		echo "ok $n - $1: $(printf '%s\n' "$names" | wc -l) symbols, all vfiomig_*, all in $3"
	fi
}
check libvfiomig lib/libvfiomig.sym VFIOMIG_0.1
check libvfiomig-sim lib/sim/libvfiomig-sim.sym VFIOMIG_SIM_0.1
echo "1..$n"
exit $fail
