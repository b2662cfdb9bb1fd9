#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The real-kernel rig: runs tests/kernel/guest_tests.c (libvfiomig's public
# API) and the vfiomig tool against a real Linux VFIO in a QEMU guest: edu
# through vfio-pci behind an emulated intel-iommu, and mtty mediated devices
# (the kernel's sample driver, which has v2 migration since 6.7).
#
# By default the kernel is Debian 12's linux-image-6.12.*-amd64-unsigned; its
# packages are fetched with apt-get download and unpacked into a cache (the
# host's own kernel and /boot are not touched). mtty.ko is built out of tree
# against the matching headers, and so is vfiomig_test.ko (tests/kernel/
# vfiomig_test/, our own mdev driver: v1 and v2 migration of a large,
# changing state, device DMA logging, fault injection). See docs/testing.md.
#
# Environment:
#   top_srcdir, top_builddir, CC   as `make check-kernel` passes them; by hand
#                                  the defaults are this repo, an in-tree or
#                                  private configure, and gcc
#   VFIOMIG_KERNEL_CACHE    cache (default ~/.cache/vfiomig-kernel)
#   VFIOMIG_KERNEL_VERSION  Debian kernel ABI, e.g. 6.12.117+deb12 (default:
#                           the one linux-source-6.12 offers, else the newest)
#   VFIOMIG_KERNEL_IMAGE    your own bzImage instead of Debian's ...
#   VFIOMIG_KERNEL_MODULES  ... and its modules dir (lib/modules/<version>,
#                           with modules.dep); mtty.ko is taken from there or
#                           built from VFIOMIG_MTTY_SRC (default: the
#                           tree's samples/vfio-mdev/mtty.c) against
#                           VFIOMIG_KERNEL_BUILD (default $VFIOMIG_KERNEL_MODULES/build),
#                           and vfiomig_test.ko is built against that too
#   VFIOMIG_KERNEL_TESTS    comma-separated test names to run (default: all)
#   VFIOMIG_KERNEL_SOAK     1: the soak tests too (make check-kernel SOAK=1):
#                           hundreds of migrations with random faults after
#                           the suite, in the same boot
#   VFIOMIG_KERNEL_SOAK_SEED  the soak's PRNG seed (default: the clock; the
#                           guest prints the one it used)
#   VFIOMIG_KERNEL_TIMEOUT  seconds before the guest is killed (default 300,
#                           600 with the soak)
#   VFIOMIG_KERNEL_LOG      the guest console log (default: see the end)
#   VFIOMIG_QEMU_ACCEL      QEMU accelerator (default tcg)
#   VFIOMIG_QEMU_MEM        guest RAM (default 2G: the test devices hold
#                           about 550 MiB of device state)
#   VFIOMIG_LOG             passed to the guest's library log level
#
# Exit status: 0 only if the guest printed its summary line with 0 failed.
set -euo pipefail

t_start=$(date +%s)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top_srcdir=$(cd "${top_srcdir:-$here/../..}" && pwd)
CC=${CC:-gcc}
CACHE=${VFIOMIG_KERNEL_CACHE:-${HOME:-/root}/.cache/vfiomig-kernel}
SOAK=${VFIOMIG_KERNEL_SOAK:-}
[ "$SOAK" = 0 ] && SOAK=
SOAK_SEED=${VFIOMIG_KERNEL_SOAK_SEED:-}
# The soak's 250 migrations add 15 to 35 s to the guest's 40 to 90 s on a
# busy 2-core machine (docs/testing.md); the bound leaves room for a slower one.
if [ -n "$SOAK" ]; then
	TIMEOUT=${VFIOMIG_KERNEL_TIMEOUT:-600}
else
	TIMEOUT=${VFIOMIG_KERNEL_TIMEOUT:-300}
fi
ACCEL=${VFIOMIG_QEMU_ACCEL:-tcg}
QEMU_MEM=${VFIOMIG_QEMU_MEM:-2G}

# The guest's modules (their dependencies are added from modules.dep).
GUEST_MODULES="irqbypass vfio vfio_iommu_type1 mdev vfio_pci_core vfio_pci"
# What a prepared kernel cache holds; a change here prepares it again.
# 2: the kernel headers are kept (vfiomig_test.ko is rebuilt when it changes).
CACHE_RECIPE="2 $GUEST_MODULES"

say() { printf 'kernel-rig: %s\n' "$*"; }
die() {
	printf 'kernel-rig: error: %s\n' "$*" >&2
	exit 1
}

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo -n "$@"
	else
		die "need root to run: $* (install those packages by hand)"
	fi
}

apt_updated=
apt_update_once() {
	[ -n "$apt_updated" ] && return 0
	say "apt-get update"
	as_root apt-get update -qq >/dev/null
	apt_updated=1
}

# ------------------------------------------------------------ host tools
need_pkgs=()
need() { # need COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2")
}
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need xz xz-utils
need gzip gzip
need depmod kmod
need modinfo kmod
need make make
need "${CC%% *}" build-essential
need readelf binutils
need flock util-linux
need dpkg-deb dpkg
bb=$(command -v busybox || true)
if [ -z "$bb" ] || readelf -l "$bb" 2>/dev/null | grep -q 'program interpreter'; then
	need_pkgs+=(busybox-static)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
	mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
	apt_update_once
	say "installing ${need_pkgs[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${need_pkgs[@]}" >/dev/null
	bb=$(command -v busybox)
fi
readelf -l "$bb" | grep -q 'program interpreter' && die "$bb is not statically linked"

# ------------------------------------------------------- library build dir
if [ -z "${top_builddir:-}" ]; then
	if [ -f "$top_srcdir/config.h" ] && [ -f "$top_srcdir/include/vfiomig/version.h" ]; then
		top_builddir=$top_srcdir
	else
		top_builddir=$CACHE/libbuild
		if [ ! -f "$top_builddir/config.h" ]; then
			[ -x "$top_srcdir/configure" ] || (cd "$top_srcdir" && autoreconf -fi)
			mkdir -p "$top_builddir"
			say "configuring the library in $top_builddir"
			(cd "$top_builddir" && "$top_srcdir/configure" --quiet)
		fi
	fi
	WORK=${VFIOMIG_KERNEL_WORK:-$CACHE/work}
else
	top_builddir=$(cd "$top_builddir" && pwd)
	WORK=${VFIOMIG_KERNEL_WORK:-$top_builddir/tests/kernel/out}
fi
[ -f "$top_builddir/config.h" ] || die "no config.h in $top_builddir: run configure"
mkdir -p "$WORK" "$CACHE"
LOG=${VFIOMIG_KERNEL_LOG:-$WORK/console.log}

# ----------------------------------------------------------------- kernel
# Fills KIMG (bzImage), MODDIR (module tree with modules.dep), MTTY_KO,
# KBUILD_DIR (the headers or build tree out-of-tree modules are built against).
decompress_ko() { # SRC DST
	case $1 in
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*.ko.zst) zstd -qdc "$1" >"$2" ;;
	*.ko) cp "$1" "$2" ;;
	*) die "unknown module file $1" ;;
	esac
}

build_mtty() { # BUILD_DIR MTTY_C OUT_DIR
	local out=$3
	mkdir -p "$out"
	cp "$2" "$out/mtty.c"
	echo 'obj-m := mtty.o' >"$out/Kbuild"
	# No pahole here: skip the modules' BTF (the guest does not need it).
	make -s -C "$1" M="$out" CONFIG_DEBUG_INFO_BTF_MODULES= modules >"$out/build.log" 2>&1 ||
		{ tail -20 "$out/build.log"; die "building mtty.ko against $1 failed"; }
	[ -f "$out/mtty.ko" ] || die "no mtty.ko after the build (see $out/build.log)"
}

pick_debian_kernel() {
	local srcver cand v
	if [ -n "${VFIOMIG_KERNEL_VERSION:-}" ]; then
		echo "$VFIOMIG_KERNEL_VERSION"
		return
	fi
	if ! apt-cache show linux-source-6.12 >/dev/null 2>&1; then
		# No apt lists: a kernel prepared earlier will do.
		v=$(cat "$CACHE/last-version" 2>/dev/null || true)
		if [ -n "$v" ] &&
			[ "$(cat "$CACHE/$v/.ready" 2>/dev/null)" = "$CACHE_RECIPE" ]; then
			echo "$v"
			return
		fi
		apt_update_once >&2
	fi
	srcver=$(apt-cache policy linux-source-6.12 2>/dev/null | awk '/Candidate:/ {print $2}')
	cand="${srcver%%-*}+deb12"
	if [ -n "$srcver" ] && [ "$srcver" != "(none)" ] &&
		apt-cache show "linux-image-$cand-amd64-unsigned" >/dev/null 2>&1 &&
		apt-cache show "linux-headers-$cand-amd64" >/dev/null 2>&1; then
		echo "$cand"
		return
	fi
	for v in $(apt-cache search --names-only \
		'^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' |
		sed -n 's/^linux-image-\(6\.12\.[0-9]*+deb12\)-amd64-unsigned .*/\1/p' |
		sort -rV); do
		if apt-cache show "linux-headers-$v-amd64" >/dev/null 2>&1; then
			echo "$v"
			return
		fi
	done
	if [ -f "$CACHE/last-version" ]; then
		cat "$CACHE/last-version"
		return
	fi
	die "no linux-image-6.12.*+deb12-amd64-unsigned with matching headers in apt's lists"
}

prepare_debian_kernel() {
	local abi kdir kver ver srcpkg f
	abi=$(pick_debian_kernel)
	kver="$abi-amd64"
	kdir="$CACHE/$abi"
	mkdir -p "$kdir"
	exec 9>"$kdir/.lock"
	flock 9
	if [ "$(cat "$kdir/.ready" 2>/dev/null)" != "$CACHE_RECIPE" ]; then
		local t0
		t0=$(date +%s)
		say "preparing Debian kernel $kver in $kdir (once)"
		rm -rf "$kdir/debs" "$kdir/root" "$kdir/src" "$kdir/mtty" "$kdir/guest-modules" \
			"$kdir/.ready"
		mkdir -p "$kdir/debs" "$kdir/root"
		if [ -z "$apt_updated" ] &&
			! apt-cache show "linux-image-$kver-unsigned" >/dev/null 2>&1; then
			apt_update_once
		fi
		ver=$(apt-cache show "linux-image-$kver-unsigned" |
			awk '/^Version:/ {print $2; exit}')
		[ -n "$ver" ] || die "linux-image-$kver-unsigned is not in apt's lists"
		srcpkg="linux-source-6.12=$ver"
		apt-cache show "$srcpkg" >/dev/null 2>&1 || srcpkg=linux-source-6.12
		(cd "$kdir/debs" && apt-get download -q \
			"linux-image-$kver-unsigned=$ver" "linux-headers-$kver=$ver" \
			"linux-headers-$abi-common=$ver" "linux-kbuild-$abi=$ver" "$srcpkg" \
			2> >(grep -v '^W: Download is performed unsandboxed' >&2) >/dev/null)
		for f in "$kdir"/debs/linux-image-*.deb "$kdir"/debs/linux-headers-*.deb \
			"$kdir"/debs/linux-kbuild-*.deb; do
			dpkg-deb -x "$f" "$kdir/root"
		done
		# The headers' Makefile includes the common half by absolute path.
		sed -i "s|^include /usr/src/|include $kdir/root/usr/src/|" \
			"$kdir/root/usr/src/linux-headers-$kver/Makefile"
		[ -f "$kdir/root/lib/modules/$kver/modules.dep" ] ||
			depmod -b "$kdir/root" "$kver"
		# Only samples/vfio-mdev/mtty.c from the 150 MB source tarball.
		mkdir -p "$kdir/src"
		dpkg-deb --fsys-tarfile "$kdir"/debs/linux-source-6.12_*.deb |
			tar -xO ./usr/src/linux-source-6.12.tar.xz | xz -dc |
			tar -x -C "$kdir/src" --strip-components=3 \
				linux-source-6.12/samples/vfio-mdev/mtty.c
		build_mtty "$kdir/root/usr/src/linux-headers-$kver" "$kdir/src/mtty.c" "$kdir/mtty"
		MODDIR="$kdir/root/lib/modules/$kver"
		MTTY_KO="$kdir/mtty/mtty.ko"
		collect_modules "$kdir/guest-modules"
		# Keep what a run needs (kernel, modules for the guest, mtty.c and
		# mtty.ko, the headers for vfiomig_test.ko, x86 only and without
		# vmlinux, which only BTF needs): about 90 MB instead of 350.
		rm -rf "$kdir/debs" "$kdir/root/lib" "$kdir/root/etc" "$kdir/root/usr/share" \
			"$kdir/root/usr/src/linux-headers-$kver/vmlinux"
		for f in "$kdir/root/usr/src/linux-headers-$abi-common/arch"/*; do
			[ "${f##*/}" = x86 ] || rm -rf "$f"
		done
		echo "$CACHE_RECIPE" >"$kdir/.ready"
		say "kernel $kver prepared in $(($(date +%s) - t0)) s"
	fi
	flock -u 9
	echo "$abi" >"$CACHE/last-version"
	KIMG="$kdir/root/boot/vmlinuz-$kver"
	KBUILD_DIR="$kdir/root/usr/src/linux-headers-$kver"
	GUEST_MODS="$kdir/guest-modules"
	KDESC="Debian $kver"
}

prepare_custom_kernel() {
	local build mtty_c f
	KIMG=$VFIOMIG_KERNEL_IMAGE
	MODDIR=${VFIOMIG_KERNEL_MODULES:-}
	[ -f "$KIMG" ] || die "VFIOMIG_KERNEL_IMAGE=$KIMG: no such file"
	if [ -z "$MODDIR" ] || [ ! -d "$MODDIR" ]; then
		die "set VFIOMIG_KERNEL_MODULES to the kernel's modules dir (lib/modules/<version>)"
	fi
	[ -f "$MODDIR/modules.dep" ] || die "$MODDIR has no modules.dep: run depmod"
	build=${VFIOMIG_KERNEL_BUILD:-$MODDIR/build}
	KBUILD_DIR=$build
	MTTY_KO=$(find "$MODDIR" -name 'mtty.ko*' | head -1)
	if [ -z "$MTTY_KO" ]; then
		mtty_c=
		for f in "${VFIOMIG_MTTY_SRC:-}" "$build/samples/vfio-mdev/mtty.c" \
			"$build/source/samples/vfio-mdev/mtty.c" \
			"$MODDIR/source/samples/vfio-mdev/mtty.c"; do
			[ -n "$f" ] && [ -f "$f" ] && mtty_c=$f && break
		done
		[ -n "$mtty_c" ] || die "no mtty.ko in $MODDIR and no samples/vfio-mdev/mtty.c in" \
			"$build: enable CONFIG_SAMPLE_VFIO_MDEV_MTTY=m, or set" \
			"VFIOMIG_KERNEL_BUILD" \
			"(and VFIOMIG_MTTY_SRC)"
		build_mtty "$build" "$mtty_c" "$WORK/mtty"
		MTTY_KO=$WORK/mtty/mtty.ko
	fi
	GUEST_MODS="$WORK/guest-modules"
	rm -rf "$GUEST_MODS"
	collect_modules "$GUEST_MODS"
	KDESC="custom $(basename "$MODDIR") ($KIMG)"
}

# Module path (relative to MODDIR, as modules.dep has it) of a module name.
mod_path() {
	local key=${1//-/_}
	awk -F: -v k="$key" '{ b = $1; sub(/.*\//, "", b); sub(/\.ko(\.[a-z]+)?$/, "", b);
		gsub(/-/, "_", b); if (b == k) { print $1; exit } }' "$MODDIR/modules.dep"
}

declare -A mod_seen=()
mod_order=()
add_mod_path() { # PATH (relative to MODDIR): its dependencies first
	local p=$1 line deps i
	[ -n "${mod_seen[$p]:-}" ] && return 0
	mod_seen[$p]=1
	line=$(grep -m1 -F "$p:" "$MODDIR/modules.dep" || true)
	read -r -a deps <<<"${line#*:}"
	for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
		add_mod_path "${deps[i]}"
	done
	mod_order+=("$p")
}
add_mod() { # NAME: skipped when built in
	local key=${1//-/_} p
	if [ -f "$MODDIR/modules.builtin" ] &&
		sed 's/.*\///; s/\.ko$//; s/-/_/g' "$MODDIR/modules.builtin" | grep -qx "$key"; then
		return 0
	fi
	p=$(mod_path "$1")
	[ -n "$p" ] || die "module $1 is neither in $MODDIR/modules.dep nor built in"
	add_mod_path "$p"
}

# Decompressed modules + load.list into DIR (the initramfs's /lib/modules).
collect_modules() {
	local dir=$1 p base dep params
	mkdir -p "$dir"
	: >"$dir/load.list"
	for m in $GUEST_MODULES; do
		add_mod "$m"
	done
	for dep in $(modinfo -F depends "$MTTY_KO" | tr ',' ' '); do
		add_mod "$dep"
	done
	for p in "${mod_order[@]}"; do
		base=$(basename "$p")
		base=${base%%.ko*}.ko
		decompress_ko "$MODDIR/$p" "$dir/$base"
		params=
		# The emulated IOMMU has no interrupt remapping: without this,
		# VFIO_SET_IOMMU fails with EPERM.
		[ "$base" = vfio_iommu_type1.ko ] && params=allow_unsafe_interrupts=1
		echo "$base $params" >>"$dir/load.list"
	done
	decompress_ko "$MTTY_KO" "$dir/mtty.ko"
	echo "mtty.ko" >>"$dir/load.list"
}

if [ -n "${VFIOMIG_KERNEL_IMAGE:-}" ]; then
	prepare_custom_kernel
else
	prepare_debian_kernel
fi
say "kernel: $KDESC"

# ------------------------------------------------- vfiomig_test.ko (ours)
# Built on every run (kbuild makes it a no-op when nothing changed), so a
# change to the driver needs no cache reset.
VMT_OUT=$WORK/vfiomig_test
mkdir -p "$VMT_OUT"
for f in vfiomig_test.c Kbuild; do
	cmp -s "$here/vfiomig_test/$f" "$VMT_OUT/$f" || cp "$here/vfiomig_test/$f" "$VMT_OUT/$f"
done
[ -d "$KBUILD_DIR" ] || die "no kernel build tree at $KBUILD_DIR for vfiomig_test.ko"
say "building vfiomig_test.ko against $KBUILD_DIR"
make -s -C "$KBUILD_DIR" M="$VMT_OUT" CONFIG_DEBUG_INFO_BTF_MODULES= modules \
	>"$VMT_OUT/build.log" 2>&1 ||
	{ tail -30 "$VMT_OUT/build.log"; die "building vfiomig_test.ko against $KBUILD_DIR failed"; }
if grep -q 'warning:' "$VMT_OUT/build.log"; then
	cat "$VMT_OUT/build.log"
	die "vfiomig_test.ko built with warnings"
fi

# --------------------------------------------------- guest programs (static)
BIN=$WORK/bin
mkdir -p "$BIN"
CPPF=(-I"$top_builddir" -include config.h -I"$top_srcdir/include" -I"$top_builddir/include"
	-I"$top_srcdir/lib")
CF=(-std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -fno-strict-aliasing -static)
lib_src=("$top_srcdir"/lib/*.c)
sim_src=("$top_srcdir"/lib/sim/*.c)
tool_src=("$top_srcdir"/tools/*.c)
say "building guest_tests, vfiomig and chanproxy (static, $CC)"
# shellcheck disable=SC2086
$CC "${CF[@]}" "${CPPF[@]}" "$here/guest_tests.c" "${lib_src[@]}" -o "$BIN/guest_tests" \
	>"$WORK/build-guest_tests.log" 2>&1 &
pid1=$!
# shellcheck disable=SC2086
$CC "${CF[@]}" "${CPPF[@]}" "${tool_src[@]}" "${lib_src[@]}" "${sim_src[@]}" \
	-o "$BIN/vfiomig" >"$WORK/build-vfiomig.log" 2>&1 &
pid2=$!
ok=1
# The proxy that damages the channel in the vfiomig migrate tests (small: built meanwhile).
$CC "${CF[@]}" "${CPPF[@]}" "$top_srcdir/tests/chanproxy.c" -o "$BIN/chanproxy" \
	>"$WORK/build-chanproxy.log" 2>&1 || { cat "$WORK/build-chanproxy.log"; ok=; }
wait $pid1 || { cat "$WORK/build-guest_tests.log"; ok=; }
wait $pid2 || { cat "$WORK/build-vfiomig.log"; ok=; }
[ -n "$ok" ] || die "building the guest programs failed"

# ------------------------------------------------------------- initramfs
RD=$WORK/initramfs
rm -rf "$RD"
mkdir -p "$RD/bin" "$RD/lib/modules"
cp "$bb" "$RD/bin/busybox"
cp "$here/init.sh" "$RD/init"
chmod 755 "$RD/init"
cp "$BIN/guest_tests" "$BIN/vfiomig" "$BIN/chanproxy" "$RD/bin/"
cp "$GUEST_MODS"/* "$RD/lib/modules/"
cp "$VMT_OUT/vfiomig_test.ko" "$RD/lib/modules/"
# Small devices by default; init.sh grows the ones that need more.
echo "vfiomig_test.ko state_mib=4" >>"$RD/lib/modules/load.list"
INITRD=$WORK/initramfs.cpio.gz
(cd "$RD" && find . | cpio -o -H newc --quiet) | gzip -1 >"$INITRD"

# -------------------------------------------------------------------- boot
append="console=ttyS0 intel_iommu=on panic=-1 loglevel=4"
[ -n "${VFIOMIG_KERNEL_TESTS:-}" ] && append="$append GUEST_TESTS=$VFIOMIG_KERNEL_TESTS"
[ -n "${VFIOMIG_LOG:-}" ] && append="$append VFIOMIG_LOG=$VFIOMIG_LOG"
# The kernel hands name=value parameters it does not know to /init's environment.
if [ -n "$SOAK" ]; then
	append="$append SOAK=1"
	[ -n "$SOAK_SEED" ] && append="$append SOAK_SEED=$SOAK_SEED"
	say "soak: on (the soak tests run after the suite)"
fi
rm -f "$LOG"
say "booting the guest (QEMU $ACCEL, timeout ${TIMEOUT}s); console log: $LOG"
t_boot=$(date +%s)
qrc=0
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
	-accel "$ACCEL" -cpu max -M q35 -m "$QEMU_MEM" -smp 1 \
	-device intel-iommu,intremap=off,caching-mode=on -device edu \
	-kernel "$KIMG" -initrd "$INITRD" -append "$append" \
	-display none -vga none -nic none -monitor none -serial "file:$LOG" -no-reboot \
	</dev/null >"$WORK/qemu.log" 2>&1 || qrc=$?
t_end=$(date +%s)
[ -f "$LOG" ] || : >"$LOG"
sed -i 's/\r$//' "$LOG"

# ---------------------------------------------------------------- verdict
grep -E '^(ok|not ok) [0-9]+ - |^# (throughput|migrate-downtime|soak:)' "$LOG" || true
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOG" | tail -1 || true)
failed=${summary#*passed, }
failed=${failed% failed}
passed=${summary%% passed*}
status=0
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	say "QEMU killed after ${TIMEOUT}s"
	status=1
elif [ "$qrc" != 0 ]; then
	say "QEMU exited $qrc:"
	cat "$WORK/qemu.log"
	status=1
fi
if [ -z "$summary" ]; then
	say "no summary line from the guest (panic, hang or setup crash?)"
	status=1
elif [ "$failed" != 0 ] || [ "$passed" = 0 ]; then
	status=1
fi
if [ "$status" != 0 ]; then
	say "last lines of $LOG:"
	tail -n 60 "$LOG" | sed 's/^/  | /'
fi
say "guest ran $((t_end - t_boot)) s, whole run $((t_end - t_start)) s; console log: $LOG"
if [ -n "$summary" ]; then
	echo "$summary"
else
	echo "0 passed, 1 failed"
fi
exit "$status"
