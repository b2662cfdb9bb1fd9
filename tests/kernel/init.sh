#!/bin/busybox sh
# shellcheck shell=dash
# SPDX-License-Identifier: MIT
# /init of the real-kernel rig's initramfs (packed by tests/kernel/run.sh):
# mounts, loads the VFIO modules, binds edu to vfio-pci, creates the mtty
# and vfiomig_test devices, runs /bin/guest_tests and powers off. Every line
# it prints goes to the console log; a setup failure is reported as a
# failing test so the host always finds a summary line unless the kernel
# itself died.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

# mtty-2 devices by role (see enum in guest_tests.c) and one mtty-1.
u=6f3b1a00-0000-4000-8000-0000000000
MTTY_UUIDS="${u}0a ${u}0b ${u}0c ${u}0d ${u}0e ${u}0f ${u}10 ${u}11 ${u}12 ${u}13"
MTTY1_UUID=${u}01

# vfiomig_test devices by role (see the V_* enum in guest_tests.c), as
# TYPE:STATE_SIZE; the module is loaded with 4 MiB devices (load.list).
VMT_SPECS="v2:64M v2:64M v1:64M v1:64M v12:4M v12:4M v2:4M v2:4M v1:4M v1:4M v2:1M v2:1M v2:256M"

setup_failed() {
	echo "vfiomig-guest: setup failed: $*"
	echo "not ok 1 - guest_setup: $*"
	echo "--- dmesg ---"
	dmesg | tail -40
	echo "0 passed, 1 failed"
	poweroff -f
	sleep 10
}

echo "vfiomig-guest: kernel $(uname -r), $(cat /proc/cmdline)"

# Loopback (127.0.0.1, ::1) for the vfiomig migrate tests: the kernel gives lo its addresses
# when it comes up. QEMU runs with -nic none: no other interface.
ip link set lo up || setup_failed "ip link set lo up"

# Modules in dependency order, as run.sh listed them: "file [params]".
while read -r mod params; do
	[ -n "$mod" ] || continue
	# shellcheck disable=SC2086
	insmod "/lib/modules/$mod" $params || setup_failed "insmod $mod $params"
done < /lib/modules/load.list

if [ -z "$(ls /sys/kernel/iommu_groups 2>/dev/null)" ]; then
	setup_failed "no IOMMU groups: is intel_iommu=on and the intel-iommu device there?"
fi

# edu (1234:11e8) to vfio-pci.
echo 1234 11e8 > /sys/bus/pci/drivers/vfio-pci/new_id || setup_failed "vfio-pci new_id"
EDU_BDF=
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ]; then
		EDU_BDF=${d##*/}
	fi
done
[ -n "$EDU_BDF" ] || setup_failed "no edu device on the PCI bus"
drv=$(readlink "/sys/bus/pci/devices/$EDU_BDF/driver")
[ "${drv##*/}" = vfio-pci ] || setup_failed "edu $EDU_BDF is bound to '${drv##*/}', not vfio-pci"
grp=$(readlink "/sys/bus/pci/devices/$EDU_BDF/iommu_group")
# shellcheck disable=SC2012
echo "vfiomig-guest: edu $EDU_BDF in IOMMU group ${grp##*/} with:" \
	"$(ls "/sys/bus/pci/devices/$EDU_BDF/iommu_group/devices" | tr '\n' ' ')"

# mtty devices.
types=/sys/class/mtty/mtty/mdev_supported_types
for u in $MTTY_UUIDS; do
	echo "$u" > "$types/mtty-2/create" || setup_failed "creating mtty-2 $u"
done
echo "$MTTY1_UUID" > "$types/mtty-1/create" || setup_failed "creating mtty-1 $MTTY1_UUID"
for u in $MTTY_UUIDS $MTTY1_UUID; do
	[ -e "/sys/bus/mdev/devices/$u/iommu_group" ] || setup_failed "mdev $u has no IOMMU group"
done

# vfiomig_test devices (our own driver, tests/kernel/vfiomig_test).
vtypes=/sys/class/vfiomig_test/vfiomig_test/mdev_supported_types
VMT_UUIDS=
i=0
for spec in $VMT_SPECS; do
	i=$((i + 1))
	uuid=$(printf '7e570000-0000-4000-8000-0000000000%02x' $i)
	type=${spec%%:*}
	mib=${spec#*:}
	mib=${mib%M}
	echo "$uuid" > "$vtypes/vfiomig_test-$type/create" ||
		setup_failed "creating vfiomig_test-$type $uuid"
	if [ "$mib" != 4 ]; then
		echo $((mib * 1048576)) > "/sys/bus/mdev/devices/$uuid/vmt/state_size" ||
			setup_failed "vfiomig_test $uuid: state_size ${mib} MiB"
	fi
	[ -e "/sys/bus/mdev/devices/$uuid/iommu_group" ] || setup_failed "mdev $uuid has no IOMMU group"
	VMT_UUIDS="$VMT_UUIDS $uuid"
done
echo "vfiomig-guest: vfiomig_test devices:$VMT_UUIDS"
n=0
while [ ! -c /dev/vfio/vfio ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
# shellcheck disable=SC2012
echo "vfiomig-guest: /dev/vfio: $(ls /dev/vfio | tr '\n' ' ')"

export EDU_BDF MTTY1_UUID TMPDIR=/tmp VFIOMIG_TOOL=/bin/vfiomig VFIOMIG_CHANPROXY=/bin/chanproxy
export MTTY_UUIDS VMT_UUIDS
# SOAK=1 on the kernel command line (run.sh's VFIOMIG_KERNEL_SOAK) adds the soak tests, which
# sample the process's heap and RSS after each migration: without glibc's per-thread cache (a
# freed chunk parked there counts as in use) and with a fixed mmap threshold (glibc raises it
# after the first large free, and the 4 MiB streams would then stay on the heap, their pages
# resident or not depending on the top's trimming).
if [ -n "${SOAK:-}" ]; then
	export GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mmap_threshold=131072
	echo "vfiomig-guest: soak: SOAK=$SOAK SOAK_SEED=${SOAK_SEED:-} GLIBC_TUNABLES=$GLIBC_TUNABLES"
fi
# GUEST_TESTS=a,b on the kernel command line (run.sh's VFIOMIG_KERNEL_TESTS) selects tests;
# the kernel hands unknown name=value parameters to init as environment variables.
# shellcheck disable=SC2046
/bin/guest_tests $(echo "${GUEST_TESTS:-}" | tr ',' ' ')
rc=$?
echo "vfiomig-guest: guest_tests exited $rc"
if [ $rc -ne 0 ]; then
	echo "--- dmesg (last 60 lines) ---"
	dmesg | tail -60
fi
sync
poweroff -f
sleep 10
