#!/bin/sh
# Install what building and testing libvfiomig needs on Debian 12 (as root, or through sudo).
set -eu
PKGS="build-essential autoconf automake libtool pkg-config libcriterion-dev \
libnl-3-dev libnl-genl-3-dev abigail-tools xz-utils \
qemu-system-x86 busybox-static cpio kmod clang libclang-rt-14-dev"
# libclang-rt-14-dev: libFuzzer and the sanitizer runtimes of Debian 12's clang-14 (make fuzz,
# configure CC=clang --enable-asan / --enable-tsan); clang only recommends it, and the install
# below skips recommendations. gcc's (libasan8, libtsan2, libubsan1) come with build-essential.
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "install-deps: installing:$missing"
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
else
	echo "install-deps: everything is installed"
fi
