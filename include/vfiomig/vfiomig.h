/* SPDX-License-Identifier: MIT */
/* libvfiomig: umbrella header. Link with `pkg-config --libs vfiomig`. */
#ifndef VFIOMIG_VFIOMIG_H
#define VFIOMIG_VFIOMIG_H

#include <vfiomig/version.h>
#include <vfiomig/common.h>
#include <vfiomig/kernel.h>
#include <vfiomig/ctx.h>
#include <vfiomig/caps.h>
#include <vfiomig/device.h>
#include <vfiomig/region.h>
#include <vfiomig/stream.h>
#include <vfiomig/migration.h>
#include <vfiomig/dirty.h>

#endif
