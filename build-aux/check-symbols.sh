#!/bin/sh
# Exported symbols must be exactly those in the version scripts, all
# vfiomig_-prefixed, and each versioned with the node that lists it. The
# node names are read from the .sym files, so adding a release node (which
# inherits the last) needs no change here. Emits TAP.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
n=0; fail=0

# Print "node NAME" for every version node and "sym NAME NODE" for every
# name in a node's global list. Handles /* */ comments over several lines,
# "global:"/"local:" sections (global when neither is given) and the
# "} PARENT;" that makes a node inherit another.
parse_sym() {
	awk '
	{
		line = $0; out = ""
		while (line != "") {
			if (incomment) {
				i = index(line, "*/")
				if (!i) { line = ""; break }
				line = substr(line, i + 2); incomment = 0
			} else {
				i = index(line, "/*")
				if (!i) { out = out line; line = "" }
				else { out = out substr(line, 1, i - 1) " "; line = substr(line, i + 2); incomment = 1 }
			}
		}
		text = text " " out
	}
	END {
		gsub(/[{};:]/, " & ", text)
		nt = split(text, tok, /[ \t\r]+/)
		state = "node"; node = ""
		for (k = 1; k <= nt; k++) {
			t = tok[k]
			if (t == "")
				continue
			if (state == "node") {          # NAME {
				if (t == "{") {
					if (node == "") { print "error anonymous version node"; exit 1 }
					state = "body"; section = "global"
				} else if (node != "") {
					print "error expected { after " node; exit 1
				} else {
					node = t; print "node " t
				}
			} else if (state == "body") {   # global: a; b; local: *;
				if (t == "}") {
					state = "parents"
				} else if ((t == "global" || t == "local") && tok[k + 1] == ":") {
					section = t; k++
				} else if (t != ";" && section == "global") {
					print "sym " t " " node
				}
			} else if (t == ";") {          # } PARENT ... ;
				state = "node"; node = ""
			}
		}
		if (state != "node") { print "error unterminated node " node; exit 1 }
	}' "$1"
}

check() { # lib sym
	n=$((n + 1))
	so="$b/lib/.libs/$1.so"
	if ! parsed=$(parse_sym "$s/$2") || printf '%s\n' "$parsed" | grep -q '^error'; then
		echo "not ok $n - $1: cannot parse $2: $(printf '%s\n' "$parsed" | sed -n 's/^error //p')"
		fail=1; return
	fi
	nodes=$(printf '%s\n' "$parsed" | sed -n 's/^node //p')
	# name@NODE, as nm prints a default version (name@@NODE) minus one @.
	exp=$(printf '%s\n' "$parsed" | sed -n 's/^sym \([^ ]*\) \(.*\)/\1@\2/p' | sort)
	got=$(nm -D --defined-only "$so" 2>/dev/null | awk '$2 ~ /^[TDBRVWi]$/ {print $3}' \
		| sed 's/@@/@/' | sort)
	bad=$(printf '%s\n' "$got" | while IFS= read -r sym; do
		case $sym in vfiomig_*@*) ;; *) echo "$sym"; continue ;; esac
		printf '%s\n' "$nodes" | grep -qxF "${sym#*@}" || echo "$sym"
	done)
	if [ -z "$nodes" ]; then
		echo "not ok $n - $1: no version node in $2"; fail=1
	elif [ -z "$got" ]; then
		echo "not ok $n - $1: no exported symbols found in $so"; fail=1
	elif [ -n "$bad" ]; then
		echo "not ok $n - $1: symbols that are not vfiomig_* or not in a node of $2 ($(echo $nodes)):"
		printf '# %s\n' $bad; fail=1
	elif [ "$got" != "$exp" ]; then
		echo "not ok $n - $1: exported set (symbol@node) differs from $2"
		printf '%s\n' "$exp" > "$b/$1.sym.expected"; printf '%s\n' "$got" > "$b/$1.sym.got"
		diff "$b/$1.sym.expected" "$b/$1.sym.got" | sed 's/^/# /'; fail=1
	else
		echo "ok $n - $1: $(printf '%s\n' "$got" | wc -l) symbols, all vfiomig_*, each in its node of $(echo $nodes)"
	fi
}
check libvfiomig lib/libvfiomig.sym
check libvfiomig-sim lib/sim/libvfiomig-sim.sym
echo "1..$n"
exit $fail
