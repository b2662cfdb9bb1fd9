#!/bin/sh
# The README's first command: install dependencies, build, run the main job.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -x configure ] || autoreconf -fi
mkdir -p build
cd build
[ -f Makefile ] || ../configure --quiet
make -j"$(nproc)" --quiet
echo
echo "== vfiomig probe: a simulated VFIO PCI function with v2 migration =="
./tools/vfiomig probe sim:pci,name=0000:03:00.0,vendor=0x8086,device=0x1572,mig=v2-p2p-precopy
echo
echo "== vfiomig demo: live migration of a simulated device =="
./tools/vfiomig demo --state 64M
