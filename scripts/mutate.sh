#!/bin/sh
# Mutation testing: does the test suite notice when the library is wrong?
#
# Each mutant of scripts/mutants.txt is a small change to one file of lib/
# (a boundary moved by one, a check dropped, an error taken for success).
# This script copies the source tree into a private directory (the tree
# itself is never touched: others may be building it), builds it once,
# then for every mutant: applies it, rebuilds incrementally, runs the tests
# with a time limit, and restores the file. A mutant is KILLED when a test
# fails (or the run times out), and SURVIVES when every test still passes:
# the suite cannot tell that code from the real one.
#
# Usage: scripts/mutate.sh [options] [ID-PATTERN...]
#   -l FILE     the mutant list (default: scripts/mutants.txt)
#   -j N        make jobs (default: nproc)
#   -t SECONDS  time limit of one mutant's test run (default: 5 x the clean run, >= 60)
#   -q          quick: the criterion test programs only (not the shell tests)
#   -e          also run the mutants marked equivalent (to check the mark)
#   -k          keep the private copy (its path is printed)
#   -c          only check that every mutant still applies (no build)
# ID-PATTERN: shell patterns on mutant ids (e.g. 'v2-*'); default: all.
#
# Exit status: 0 when every mutant not marked equivalent was killed, 1 when
# some survived, 2 when the list is stale (a match not found exactly once),
# a mutant does not compile, or the clean tree fails its own tests.
# See docs/mutation.md.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
list=$top/scripts/mutants.txt
jobs=$(nproc 2>/dev/null || echo 2)
limit=
quick=no
run_equiv=no
keep=no
check_only=no
while getopts l:j:t:qekc opt; do
	case $opt in
	l) list=$(cd "$(dirname "$OPTARG")" && pwd)/$(basename "$OPTARG") ;;
	j) jobs=$OPTARG ;;
	t) limit=$OPTARG ;;
	q) quick=yes ;;
	e) run_equiv=yes ;;
	k) keep=yes ;;
	c) check_only=yes ;;
	*) sed -n '/^# Usage/,/^# ID-PATTERN/s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ -r "$list" ] || { echo "mutate: cannot read $list" >&2; exit 2; }
if [ -f "$top/config.status" ]; then
	echo "mutate: $top is configured in-tree (config.status): make distclean there first" >&2
	exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vfiomig-mutate.XXXXXX")
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ "$keep" = yes ]; then
		echo "mutate: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------- the mutant list, in perl
# (perl is already required by automake.) Format: see the top of mutants.txt.
cat >"$work/mutant.pl" <<'PERL'
use strict;
use warnings;

sub parse {
	my ($file) = @_;
	open(my $fh, '<', $file) or die "mutate: $file: $!\n";
	my (@m, $cur);
	while (my $line = <$fh>) {
		chomp $line;
		if ($line =~ /^\[([A-Za-z0-9._-]+)\]\s+(\S+?):\s*(.*)$/) {
			$cur = { id => $1, file => $2, desc => $3, minus => [], plus => [],
				 equiv => '', line => $. };
			push @m, $cur;
		} elsif ($line =~ /^\s*(#|$)/) {
			next;
		} elsif (!$cur) {
			die "mutate: $file:$.: text before the first [id] line\n";
		} elsif ($line =~ /^-(?:[ \t]|$)(.*)$/) {
			push @{$cur->{minus}}, $1;
		} elsif ($line =~ /^\+(?:[ \t]|$)(.*)$/) {
			push @{$cur->{plus}}, $1;
		} elsif ($line =~ /^equivalent:\s*(.+)$/) {
			$cur->{equiv} = $1;
		} else {
			die "mutate: $file:$.: not a '- match', '+ replacement' or 'equivalent:' line\n";
		}
	}
	my %seen;
	for my $x (@m) {
		die "mutate: $file:$x->{line}: [$x->{id}] has no '- match' line\n" unless @{$x->{minus}};
		die "mutate: $file:$x->{line}: id [$x->{id}] used twice\n" if $seen{$x->{id}}++;
	}
	return @m;
}

# The match as a regex: its words literal, any run of white space matching any run.
sub pattern {
	my ($x) = @_;
	my $text = join("\n", @{$x->{minus}});
	$text =~ s/^\s+|\s+$//g;
	my $re = join('\s+', map { quotemeta } split(/\s+/, $text));
	return qr/$re/;
}

my ($cmd, $listfile, @rest) = @ARGV;
my @m = parse($listfile);
if ($cmd eq 'list') {
	# index TAB id TAB file TAB equivalent(0/1) TAB description
	for my $i (0 .. $#m) {
		my $x = $m[$i];
		print join("\t", $i, $x->{id}, $x->{file}, $x->{equiv} ne '' ? 1 : 0, $x->{desc}), "\n";
	}
} elsif ($cmd eq 'equiv') {
	print $m[$rest[0]]{equiv}, "\n";
} elsif ($cmd eq 'apply' || $cmd eq 'check') {
	# apply: rewrite the file in place; check: only count the matches. Exit 3 if not exactly one.
	my ($i, $src) = @rest;
	my $x = $m[$i];
	my $path = "$src/$x->{file}";
	open(my $fh, '<', $path) or die "mutate: [$x->{id}] $path: $!\n";
	local $/;
	my $code = <$fh>;
	close $fh;
	my $re = pattern($x);
	my $n = () = $code =~ /$re/g;
	if ($n != 1) {
		print STDERR "mutate: [$x->{id}] $x->{file}: the match is found $n times (must be once)\n";
		exit 3;
	}
	my $repl = join("\n", @{$x->{plus}});
	$repl =~ s/^\s+//;
	if ($cmd eq 'apply') {
		$code =~ s/$re/$repl/;
		open($fh, '>', $path) or die "mutate: $path: $!\n";
		print $fh $code;
		close $fh;
	}
} else {
	die "mutate: unknown command $cmd\n";
}
PERL
mut() { perl "$work/mutant.pl" "$@"; }

# Select the mutants.
mut list "$list" >"$work/all.tsv"
: >"$work/sel.tsv"
while IFS='	' read -r idx id file eq desc; do
	if [ $# -gt 0 ]; then
		hit=no
		for pat in "$@"; do
			# shellcheck disable=SC2254
			case $id in $pat) hit=yes ;; esac
		done
		[ $hit = yes ] || continue
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$idx" "$id" "$file" "$eq" "$desc" >>"$work/sel.tsv"
done <"$work/all.tsv"
total=$(wc -l <"$work/sel.tsv")
[ "$total" -gt 0 ] || { echo "mutate: no mutant selected" >&2; exit 2; }

# Every selected mutant must still apply to the tree as it is now.
stale=0
while IFS='	' read -r idx id file eq desc; do
	mut check "$list" "$idx" "$top" || stale=$((stale + 1))
done <"$work/sel.tsv"
if [ $stale -gt 0 ]; then
	echo "mutate: $stale mutant(s) no longer apply: update $list" >&2
	exit 2
fi
if [ "$check_only" = yes ]; then
	echo "mutate: all $total mutant(s) apply"
	exit 0
fi

# ----------------------------------------------------- the private copy
start=$(date +%s)
src=$work/src
build=$work/build
mkdir -p "$src" "$build"
# Everything but .git and the build directories (any directory holding a config.status).
excl=$work/exclude
printf '%s\n' ./.git ./autom4te.cache >"$excl"
for d in "$top"/*/; do
	[ -f "$d/config.status" ] && printf './%s\n' "$(basename "$d")" >>"$excl"
done
tar -C "$top" -X "$excl" -cf - . | tar -C "$src" -xf -
if [ ! -x "$src/configure" ]; then
	echo "mutate: autoreconf (no configure in the tree)"
	(cd "$src" && autoreconf -fi >/dev/null 2>&1)
fi
echo "mutate: private copy in $work; configure and build (make -j$jobs)"
(cd "$build" && "$src/configure" --quiet >configure.log 2>&1) ||
	{ tail -20 "$build/configure.log"; echo "mutate: configure failed" >&2; exit 2; }

# The tests to run: make check's, less those a change to lib/*.c cannot move.
# shellcheck disable=SC2016 # $(TESTS) is for make
all_tests=$(cd "$build" && printf 'print-tests:\n\t@echo $(TESTS)\n' |
	make -s --no-print-directory -f Makefile -f - print-tests)
tests=
for t in $all_tests; do
	case $t in
	build-aux/check-symbols.sh | tests/compile-modes.sh) continue ;;
	*.sh) [ "$quick" = yes ] && continue ;;
	esac
	tests="$tests $t"
done

build_all() { make -C "$build" -j"$jobs" check TESTS= >"$1" 2>&1; }
run_tests() {
	# Its own process group: on time-out timeout(1) ends make and every test it started.
	timeout -k 10 "$1" make -C "$build" -j"$jobs" check TESTS="$tests" >"$2" 2>&1
}
failed_tests() {
	grep -E '^(FAIL|ERROR|XPASS): ' "$1" | sed 's/^[A-Z]*: //; s/ *([0-9.]*s)$//' | head -3 |
		tr '\n' ';' | sed 's/;$//; s/;/; /g'
}

build_all "$work/build0.log" ||
	{ tail -30 "$work/build0.log"; echo "mutate: the clean tree does not build" >&2; exit 2; }
t0=$(date +%s)
run_tests 1800 "$work/run0.log" ||
	{ grep -E '^(FAIL|ERROR)' "$work/run0.log" | head; echo "mutate: the clean tree fails its tests" >&2; exit 2; }
clean_s=$(($(date +%s) - t0))
if [ -z "$limit" ]; then
	limit=$((clean_s * 5))
	[ "$limit" -ge 60 ] || limit=60
fi
echo "mutate: clean build passes ($(echo "$tests" | wc -w) test programs, ${clean_s}s); $total mutant(s), ${limit}s limit each"
echo

# ------------------------------------------------------------ the mutants
: >"$work/results.tsv"
n=0
while IFS='	' read -r idx id file eq desc; do
	n=$((n + 1))
	label=$(printf '[%2d/%d] %-28s %-16s' "$n" "$total" "$id" "$file")
	if [ "$eq" = 1 ] && [ "$run_equiv" = no ]; then
		printf '%s EQUIVALENT (%s)\n' "$label" "$(mut equiv "$list" "$idx")"
		printf '%s\t%s\tequivalent\n' "$file" "$id" >>"$work/results.tsv"
		continue
	fi
	t1=$(date +%s)
	cp -p "$src/$file" "$work/orig"
	mut apply "$list" "$idx" "$src"
	if ! build_all "$work/m.log"; then
		result="build-fail"
		detail=$(grep -m1 -E 'error:' "$work/m.log" || echo "see the build log")
	elif run_tests "$limit" "$work/m.log"; then
		result=survived
		detail=$desc
	else
		rc=$?
		result=killed
		if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
			detail="time-out after ${limit}s"
		else
			detail=$(failed_tests "$work/m.log")
			[ -n "$detail" ] || detail="make check failed (rc $rc)"
		fi
	fi
	# Restore, newer than the mutant's objects, so the next build recompiles it.
	cp "$work/orig" "$src/$file"
	touch "$src/$file"
	secs=$(($(date +%s) - t1))
	if [ "$eq" = 1 ] && [ $result = killed ]; then
		result="killed-equiv"
		detail="marked equivalent, but killed by: $detail"
	fi
	case $result in
	killed) word=KILLED ;;
	survived) word=SURVIVED ;;
	killed-equiv) word="KILLED (stale equivalent mark)" ;;
	*) word=BUILD-FAIL ;;
	esac
	[ "$eq" = 1 ] && [ $result = survived ] && { result=equivalent; word="EQUIVALENT (survived, as marked)"; }
	printf '%s %s %3ss  %s\n' "$label" "$word" "$secs" "$detail"
	printf '%s\t%s\t%s\n' "$file" "$id" "$result" >>"$work/results.tsv"
done <"$work/sel.tsv"

# ------------------------------------------------------------- the score
echo
echo "per-file scores (killed / mutants not marked equivalent):"
awk -F'\t' '
	{ f[$1] = 1; if ($3 != "equivalent" && $3 != "killed-equiv") tot[$1]++;
	  if ($3 == "killed") k[$1]++; if ($3 == "equivalent" || $3 == "killed-equiv") eq[$1]++ }
	END { for (x in f) printf "  %-20s %3d / %-3d%s\n", x, k[x], tot[x],
		eq[x] ? sprintf("  (+%d equivalent)", eq[x]) : "" }' "$work/results.tsv" | sort
killed=$(awk -F'\t' '$3 == "killed"' "$work/results.tsv" | wc -l)
counted=$(awk -F'\t' '$3 != "equivalent" && $3 != "killed-equiv"' "$work/results.tsv" | wc -l)
survivors=$(awk -F'\t' '$3 == "survived" { print "  " $2 " (" $1 ")" }' "$work/results.tsv")
broken=$(awk -F'\t' '$3 == "build-fail" { print "  " $2 " (" $1 ")" }' "$work/results.tsv")
echo "total: $killed / $counted killed in $(($(date +%s) - start))s"
status=0
if [ -n "$survivors" ]; then
	echo "survivors (add a test that kills them, or mark them equivalent with the reason):"
	echo "$survivors"
	status=1
fi
if [ -n "$broken" ]; then
	echo "mutants that do not compile (fix them in $list):"
	echo "$broken"
	status=2
fi
exit $status
