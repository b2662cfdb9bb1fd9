/* SPDX-License-Identifier: MIT */
/*
 * The simulated VFIO kernel and the fault injector, driven directly
 * through their kernel ops (not through the library's device API): the
 * kernel's group / container / device sequence and errno for each wrong
 * step, argsz growth and capability chains, region offsets and access
 * rules, mmap of sparse areas, the cdev + iommufd flow, sysfs lookups,
 * fd / map accounting, spec strings, and fault injection. Every test
 * ends with assert_no_leaks(): heap blocks and fds as at the mark the
 * suite's .init takes (see testutil.h).
 *
 * White-box: the event log and the spec error text are private for now
 * (lib/sim/sim_internal.h), so this test links the simulator's sources.
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vfiomig/sim.h>

#include "sim/sim_internal.h"

#define K (vfiomig_sim_kernel_ops())

/* ------------------------------------------------------------- helpers */

static struct vfiomig_sim *sim_make(uint32_t flags)
{
	VFIOMIG_OPTS(sim_opts, o, .flags = flags);
	struct vfiomig_sim *sim = NULL;

	cr_assert_eq(vfiomig_sim_new(&o, &sim), 0);
	cr_assert_not_null(sim);
	return sim;
}

static struct vfiomig_sim_device *dev_make(struct vfiomig_sim *sim, uint32_t kind, uint32_t flags,
					   const char *name)
{
	VFIOMIG_OPTS(sim_device_opts, o, .kind = kind, .flags = flags, .name = name);
	struct vfiomig_sim_device *dev = NULL;

	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &dev), 0, "%s", sim_last_error(sim));
	cr_assert_not_null(dev);
	return dev;
}

static int kopen(struct vfiomig_sim *sim, const char *path)
{
	return K->open(sim, path, O_RDWR | O_CLOEXEC);
}

static int kioctl(struct vfiomig_sim *sim, int fd, unsigned long req, void *arg)
{
	return K->ioctl(sim, fd, req, arg);
}

static int kioctl_int(struct vfiomig_sim *sim, int fd, unsigned long req, unsigned long v)
{
	return K->ioctl(sim, fd, req, (void *)v);
}

static int group_open(struct vfiomig_sim *sim, const struct vfiomig_sim_device *dev)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/vfio/%d", vfiomig_sim_device_group(dev));
	return kopen(sim, path);
}

static int set_container(struct vfiomig_sim *sim, int group, int container)
{
	int c = container;

	return kioctl(sim, group, VU_GROUP_SET_CONTAINER, &c);
}

static uint32_t group_flags(struct vfiomig_sim *sim, int group)
{
	struct vu_group_status st = { .argsz = sizeof(st) };

	cr_assert_eq(kioctl(sim, group, VU_GROUP_GET_STATUS, &st), 0);
	return st.flags;
}

/* The whole legacy sequence; returns the device fd (container and group fds in *c, *g). */
static int legacy_open(struct vfiomig_sim *sim, struct vfiomig_sim_device *dev, int *c, int *g)
{
	int fd;

	*c = kopen(sim, "/dev/vfio/vfio");
	cr_assert_geq(*c, 0);
	*g = group_open(sim, dev);
	cr_assert_geq(*g, 0);
	cr_assert_eq(set_container(sim, *g, *c), 0);
	cr_assert_eq(kioctl_int(sim, *c, VU_SET_IOMMU, VU_TYPE1v2_IOMMU), 0);
	fd = kioctl(sim, *g, VU_GROUP_GET_DEVICE_FD, (void *)vfiomig_sim_device_name(dev));
	cr_assert_geq(fd, 0);
	return fd;
}

static struct vu_region_info region_info(struct vfiomig_sim *sim, int fd, uint32_t index)
{
	struct vu_region_info ri = { .argsz = sizeof(ri), .index = index };

	cr_assert_eq(kioctl(sim, fd, VU_DEVICE_GET_REGION_INFO, &ri), 0, "region %u", index);
	return ri;
}

static struct vu_info_cap_header cap_at(const void *buf, uint32_t off)
{
	struct vu_info_cap_header h;

	memcpy(&h, (const uint8_t *)buf + off, sizeof(h));
	return h;
}

static int close_all(struct vfiomig_sim *sim, const int *fds, size_t n)
{
	int bad = 0;

	for (size_t i = 0; i < n; i++)
		bad |= K->close(sim, fds[i]) != 0;
	return bad;
}

/* ------------------------------------------------- group / container path */

TestSuite(sim, .init = leak_baseline);

Test(sim, container_group_device_sequence_errnos)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, "0000:03:00.0");
	struct vu_iommu_type1_info info = { .argsz = sizeof(info) };
	int c, g, d, nullfd;

	c = kopen(sim, "/dev/vfio/vfio");
	cr_assert_geq(c, 0);
	cr_assert_eq(kioctl(sim, c, VU_GET_API_VERSION, NULL), VU_API_VERSION);
	cr_assert_eq(kioctl_int(sim, c, VU_CHECK_EXTENSION, VU_TYPE1v2_IOMMU), 1);
	cr_assert_eq(kioctl_int(sim, c, VU_CHECK_EXTENSION, VU_TYPE1_IOMMU), 1);
	cr_assert_eq(kioctl_int(sim, c, VU_CHECK_EXTENSION, 2 /* SPAPR TCE */), 0);
	/* No group yet: no IOMMU, and nothing else answers. */
	cr_assert_eq(kioctl_int(sim, c, VU_SET_IOMMU, VU_TYPE1v2_IOMMU), -EINVAL);
	cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, &info), -EINVAL);

	g = group_open(sim, dev);
	cr_assert_geq(g, 0);
	cr_assert_eq(group_flags(sim, g), VU_GROUP_FLAGS_VIABLE);
	/* No container: GET_DEVICE_FD cannot open; an unknown name is -ENODEV first. */
	cr_assert_eq(kioctl(sim, g, VU_GROUP_GET_DEVICE_FD, "0000:03:00.0"), -EINVAL);
	cr_assert_eq(kioctl(sim, g, VU_GROUP_GET_DEVICE_FD, "0000:09:00.0"), -ENODEV);

	/* SET_CONTAINER: closed fd -EBADF, foreign fd -EBADFD, a group fd -EBADFD. */
	cr_assert_eq(set_container(sim, g, 987654), -EBADF);
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(nullfd, 0);
	cr_assert_eq(set_container(sim, g, nullfd), -EBADFD);
	close(nullfd);
	cr_assert_eq(set_container(sim, g, g), -EBADFD);
	cr_assert_eq(set_container(sim, g, c), 0);
	cr_assert_eq(group_flags(sim, g), VU_GROUP_FLAGS_VIABLE | VU_GROUP_FLAGS_CONTAINER_SET);
	cr_assert_eq(set_container(sim, g, c), -EINVAL);

	/* Container set but no IOMMU yet. */
	cr_assert_eq(kioctl(sim, g, VU_GROUP_GET_DEVICE_FD, "0000:03:00.0"), -EINVAL);
	cr_assert_eq(kioctl_int(sim, c, VU_SET_IOMMU, 7), -ENODEV);
	cr_assert_eq(kioctl_int(sim, c, VU_SET_IOMMU, VU_UNMAP_ALL), -EINVAL);
	cr_assert_eq(kioctl_int(sim, c, VU_SET_IOMMU, VU_TYPE1v2_IOMMU), 0);
	cr_assert_eq(kioctl_int(sim, c, VU_SET_IOMMU, VU_TYPE1v2_IOMMU), -EINVAL);
	cr_assert_eq(kioctl(sim, c, 0x3b00 + 100 + 40, NULL), -ENOTTY);

	d = kioctl(sim, g, VU_GROUP_GET_DEVICE_FD, "0000:03:00.0");
	cr_assert_geq(d, 0);
	cr_assert_neq(d, g);
	cr_assert_eq(kioctl(sim, g, VU_GROUP_UNSET_CONTAINER, NULL), -EBUSY);
	cr_assert_eq(kioctl(sim, g, 0x3b00 + 100 + 40, NULL), -ENOTTY);
	cr_assert_eq(kioctl(sim, d, 0x3b00 + 100 + 40, NULL), -ENOTTY);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 3);

	cr_assert_eq(K->close(sim, d), 0);
	cr_assert_eq(kioctl(sim, g, VU_GROUP_UNSET_CONTAINER, NULL), 0);
	cr_assert_eq(kioctl(sim, g, VU_GROUP_UNSET_CONTAINER, NULL), -EINVAL);
	/* The last group left: the container lost its IOMMU. */
	cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, &info), -EINVAL);
	cr_assert_eq(group_flags(sim, g), VU_GROUP_FLAGS_VIABLE);

	cr_assert_eq(K->close(sim, g), 0);
	cr_assert_eq(K->close(sim, c), 0);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	cr_assert_eq(K->close(sim, c), -EBADF);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, event_log_records_kernel_steps_in_order)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, "0000:03:00.0");
	char open_group[32];
	long a, b, e1, e2, e3;
	int c, g, d;

	sim_event_clear(sim);
	d = legacy_open(sim, dev, &c, &g);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_RESET, NULL), 0);
	snprintf(open_group, sizeof(open_group), "open /dev/vfio/%d",
		 vfiomig_sim_device_group(dev));
	a = sim_event_find(sim, 0, "open /dev/vfio/vfio");
	b = sim_event_find(sim, 0, open_group);
	e1 = sim_event_find(sim, 0, "SET_IOMMU 3");
	e2 = sim_event_find(sim, 0, "GET_DEVICE_FD 0000:03:00.0");
	e3 = sim_event_find(sim, 0, "RESET 0000:03:00.0");
	cr_assert(a >= 0 && a < b && b < e1 && e1 < e2 && e2 < e3, "%ld %ld %ld %ld %ld", a, b, e1,
		  e2, e3);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	cr_assert_geq(sim_event_find(sim, 0, "close device 0000:03:00.0"), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, group_opens_once_and_device_files_hold_it)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	int c, g, d, g2;

	d = legacy_open(sim, dev, &c, &g);
	cr_assert_eq(group_open(sim, dev), -EBUSY);
	/* Closing the group fd does not release the group while a device is open. */
	cr_assert_eq(K->close(sim, g), 0);
	cr_assert_eq(group_open(sim, dev), -EBUSY);
	cr_assert_eq(K->close(sim, d), 0);
	g2 = group_open(sim, dev);
	cr_assert_geq(g2, 0);
	/* Its release detached the container. */
	cr_assert_eq(group_flags(sim, g2), VU_GROUP_FLAGS_VIABLE);
	cr_assert_eq(close_all(sim, (int[]){ g2, c }, 2), 0);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, group_not_viable_with_foreign_driver)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *a = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, "0000:05:00.0");
	VFIOMIG_OPTS(sim_device_opts, o, .name = "0000:05:00.1", .same_group_as = a);
	struct vfiomig_sim_device *b = NULL;
	int c, g;

	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &b), 0);
	cr_assert_eq(vfiomig_sim_device_group(a), vfiomig_sim_device_group(b));
	cr_assert_eq(vfiomig_sim_device_set_driver(b, "e1000e"), 0);

	c = kopen(sim, "/dev/vfio/vfio");
	g = group_open(sim, a);
	cr_assert_geq(g, 0);
	cr_assert_eq(group_flags(sim, g), 0);
	cr_assert_eq(set_container(sim, g, c), -EPERM);
	/* Unbound or pci-stub devices leave the group viable. */
	cr_assert_eq(vfiomig_sim_device_set_driver(b, NULL), 0);
	cr_assert_eq(group_flags(sim, g), VU_GROUP_FLAGS_VIABLE);
	cr_assert_eq(vfiomig_sim_device_set_driver(b, "pci-stub"), 0);
	cr_assert_eq(group_flags(sim, g), VU_GROUP_FLAGS_VIABLE);
	cr_assert_eq(set_container(sim, g, c), 0);
	/* Not bound to VFIO: not a device of the group for GET_DEVICE_FD. */
	cr_assert_eq(kioctl_int(sim, c, VU_SET_IOMMU, VU_TYPE1v2_IOMMU), 0);
	cr_assert_eq(kioctl(sim, g, VU_GROUP_GET_DEVICE_FD, "0000:05:00.1"), -ENODEV);
	/* A DMA-using driver cannot bind while the group is owned by a VFIO user. */
	cr_assert_eq(vfiomig_sim_device_set_driver(b, "e1000e"), -EBUSY);
	cr_assert_eq(vfiomig_sim_device_set_driver(b, "vfio-pci"), 0);
	cr_assert_eq(close_all(sim, (int[]){ g, c }, 2), 0);

	/* No device of the group bound to VFIO: /dev/vfio/<group> does not exist. */
	cr_assert_eq(vfiomig_sim_device_set_driver(a, NULL), 0);
	cr_assert_eq(vfiomig_sim_device_set_driver(b, NULL), 0);
	cr_assert_eq(group_open(sim, a), -ENOENT);
	cr_assert_eq(vfiomig_sim_device_set_driver(a, "vfio-pci"), 0);
	cr_assert_eq(vfiomig_sim_device_set_driver(a, "bad/name"), -EINVAL);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, set_driver_refused_while_device_open)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);
	cr_assert_eq(vfiomig_sim_device_set_driver(dev, "e1000e"), -EBUSY);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	cr_assert_eq(vfiomig_sim_device_set_driver(dev, "e1000e"), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ sysfs, names */

static int collect(void *cb_user, const char *name)
{
	char *acc = cb_user;

	strcat(acc, name);
	strcat(acc, ";");
	return 0;
}

static int stop_at_first(void *cb_user, const char *name)
{
	(void)name;
	(*(int *)cb_user)++;
	return 42;
}

Test(sim, sysfs_links_and_directories)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, "0000:03:00.0");
	struct vfiomig_sim_device *md =
		dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
	char buf[128], expect[64], list[256] = "";
	ssize_t n;
	int calls = 0;

	cr_assert_str_eq(vfiomig_sim_device_sysfs_path(dev), "/sys/bus/pci/devices/0000:03:00.0");
	n = K->readlink(sim, "/sys/bus/pci/devices/0000:03:00.0/iommu_group", buf, sizeof(buf));
	snprintf(expect, sizeof(expect), "../../../kernel/iommu_groups/%d",
		 vfiomig_sim_device_group(dev));
	cr_assert_eq(n, (ssize_t)strlen(expect));
	cr_assert_eq(memcmp(buf, expect, (size_t)n), 0);
	/* Trailing slashes are accepted; a short buffer truncates as readlink(2). */
	cr_assert_eq(K->readlink(sim, "/sys/bus/pci/devices/0000:03:00.0/iommu_group/", buf, 5), 5);
	cr_assert_eq(memcmp(buf, "../..", 5), 0);
	n = K->readlink(sim, "/sys/bus/pci/devices/0000:03:00.0/driver", buf, sizeof(buf));
	cr_assert_eq(n, (ssize_t)strlen("../../../bus/pci/drivers/vfio-pci"));
	cr_assert_eq(memcmp(buf, "../../../bus/pci/drivers/vfio-pci", (size_t)n), 0);
	cr_assert_eq(K->readlink(sim, "/sys/bus/pci/devices/0000:04:00.0/iommu_group", buf, 64),
		     -ENOENT);
	cr_assert_eq(K->readlink(sim, "/sys/bus/pci/devices/0000:03:00.0/nothing", buf, 64),
		     -ENOENT);

	/* mdev: same shape under /sys/bus/mdev. */
	n = K->readlink(sim, "/sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001/driver",
			buf, sizeof(buf));
	cr_assert_eq(n, (ssize_t)strlen("../../../bus/mdev/drivers/vfio_mdev"));
	cr_assert_eq(memcmp(buf, "../../../bus/mdev/drivers/vfio_mdev", (size_t)n), 0);
	n = K->readlink(sim,
			"/sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001/iommu_group",
			buf, sizeof(buf));
	snprintf(expect, sizeof(expect), "../../../kernel/iommu_groups/%d",
		 vfiomig_sim_device_group(md));
	cr_assert_eq(n, (ssize_t)strlen(expect));
	cr_assert_eq(memcmp(buf, expect, (size_t)n), 0);

	cr_assert_eq(K->readdir(sim, "/sys/bus/pci/devices/0000:03:00.0/vfio-dev/", collect, list),
		     0);
	snprintf(expect, sizeof(expect), "%s;",
		 strrchr(vfiomig_sim_device_cdev_path(dev), '/') + 1);
	cr_assert_str_eq(list, expect);
	cr_assert_str_eq(vfiomig_sim_device_cdev_path(dev), "/dev/vfio/devices/vfio0");

	list[0] = '\0';
	snprintf(buf, sizeof(buf), "/sys/kernel/iommu_groups/%d/devices",
		 vfiomig_sim_device_group(dev));
	cr_assert_eq(K->readdir(sim, buf, collect, list), 0);
	cr_assert_str_eq(list, "0000:03:00.0;");
	cr_assert_eq(K->readdir(sim, "/sys/bus/pci/devices", stop_at_first, &calls), 42);
	cr_assert_eq(calls, 1);
	cr_assert_eq(K->readdir(sim, "/sys/kernel/iommu_groups/999/devices", collect, list),
		     -ENOENT);

	/* Once the driver changes, the vfio-dev directory and the cdev are gone. */
	cr_assert_eq(vfiomig_sim_device_set_driver(dev, "e1000e"), 0);
	n = K->readlink(sim, "/sys/bus/pci/devices/0000:03:00.0/driver", buf, sizeof(buf));
	cr_assert_eq(memcmp(buf, "../../../bus/pci/drivers/e1000e", (size_t)n), 0);
	cr_assert_eq(K->readdir(sim, "/sys/bus/pci/devices/0000:03:00.0/vfio-dev", collect, list),
		     -ENOENT);
	cr_assert_eq(kopen(sim, "/dev/vfio/devices/vfio0"), -ENOENT);
	cr_assert_eq(kopen(sim, "/dev/vfio/nothing"), -ENOENT);
	cr_assert_eq(kopen(sim, "/etc/passwd"), -ENOENT);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, no_iommufd_hides_cdevs)
{
	struct vfiomig_sim *sim = sim_make(VFIOMIG_SIM_F_NO_IOMMUFD);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, "0000:03:00.0");
	char list[64] = "";

	cr_assert_null(vfiomig_sim_device_cdev_path(dev));
	cr_assert_eq(kopen(sim, "/dev/iommu"), -ENOENT);
	cr_assert_eq(kopen(sim, "/dev/vfio/devices/vfio0"), -ENOENT);
	cr_assert_eq(K->readdir(sim, "/sys/bus/pci/devices/0000:03:00.0/vfio-dev", collect, list),
		     -ENOENT);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, no_type1_refuses_iommu)
{
	struct vfiomig_sim *sim = sim_make(VFIOMIG_SIM_F_NO_TYPE1);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	int c = kopen(sim, "/dev/vfio/vfio"), g = group_open(sim, dev);

	cr_assert_eq(kioctl_int(sim, c, VU_CHECK_EXTENSION, VU_TYPE1v2_IOMMU), 0);
	cr_assert_eq(set_container(sim, g, c), 0);
	cr_assert_eq(kioctl_int(sim, c, VU_SET_IOMMU, VU_TYPE1v2_IOMMU), -ENODEV);
	cr_assert_eq(close_all(sim, (int[]){ g, c }, 2), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, groups_from_10_and_generated_names)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *a = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vfiomig_sim_device *b = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vfiomig_sim_device *m = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, NULL);
	const char *u = vfiomig_sim_device_name(m);

	cr_assert_eq(vfiomig_sim_device_group(a), 10);
	cr_assert_eq(vfiomig_sim_device_group(b), 11);
	cr_assert_eq(vfiomig_sim_device_group(m), 12);
	cr_assert_str_eq(vfiomig_sim_device_name(a), "0000:00:01.0");
	cr_assert_str_eq(vfiomig_sim_device_name(b), "0000:00:02.0");
	cr_assert_eq(strlen(u), 36);
	cr_assert(u[8] == '-' && u[13] == '-' && u[18] == '-' && u[23] == '-');
	cr_assert_eq(strncmp(vfiomig_sim_device_sysfs_path(m), "/sys/bus/mdev/devices/", 22), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, device_add_validates_opts)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *d = NULL, *m;
	VFIOMIG_OPTS(sim_device_opts, o);

	o.name = "0000:3:00.0";
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	cr_assert_neq(sim_last_error(sim)[0], '\0');
	o.name = "0000:03:00.8";
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	o.name = "0000:03:00.0";
	o.bar0_size = 3 * 4096;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	o.bar0_size = 2048;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	o.bar0_size = 0;
	o.flags = 1u << 20;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	o.flags = 0;
	o.kind = 7;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	o.kind = VFIOMIG_DEVKIND_PCI;
	o.mdev_type = "x";
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	o.mdev_type = NULL;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), 0);
	cr_assert_eq(sim_last_error(sim)[0], '\0');
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EEXIST);
	/* An mdev's group holds that one device. */
	m = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, NULL);
	o.name = "0000:03:00.1";
	o.same_group_as = m;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_add(sim, NULL, NULL), -EINVAL);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* -------------------------------------------------------------- IOMMU info */

Test(sim, iommu_info_argsz_growth_and_caps)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_iommu_type1_info info;
	struct vu_iommu_type1_info_cap_migration mig;
	struct vu_iommu_type1_info_dma_avail avail;
	struct vu_iommu_type1_info_cap_iova_range iova;
	struct vu_iova_range r[2];
	struct vu_info_cap_header h;
	uint8_t buf[256];
	uint32_t off;
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);

	/* Below offsetofend(iova_pgsizes): refused. */
	memset(buf, 0, sizeof(buf));
	info = (struct vu_iommu_type1_info){ .argsz = 15 };
	memcpy(buf, &info, sizeof(info));
	cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, buf), -EINVAL);

	/* The bare header: argsz grows, CAPS set, cap_offset 0, nothing written past it. */
	memset(buf, 0xaa, sizeof(buf));
	info = (struct vu_iommu_type1_info){ .argsz = sizeof(info) };
	memcpy(buf, &info, sizeof(info));
	cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, buf), 0);
	memcpy(&info, buf, sizeof(info));
	cr_assert_eq(info.argsz, 24 + 32 + 16 + 48);
	cr_assert_eq(info.flags, VU_IOMMU_INFO_PGSIZES | VU_IOMMU_INFO_CAPS);
	cr_assert_eq(info.iova_pgsizes, 0x1000ull | 0x200000ull | 0x40000000ull);
	cr_assert_eq(info.cap_offset, 0);
	cr_assert_eq(buf[sizeof(info)], 0xaa);

	/* Second call with the size asked for: the chain in the kernel's order. */
	memset(buf, 0, sizeof(buf));
	info.argsz = 120;
	info.cap_offset = 0;
	memcpy(buf, &info, sizeof(info));
	cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, buf), 0);
	memcpy(&info, buf, sizeof(info));
	cr_assert_eq(info.argsz, 120);
	cr_assert_eq(info.cap_offset, 24);

	off = info.cap_offset;
	memcpy(&mig, buf + off, sizeof(mig));
	cr_assert_eq(mig.header.id, VU_IOMMU_TYPE1_INFO_CAP_MIGRATION);
	cr_assert_eq(mig.header.version, 1);
	cr_assert_eq(mig.flags, 0);
	cr_assert_eq(mig.pgsize_bitmap, 0x1000);
	cr_assert_eq(mig.max_dirty_bitmap_size, 256ull << 20);
	cr_assert_eq(mig.header.next, 24 + 32);

	off = mig.header.next;
	memcpy(&avail, buf + off, sizeof(avail));
	cr_assert_eq(avail.header.id, VU_IOMMU_TYPE1_INFO_DMA_AVAIL);
	cr_assert_eq(avail.avail, 65535);
	cr_assert_eq(avail.header.next, 24 + 32 + 16); /* 12 bytes padded to 16 */

	off = avail.header.next;
	memcpy(&iova, buf + off, sizeof(iova));
	memcpy(r, buf + off + sizeof(iova), sizeof(r));
	cr_assert_eq(iova.header.id, VU_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE);
	cr_assert_eq(iova.header.next, 0);
	cr_assert_eq(iova.nr_iovas, 2);
	cr_assert_eq(r[0].start, 0);
	cr_assert_eq(r[0].end, 0xfedfffffull);
	cr_assert_eq(r[1].start, 0xfef00000ull);
	cr_assert_eq(r[1].end, 0xffffffffffffull);
	h = cap_at(buf, 24);
	cr_assert_eq(h.id, VU_IOMMU_TYPE1_INFO_CAP_MIGRATION);

	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, iommu_info_emulated_only_container)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *m = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, NULL);
	struct vu_iommu_type1_info info = { .argsz = sizeof(info) };
	int c, g, d;

	d = legacy_open(sim, m, &c, &g);
	cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, &info), 0);
	/* No IOMMU domain: no IOVA ranges, and the pgsizes are PAGE_MASK. */
	cr_assert_eq(info.argsz, 24 + 32 + 16);
	cr_assert_eq(info.iova_pgsizes, ~((uint64_t)sysconf(_SC_PAGESIZE) - 1));
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ device info */

Test(sim, device_info_fields_and_argsz)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vfiomig_sim_device *nr =
		dev_make(sim, VFIOMIG_DEVKIND_PCI, VFIOMIG_SIM_DEV_NO_RESET, NULL);
	uint8_t buf[32];
	struct vu_device_info info;
	int c, g, d, c2, g2, d2;

	d = legacy_open(sim, dev, &c, &g);
	memset(buf, 0xaa, sizeof(buf));
	info = (struct vu_device_info){ .argsz = 15 };
	memcpy(buf, &info, 4);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_INFO, buf), -EINVAL);
	/* argsz 16: exactly 16 bytes come back. */
	info.argsz = 16;
	memcpy(buf, &info, 4);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_INFO, buf), 0);
	memcpy(&info, buf, 16);
	cr_assert_eq(info.flags, VU_DEVICE_FLAGS_PCI | VU_DEVICE_FLAGS_RESET);
	cr_assert_eq(info.num_regions, 9);
	cr_assert_eq(info.num_irqs, 5);
	cr_assert_eq(buf[16], 0xaa);

	d2 = legacy_open(sim, nr, &c2, &g2);
	info = (struct vu_device_info){ .argsz = sizeof(info) };
	cr_assert_eq(kioctl(sim, d2, VU_DEVICE_GET_INFO, &info), 0);
	cr_assert_eq(info.flags, VU_DEVICE_FLAGS_PCI);
	cr_assert_eq(info.cap_offset, 0);
	cr_assert_eq(kioctl(sim, d2, VU_DEVICE_RESET, NULL), -EINVAL);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c, d2, g2, c2 }, 6), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, irq_info_and_feature_answers)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_irq_info irq = { .argsz = sizeof(irq), .index = 0 };
	struct {
		struct vu_device_feature h;
		uint64_t data;
	} f = { .h = { .argsz = sizeof(f) }, .data = 0 };
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_IRQ_INFO, &irq), 0);
	cr_assert_eq(irq.count, 1);
	cr_assert_eq(irq.flags, 0x7);
	irq = (struct vu_irq_info){ .argsz = sizeof(irq), .index = 3 };
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_IRQ_INFO, &irq), -EINVAL);
	irq = (struct vu_irq_info){ .argsz = sizeof(irq), .index = 5 };
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_IRQ_INFO, &irq), -EINVAL);

	/* No migration support here: the core answers -ENOTTY after its own checks. */
	f.h.flags = VU_FEATURE_MIGRATION | VU_DEVICE_FEATURE_PROBE | VU_DEVICE_FEATURE_GET;
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_FEATURE, &f), -ENOTTY);
	f.h.flags = VU_FEATURE_MIGRATION | VU_DEVICE_FEATURE_GET | VU_DEVICE_FEATURE_SET;
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_FEATURE, &f), -EINVAL);
	f.h.flags = VU_FEATURE_MIGRATION | (1u << 20);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_FEATURE, &f), -EINVAL);
	f.h.flags = VU_FEATURE_MIGRATION | VU_DEVICE_FEATURE_GET;
	f.h.argsz = 4;
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_FEATURE, &f), -EINVAL);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_FEATURE, NULL), -EFAULT);
	cr_assert_eq(sim_feature_check(VU_DEVICE_FEATURE_PROBE | VU_DEVICE_FEATURE_GET, 0,
				       VU_DEVICE_FEATURE_GET, 8), 0);
	cr_assert_eq(sim_feature_check(VU_DEVICE_FEATURE_SET, 8, VU_DEVICE_FEATURE_GET, 8),
		     -EINVAL);
	cr_assert_eq(sim_feature_check(VU_DEVICE_FEATURE_GET, 4, VU_DEVICE_FEATURE_GET, 8),
		     -EINVAL);
	cr_assert_eq(sim_feature_check(VU_DEVICE_FEATURE_GET, 8, VU_DEVICE_FEATURE_GET, 8), 1);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ region info */

Test(sim, region_info_growth_and_sparse_cap)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_region_info ri;
	struct vu_region_info_cap_sparse_mmap sp;
	struct vu_region_sparse_mmap_area areas[2];
	uint8_t buf[128];
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);

	memset(buf, 0xaa, sizeof(buf));
	ri = (struct vu_region_info){ .argsz = sizeof(ri), .index = 0 };
	memcpy(buf, &ri, sizeof(ri));
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, buf), 0);
	memcpy(&ri, buf, sizeof(ri));
	cr_assert_eq(ri.argsz, 32 + 16 + 2 * 16);
	cr_assert_eq(ri.flags, VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE |
				       VU_REGION_INFO_FLAG_MMAP | VU_REGION_INFO_FLAG_CAPS);
	cr_assert_eq(ri.cap_offset, 0);
	cr_assert_eq(ri.size, 64 << 10);
	cr_assert_eq(buf[32], 0xaa);

	memset(buf, 0, sizeof(buf));
	memcpy(buf, &ri, sizeof(ri));
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, buf), 0);
	memcpy(&ri, buf, sizeof(ri));
	cr_assert_eq(ri.cap_offset, 32);
	memcpy(&sp, buf + 32, sizeof(sp));
	memcpy(areas, buf + 32 + sizeof(sp), sizeof(areas));
	cr_assert_eq(sp.header.id, VU_REGION_INFO_CAP_SPARSE_MMAP);
	cr_assert_eq(sp.header.version, 1);
	cr_assert_eq(sp.header.next, 0);
	cr_assert_eq(sp.nr_areas, 2);
	cr_assert_eq(areas[0].offset, 0);
	cr_assert_eq(areas[0].size, (32 << 10) - 4096);
	cr_assert_eq(areas[1].offset, 32 << 10);
	cr_assert_eq(areas[1].size, 32 << 10);

	ri = (struct vu_region_info){ .argsz = 31, .index = 0 };
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, &ri), -EINVAL);
	/* A short struct is refused by its argsz before anything past it is read. */
	{
		uint32_t tiny = sizeof(tiny);

		cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, &tiny), -EINVAL);
		cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_IRQ_INFO, &tiny), -EINVAL);
		cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_INFO, &tiny), -EINVAL);
		cr_assert_eq(kioctl(sim, d, VU_DEVICE_FEATURE, &tiny), -EINVAL);
		cr_assert_eq(kioctl(sim, g, VU_GROUP_GET_STATUS, &tiny), -EINVAL);
		cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, &tiny), -EINVAL);
		cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, NULL), -EFAULT);
	}
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, region_info_msix_mappable_after_sparse)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev =
		dev_make(sim, VFIOMIG_DEVKIND_PCI, VFIOMIG_SIM_DEV_MSIX_MAPPABLE, NULL);
	struct vfiomig_sim_device *whole =
		dev_make(sim, VFIOMIG_DEVKIND_PCI,
			 VFIOMIG_SIM_DEV_NO_SPARSE | VFIOMIG_SIM_DEV_MSIX_MAPPABLE, NULL);
	struct vfiomig_sim_device *plain = dev_make(sim, VFIOMIG_DEVKIND_PCI, VFIOMIG_SIM_DEV_NO_SPARSE,
						    NULL);
	struct vu_region_info ri;
	struct vu_info_cap_header h;
	uint8_t buf[128] = { 0 };
	int c, g, d, c2, g2, d2, c3, g3, d3;

	d = legacy_open(sim, dev, &c, &g);
	ri = (struct vu_region_info){ .argsz = sizeof(buf), .index = 0 };
	memcpy(buf, &ri, sizeof(ri));
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, buf), 0);
	memcpy(&ri, buf, sizeof(ri));
	cr_assert_eq(ri.cap_offset, 32);
	h = cap_at(buf, 32);
	cr_assert_eq(h.id, VU_REGION_INFO_CAP_SPARSE_MMAP);
	cr_assert_eq(h.next, 32 + 48);
	h = cap_at(buf, 32 + 48);
	cr_assert_eq(h.id, VU_REGION_INFO_CAP_MSIX_MAPPABLE);
	cr_assert_eq(h.next, 0);

	d2 = legacy_open(sim, whole, &c2, &g2);
	ri = (struct vu_region_info){ .argsz = sizeof(buf), .index = 0 };
	memcpy(buf, &ri, sizeof(ri));
	cr_assert_eq(kioctl(sim, d2, VU_DEVICE_GET_REGION_INFO, buf), 0);
	memcpy(&ri, buf, sizeof(ri));
	h = cap_at(buf, ri.cap_offset);
	cr_assert_eq(h.id, VU_REGION_INFO_CAP_MSIX_MAPPABLE);

	d3 = legacy_open(sim, plain, &c3, &g3);
	ri = region_info(sim, d3, 0);
	cr_assert_eq(ri.flags, VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE |
				       VU_REGION_INFO_FLAG_MMAP);
	cr_assert_eq(ri.cap_offset, 0);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c, d2, g2, c2, d3, g3, c3 }, 9), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, region_table_offsets_and_sizes)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vfiomig_sim_device *md = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, NULL);
	struct vu_region_info ri[8], x;
	int c, g, d, c2, g2, d2;

	d = legacy_open(sim, dev, &c, &g);
	for (uint32_t i = 0; i < 8; i++) {
		ri[i] = region_info(sim, d, i);
		cr_assert_neq(ri[i].offset, (uint64_t)i << 40, "region %u at index << 40", i);
		for (uint32_t j = 0; j < i; j++)
			cr_assert(ri[j].offset + ri[j].size <= ri[i].offset ||
					  ri[i].offset + ri[i].size <= ri[j].offset,
				  "regions %u and %u overlap", i, j);
	}
	cr_assert_eq(ri[1].size, 0);
	cr_assert_eq(ri[1].flags, 0);
	cr_assert_eq(ri[2].size, 4096);
	cr_assert_eq(ri[2].flags, VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE);
	cr_assert_eq(ri[6].size, 0);
	cr_assert_eq(ri[7].size, 256);
	cr_assert_eq(ri[7].flags, VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE);
	/* vfio-pci refuses the VGA index of a function without VGA; past the end too. */
	x = (struct vu_region_info){ .argsz = sizeof(x), .index = 8 };
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, &x), -EINVAL);
	x = (struct vu_region_info){ .argsz = sizeof(x), .index = 9 };
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, &x), -EINVAL);

	/* An mdev driver reports VGA as an empty region. */
	d2 = legacy_open(sim, md, &c2, &g2);
	x = region_info(sim, d2, 8);
	cr_assert_eq(x.size, 0);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c, d2, g2, c2 }, 6), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, device_specific_region_with_type_cap)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct sim_region t = { .flags = VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE,
				.size = 4096, .has_type = true, .type = 3, .subtype = 1 };
	struct vu_region_info_cap_type ct;
	struct vu_region_info ri;
	struct vu_device_info info = { .argsz = sizeof(info) };
	uint8_t buf[64] = { 0 };
	int c, g, d;

	cr_assert_eq(sim_device_add_region(dev, &t), 9);
	d = legacy_open(sim, dev, &c, &g);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_INFO, &info), 0);
	cr_assert_eq(info.num_regions, 10);
	ri = (struct vu_region_info){ .argsz = sizeof(buf), .index = 9 };
	memcpy(buf, &ri, sizeof(ri));
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_GET_REGION_INFO, buf), 0);
	memcpy(&ri, buf, sizeof(ri));
	cr_assert_eq(ri.argsz, sizeof(buf));
	cr_assert(ri.flags & VU_REGION_INFO_FLAG_CAPS);
	memcpy(&ct, buf + ri.cap_offset, sizeof(ct));
	cr_assert_eq(ct.header.id, VU_REGION_INFO_CAP_TYPE);
	cr_assert_eq(ct.type, 3);
	cr_assert_eq(ct.subtype, 1);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ region I/O */

Test(sim, pread_pwrite_bounds)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_region_info bar0, bar1, cfg;
	uint8_t out[16] = "0123456789abcdef", in[16] = { 0 };
	size_t len;
	uint8_t *mem;
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);
	bar0 = region_info(sim, d, 0);
	bar1 = region_info(sim, d, 1);
	cfg = region_info(sim, d, 7);

	cr_assert_eq(K->pwrite(sim, d, out, 16, bar0.offset + 0x100), 16);
	cr_assert_eq(K->pread(sim, d, in, 16, bar0.offset + 0x100), 16);
	cr_assert_eq(memcmp(in, out, 16), 0);
	mem = vfiomig_sim_device_region_mem(dev, 0, &len);
	cr_assert_eq(len, bar0.size);
	cr_assert_eq(memcmp(mem + 0x100, out, 16), 0);

	/* Crossing the BAR end: shortened, as vfio_pci_bar_rw; at the end: refused. */
	cr_assert_eq(K->pread(sim, d, in, 16, bar0.offset + bar0.size - 4), 4);
	cr_assert_eq(K->pwrite(sim, d, out, 16, bar0.offset + bar0.size - 8), 8);
	cr_assert_eq(K->pread(sim, d, in, 16, bar0.offset + bar0.size), -EINVAL);
	cr_assert_eq(K->pread(sim, d, in, 4, bar1.offset), -EINVAL);
	/* Config space refuses a crossing access with -EFAULT (vfio_config_do_rw). */
	cr_assert_eq(K->pread(sim, d, in, 16, cfg.offset + cfg.size - 8), -EFAULT);
	cr_assert_eq(K->pread(sim, d, in, 8, cfg.offset + cfg.size - 8), 8);
	/* The conventional layout is not ours. */
	cr_assert_eq(K->pread(sim, d, in, 4, 7ull << 40), -EINVAL);
	cr_assert_eq(K->pread(sim, d, in, 4, UINT64_MAX), -EINVAL);
	/* Containers and groups have no read. */
	cr_assert_eq(K->pread(sim, c, in, 4, 0), -EINVAL);
	cr_assert_eq(K->read(sim, g, in, 4), -EINVAL);
	cr_assert_eq(K->pread(sim, 999999, in, 4, 0), -EBADF);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

static uint32_t cfg_read32(struct vfiomig_sim *sim, int d, uint64_t base, uint64_t off)
{
	uint32_t v = 0;

	cr_assert_eq(K->pread(sim, d, &v, 4, base + off), 4);
	return v;
}

Test(sim, config_space_ids_read_only_and_bar_sizing)
{
	struct vfiomig_sim *sim = sim_make(0);
	VFIOMIG_OPTS(sim_device_opts, o, .vendor_id = 0x8086, .device_id = 0x1234,
		     .subsystem_vendor_id = 0x1af4, .subsystem_device_id = 0x1100,
		     .bar0_size = 1 << 20);
	struct vfiomig_sim_device *dev = NULL;
	struct vu_region_info cfg;
	uint32_t ones = 0xffffffff, v;
	uint16_t cmd = 0x0006;
	int c, g, d;

	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &dev), 0);
	d = legacy_open(sim, dev, &c, &g);
	cfg = region_info(sim, d, 7);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 0), 0x12348086);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 0x2c), 0x11001af4);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 0x08) >> 8, 0x120000); /* class code */

	/* The write "succeeds", the IDs stay. */
	cr_assert_eq(K->pwrite(sim, d, &ones, 4, cfg.offset), 4);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 0), 0x12348086);
	cr_assert_eq(K->pwrite(sim, d, &ones, 4, cfg.offset + 0x2c), 4);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 0x2c), 0x11001af4);

	/* The command register is writable. */
	cr_assert_eq(K->pwrite(sim, d, &cmd, 2, cfg.offset + 4), 2);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 4) & 0xffff, 0x0006);

	/* BAR0 is 64-bit memory: sizing reads back the size mask and the type bits. */
	v = cfg_read32(sim, d, cfg.offset, 0x10);
	cr_assert_eq(v & 0xf, 0x4);
	cr_assert_eq(K->pwrite(sim, d, &ones, 4, cfg.offset + 0x10), 4);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 0x10), ~((1u << 20) - 1) | 0x4);
	/* BAR2: 4 KiB, 32-bit. */
	cr_assert_eq(K->pwrite(sim, d, &ones, 4, cfg.offset + 0x18), 4);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 0x18), 0xfffff000);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, reset_restores_command_and_bar_memory)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_region_info bar0, cfg;
	uint64_t v = 0x1122334455667788ull;
	uint16_t cmd = 0x0006;
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);
	bar0 = region_info(sim, d, 0);
	cfg = region_info(sim, d, 7);
	cr_assert_eq(K->pwrite(sim, d, &v, 8, bar0.offset + 64), 8);
	cr_assert_eq(K->pwrite(sim, d, &cmd, 2, cfg.offset + 4), 2);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_RESET, NULL), 0);
	v = 1;
	cr_assert_eq(K->pread(sim, d, &v, 8, bar0.offset + 64), 8);
	cr_assert_eq(v, 0);
	cr_assert_eq(cfg_read32(sim, d, cfg.offset, 4) & 0xffff, 0);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------------ mmap */

Test(sim, mmap_only_inside_sparse_areas_and_coherent)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_region_info bar0, bar2, cfg;
	uint32_t v = 0xdeadbeef, w = 0;
	void *p = NULL, *q = NULL, *junk = NULL;
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);
	bar0 = region_info(sim, d, 0);
	bar2 = region_info(sim, d, 2);
	cfg = region_info(sim, d, 7);

	/* Area 0 is [0, 28 KiB): map it whole; writes through it show in pread and back. */
	cr_assert_eq(K->mmap(sim, d, bar0.offset, 28 << 10, PROT_READ | PROT_WRITE, &p), 0);
	cr_assert_eq(vfiomig_sim_live_maps(sim), 1);
	memcpy((uint8_t *)p + 0x40, &v, 4);
	cr_assert_eq(K->pread(sim, d, &w, 4, bar0.offset + 0x40), 4);
	cr_assert_eq(w, v);
	v = 0x01020304;
	cr_assert_eq(K->pwrite(sim, d, &v, 4, bar0.offset + 0x80), 4);
	cr_assert_eq(memcmp((uint8_t *)p + 0x80, &v, 4), 0);

	/* Area 1 is [32 KiB, 64 KiB). */
	cr_assert_eq(K->mmap(sim, d, bar0.offset + (40 << 10), 4096, PROT_READ, &q), 0);
	cr_assert_eq(vfiomig_sim_live_maps(sim), 2);

	/* The hole, a span crossing it, beyond the end, unaligned, empty: refused. */
	cr_assert_eq(K->mmap(sim, d, bar0.offset + (28 << 10), 4096, PROT_READ, &junk), -EINVAL);
	cr_assert_eq(K->mmap(sim, d, bar0.offset, 32 << 10, PROT_READ, &junk), -EINVAL);
	cr_assert_eq(K->mmap(sim, d, bar0.offset + (32 << 10), 36 << 10, PROT_READ, &junk),
		     -EINVAL);
	cr_assert_eq(K->mmap(sim, d, bar0.offset + 100, 4096, PROT_READ, &junk), -EINVAL);
	cr_assert_eq(K->mmap(sim, d, bar0.offset, 0, PROT_READ, &junk), -EINVAL);
	/* Regions without MMAP. */
	cr_assert_eq(K->mmap(sim, d, bar2.offset, 4096, PROT_READ, &junk), -EINVAL);
	cr_assert_eq(K->mmap(sim, d, cfg.offset, 4096, PROT_READ, &junk), -EINVAL);
	/* Not a device. */
	cr_assert_eq(K->mmap(sim, c, 0, 4096, PROT_READ, &junk), -ENODEV);
	cr_assert_null(junk);
	cr_assert_eq(vfiomig_sim_live_maps(sim), 2);

	/* munmap: unknown address or a partial length refused; whole mappings go. */
	cr_assert_eq(K->munmap(sim, &v, 4096), -EINVAL);
	cr_assert_eq(K->munmap(sim, p, 4096), -EINVAL);
	cr_assert_eq(K->munmap(sim, p, 28 << 10), 0);
	cr_assert_eq(K->munmap(sim, q, 4096), 0);
	cr_assert_eq(K->munmap(sim, q, 4096), -EINVAL);
	cr_assert_eq(vfiomig_sim_live_maps(sim), 0);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, mmap_whole_region_without_sparse_cap)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, VFIOMIG_SIM_DEV_NO_SPARSE,
						  NULL);
	struct vu_region_info bar0;
	size_t len;
	uint8_t *mem;
	void *p = NULL;
	int c, g, d;

	d = legacy_open(sim, dev, &c, &g);
	bar0 = region_info(sim, d, 0);
	cr_assert_eq(K->mmap(sim, d, bar0.offset, (size_t)bar0.size, PROT_READ | PROT_WRITE, &p),
		     0);
	mem = vfiomig_sim_device_region_mem(dev, 0, &len);
	((uint8_t *)p)[bar0.size - 1] = 0x5a;
	cr_assert_eq(mem[len - 1], 0x5a);
	cr_assert_eq(K->mmap(sim, d, bar0.offset + 4096, (size_t)bar0.size, PROT_READ, &p),
		     -EINVAL);
	/* The mapping outlives the device fd, as in the kernel; the sim unmaps it when freed. */
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);
	cr_assert_eq(vfiomig_sim_live_maps(sim), 1);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------------ dup */

Test(sim, dup_refers_to_the_same_object)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_device_info info = { .argsz = sizeof(info) };
	int c, g, d, d2, g2;

	d = legacy_open(sim, dev, &c, &g);
	d2 = K->dup(sim, d);
	cr_assert_geq(d2, 0);
	cr_assert_neq(d2, d);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 4);
	cr_assert_eq(K->close(sim, d), 0);
	cr_assert_eq(kioctl(sim, d2, VU_DEVICE_GET_INFO, &info), 0);
	cr_assert_eq(info.num_regions, 9);
	/* The device is still open through the dup: the group stays busy. */
	cr_assert_eq(K->close(sim, g), 0);
	cr_assert_eq(group_open(sim, dev), -EBUSY);
	cr_assert_eq(K->close(sim, d2), 0);
	g2 = group_open(sim, dev);
	cr_assert_geq(g2, 0);
	cr_assert_eq(K->dup(sim, 999999), -EBADF);
	cr_assert_eq(K->close(sim, 999999), -EBADF);
	cr_assert_eq(kioctl(sim, 999999, VU_GET_API_VERSION, NULL), -EBADF);
	cr_assert_eq(close_all(sim, (int[]){ g2, c }, 2), 0);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------- cdev + iommufd */

static int bind(struct vfiomig_sim *sim, int dfd, int iommufd, uint32_t *devid)
{
	struct vu_device_bind_iommufd b = { .argsz = sizeof(b), .iommufd = iommufd };
	int ret = kioctl(sim, dfd, VU_DEVICE_BIND_IOMMUFD, &b);

	if (devid)
		*devid = b.out_devid;
	return ret;
}

static int attach(struct vfiomig_sim *sim, int dfd, uint32_t pt)
{
	struct vu_device_attach_iommufd_pt a = { .argsz = sizeof(a), .pt_id = pt };

	return kioctl(sim, dfd, VU_DEVICE_ATTACH_IOMMUFD_PT, &a);
}

static int ioas_alloc(struct vfiomig_sim *sim, int ifd, uint32_t *id)
{
	struct vu_iommu_ioas_alloc a = { .size = sizeof(a) };
	int ret = kioctl(sim, ifd, VU_IOMMU_IOAS_ALLOC, &a);

	*id = a.out_ioas_id;
	return ret;
}

static int destroy(struct vfiomig_sim *sim, int ifd, uint32_t id)
{
	struct vu_iommu_destroy x = { .size = sizeof(x), .id = id };

	return kioctl(sim, ifd, VU_IOMMU_DESTROY, &x);
}

Test(sim, cdev_bind_attach_flow)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, "0000:03:00.0");
	struct vu_device_info info = { .argsz = sizeof(info) };
	struct vu_device_bind_iommufd b;
	struct vu_iommu_ioas_alloc a;
	uint32_t devid = 0, ioas = 0;
	uint8_t byte;
	int dfd, dfd2, ifd, c, nullfd;

	dfd = kopen(sim, vfiomig_sim_device_cdev_path(dev));
	cr_assert_geq(dfd, 0);
	/* Unbound: every other ioctl and all I/O answer -EINVAL. */
	cr_assert_eq(kioctl(sim, dfd, VU_DEVICE_GET_INFO, &info), -EINVAL);
	cr_assert_eq(kioctl(sim, dfd, VU_DEVICE_ATTACH_IOMMUFD_PT, &info), -EINVAL);
	cr_assert_eq(K->pread(sim, dfd, &byte, 1, 1ull << 36), -EINVAL);

	ifd = kopen(sim, "/dev/iommu");
	cr_assert_geq(ifd, 0);
	c = kopen(sim, "/dev/vfio/vfio");
	b = (struct vu_device_bind_iommufd){ .argsz = 8, .iommufd = ifd };
	cr_assert_eq(kioctl(sim, dfd, VU_DEVICE_BIND_IOMMUFD, &b), -EINVAL);
	b = (struct vu_device_bind_iommufd){ .argsz = sizeof(b), .flags = 1, .iommufd = ifd };
	cr_assert_eq(kioctl(sim, dfd, VU_DEVICE_BIND_IOMMUFD, &b), -EINVAL);
	cr_assert_eq(bind(sim, dfd, -1, NULL), -EINVAL);
	cr_assert_eq(bind(sim, dfd, 987654, NULL), -EBADF);
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert_eq(bind(sim, dfd, nullfd, NULL), -EBADFD);
	close(nullfd);
	cr_assert_eq(bind(sim, dfd, c, NULL), -EBADFD);

	cr_assert_eq(bind(sim, dfd, ifd, &devid), 0);
	cr_assert_neq(devid, 0);
	cr_assert_eq(bind(sim, dfd, ifd, NULL), -EINVAL);
	/* A bound cdev keeps the group from opening; a second cdev fd cannot bind. */
	cr_assert_eq(group_open(sim, dev), -EBUSY);
	dfd2 = kopen(sim, vfiomig_sim_device_cdev_path(dev));
	cr_assert_eq(bind(sim, dfd2, ifd, NULL), -EINVAL);
	cr_assert_eq(K->close(sim, dfd2), 0);

	/* IOAS: bad size, unknown flags; then attach. */
	a = (struct vu_iommu_ioas_alloc){ .size = 8 };
	cr_assert_eq(kioctl(sim, ifd, VU_IOMMU_IOAS_ALLOC, &a), -EINVAL);
	a = (struct vu_iommu_ioas_alloc){ .size = sizeof(a), .flags = 1 };
	cr_assert_eq(kioctl(sim, ifd, VU_IOMMU_IOAS_ALLOC, &a), -EOPNOTSUPP);
	cr_assert_eq(ioas_alloc(sim, ifd, &ioas), 0);
	cr_assert_neq(ioas, 0);
	cr_assert_neq(ioas, devid);
	cr_assert_eq(attach(sim, dfd, 4242), -ENOENT);
	cr_assert_eq(attach(sim, dfd, devid), -EINVAL);
	cr_assert_eq(attach(sim, dfd, ioas), 0);
	cr_assert_eq(kioctl(sim, dfd, VU_DEVICE_GET_INFO, &info), 0);
	cr_assert_eq(info.num_regions, 9);

	/* Objects in use cannot be destroyed. */
	cr_assert_eq(destroy(sim, ifd, ioas), -EBUSY);
	cr_assert_eq(destroy(sim, ifd, devid), -EBUSY);
	cr_assert_eq(destroy(sim, ifd, 4242), -ENOENT);
	/* Too short for GET_HW_INFO (32 bytes at least). */
	cr_assert_eq(kioctl(sim, ifd, VU_IOMMU_GET_HW_INFO, &a), -EINVAL);

	/* The iommufd fd may close first: the bound device holds the iommufd. */
	cr_assert_eq(K->close(sim, ifd), 0);
	cr_assert_eq(kioctl(sim, dfd, VU_DEVICE_GET_INFO, &info), 0);
	cr_assert_eq(K->close(sim, dfd), 0);
	cr_assert_eq(K->close(sim, c), 0);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, ioas_destroy_after_detach)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct {
		uint32_t argsz, flags;
	} det = { 8, 0 };
	uint32_t ioas = 0;
	int dfd, ifd;

	dfd = kopen(sim, vfiomig_sim_device_cdev_path(dev));
	ifd = kopen(sim, "/dev/iommu");
	cr_assert_eq(bind(sim, dfd, ifd, NULL), 0);
	cr_assert_eq(ioas_alloc(sim, ifd, &ioas), 0);
	cr_assert_eq(attach(sim, dfd, ioas), 0);
	cr_assert_eq(kioctl(sim, dfd, VU_DEVICE_DETACH_IOMMUFD_PT, &det), 0);
	cr_assert_eq(destroy(sim, ifd, ioas), 0);
	cr_assert_eq(destroy(sim, ifd, ioas), -ENOENT);
	cr_assert_eq(close_all(sim, (int[]){ dfd, ifd }, 2), 0);
	/* Closing the bound cdev unblocked the group. */
	ifd = group_open(sim, dev);
	cr_assert_geq(ifd, 0);
	cr_assert_eq(K->close(sim, ifd), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, cdev_and_group_paths_exclude_each_other)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_device_attach_iommufd_pt at = { .argsz = sizeof(at), .pt_id = 1 };
	int c, g, d, dfd, ifd;

	d = legacy_open(sim, dev, &c, &g);
	ifd = kopen(sim, "/dev/iommu");
	/* A group-opened device fd is not a cdev. */
	cr_assert_eq(bind(sim, d, ifd, NULL), -EINVAL);
	cr_assert_eq(kioctl(sim, d, VU_DEVICE_ATTACH_IOMMUFD_PT, &at), -ENOTTY);
	/* The group is open: a cdev cannot bind. */
	dfd = kopen(sim, vfiomig_sim_device_cdev_path(dev));
	cr_assert_geq(dfd, 0);
	cr_assert_eq(bind(sim, dfd, ifd, NULL), -EBUSY);
	cr_assert_eq(close_all(sim, (int[]){ dfd, ifd, d, g, c }, 5), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, group_with_iommufd_as_container)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	int g, ifd, d;

	g = group_open(sim, dev);
	ifd = kopen(sim, "/dev/iommu");
	cr_assert_eq(set_container(sim, g, ifd), 0);
	cr_assert_eq(group_flags(sim, g), VU_GROUP_FLAGS_VIABLE | VU_GROUP_FLAGS_CONTAINER_SET);
	d = kioctl(sim, g, VU_GROUP_GET_DEVICE_FD, (void *)vfiomig_sim_device_name(dev));
	cr_assert_geq(d, 0);
	cr_assert_eq(close_all(sim, (int[]){ d, ifd }, 2), 0);
	cr_assert_eq(kioctl(sim, g, VU_GROUP_UNSET_CONTAINER, NULL), 0);
	cr_assert_eq(K->close(sim, g), 0);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ leaks, ctx */

Test(sim, counters_return_to_zero_and_free_closes_leftovers)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	struct vu_region_info bar0;
	void *p = NULL;
	int c, g, d;

	for (int round = 0; round < 3; round++) {
		d = legacy_open(sim, dev, &c, &g);
		bar0 = region_info(sim, d, 0);
		cr_assert_eq(K->mmap(sim, d, bar0.offset, 4096, PROT_READ, &p), 0);
		cr_assert_eq(vfiomig_sim_open_fds(sim), 3);
		cr_assert_eq(vfiomig_sim_live_maps(sim), 1);
		cr_assert_eq(K->munmap(sim, p, 4096), 0);
		cr_assert_eq(close_all(sim, (int[]){ c, g, d }, 3), 0);
		cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
		cr_assert_eq(vfiomig_sim_live_maps(sim), 0);
	}
	/* Left open: freed with the simulator. */
	d = legacy_open(sim, dev, &c, &g);
	bar0 = region_info(sim, d, 0);
	cr_assert_eq(K->mmap(sim, d, bar0.offset, 4096, PROT_READ, &p), 0);
	cr_assert_eq(fcntl(d, F_GETFD) != -1, 1);
	vfiomig_sim_free(sim);
	cr_assert_eq(fcntl(d, F_GETFD), -1, "the real fd was closed");
	assert_no_leaks();
}

Test(sim, ctx_new_installs_the_sim_ops)
{
	struct vfiomig_sim *sim = sim_make(0);
	VFIOMIG_OPTS(ctx_opts, bad, .kernel_ops = vfiomig_kernel_ops_default());
	VFIOMIG_OPTS(ctx_opts, bad2, .kernel_user = sim);
	VFIOMIG_OPTS(ctx_opts, ok, .log_priority = VFIOMIG_LOG_DEBUG);
	struct vfiomig_ctx *ctx = NULL;

	cr_assert_eq(vfiomig_sim_ctx_new(sim, &bad, &ctx), -EINVAL);
	cr_assert_eq(vfiomig_sim_ctx_new(sim, &bad2, &ctx), -EINVAL);
	cr_assert_null(ctx);
	cr_assert_eq(vfiomig_sim_ctx_new(sim, &ok, &ctx), 0);
	cr_assert_not_null(ctx);
	cr_assert_eq(vfiomig_ctx_get_log_priority(ctx), VFIOMIG_LOG_DEBUG);
	vfiomig_ctx_unref(ctx);
	cr_assert_eq(vfiomig_sim_ctx_new(sim, NULL, &ctx), 0);
	vfiomig_ctx_unref(ctx);
	cr_assert_eq(vfiomig_sim_ctx_new(NULL, NULL, &ctx), -EINVAL);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, sim_new_refuses_unknown_flags)
{
	VFIOMIG_OPTS(sim_opts, o, .flags = 1u << 9);
	struct vfiomig_sim *sim = (void *)1;

	cr_assert_eq(vfiomig_sim_new(&o, &sim), -EINVAL);
	cr_assert_null(sim);
	cr_assert_eq(vfiomig_sim_new(NULL, &sim), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------------ spec */

Test(sim, spec_builds_the_described_device)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = NULL, *md = NULL;
	struct vu_region_info bar0;
	uint16_t ids[2];
	size_t len;
	int c, g, d;

	cr_assert_eq(vfiomig_sim_device_add_spec(
			     sim, NULL, "sim:pci,name=0000:05:00.0,bar0=1M,vendor=0x8086,sparse=0",
			     &dev),
		     0, "%s", sim_last_error(sim));
	cr_assert_str_eq(vfiomig_sim_device_name(dev), "0000:05:00.0");
	d = legacy_open(sim, dev, &c, &g);
	bar0 = region_info(sim, d, 0);
	cr_assert_eq(bar0.size, 1 << 20);
	cr_assert_eq(bar0.cap_offset, 0);
	cr_assert_eq(bar0.flags & VU_REGION_INFO_FLAG_CAPS, 0);
	cr_assert_eq(K->pread(sim, d, ids, 4, region_info(sim, d, 7).offset), 4);
	cr_assert_eq(ids[0], 0x8086);
	cr_assert_eq(ids[1], 0x10f0);
	cr_assert_eq(close_all(sim, (int[]){ d, g, c }, 3), 0);

	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL,
						 "sim:mdev,device=0x3253,subvendor=0x1,subdevice=2,"
						 "bar0=8k,msix_mappable=1",
						 &md),
		     0, "%s", sim_last_error(sim));
	cr_assert_eq(strncmp(vfiomig_sim_device_sysfs_path(md), "/sys/bus/mdev/devices/", 22), 0);
	cr_assert_not_null(vfiomig_sim_device_region_mem(md, 0, &len));
	cr_assert_eq(len, 8192);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, "sim:pci", &dev), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim, spec_refuses_bad_strings)
{
	static const struct {
		const char *spec;
		const char *why; /* a word the reason must contain */
	} bad[] = {
		{ "pci,name=0000:05:00.0", "sim:" },
		{ "sim:usb", "kind" },
		{ "sim:", "kind" },
		{ "sim:pci,colour=blue", "unknown key" },
		{ "sim:pci,vendor=0x10000", "bad value" },
		{ "sim:pci,vendor=-1", "bad value" },
		{ "sim:pci,vendor=12ab", "bad value" },
		{ "sim:pci,bar0=1X", "bad value" },
		{ "sim:pci,bar0=", "key=value" },
		{ "sim:pci,bar0=99999999999999999999", "bad value" },
		{ "sim:pci,sparse=2", "bad value" },
		{ "sim:pci,,sparse=1", "key=value" },
		{ "sim:pci,sparse", "key=value" },
		{ "sim:pci,sparse=1,sparse=0", "twice" },
		{ "sim:pci,name=nope", "PCI address" },
		{ "sim:pci,bar0=3K", "power of two" },
	};
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = (void *)1;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, bad[i].spec, &dev), -EINVAL,
			     "%s", bad[i].spec);
		cr_assert_null(dev);
		cr_assert_not_null(strstr(sim_last_error(sim), bad[i].why), "%s: \"%s\"",
				   bad[i].spec, sim_last_error(sim));
	}
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, NULL, &dev), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, "sim:pci,name=0000:05:00.0", &dev), 0);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, "sim:pci,name=0000:05:00.0", &dev),
		     -EEXIST);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ fault injector */

struct fault_fx {
	struct vfiomig_sim *sim;
	struct vfiomig_fault *f;
	const struct vfiomig_kernel_ops *F;
	int c, g, d;
	uint64_t bar0;
};

static void fault_setup(struct fault_fx *x)
{
	struct vfiomig_sim_device *dev;

	x->sim = sim_make(0);
	dev = dev_make(x->sim, VFIOMIG_DEVKIND_PCI, 0, NULL);
	x->d = legacy_open(x->sim, dev, &x->c, &x->g);
	x->bar0 = region_info(x->sim, x->d, 0).offset;
	cr_assert_eq(vfiomig_fault_new(K, x->sim, &x->f), 0);
	x->F = vfiomig_fault_kernel_ops();
}

static void fault_teardown(struct fault_fx *x)
{
	vfiomig_fault_free(x->f);
	vfiomig_sim_free(x->sim);
}

TestSuite(fault, .init = leak_baseline);

Test(fault, fails_the_second_pread_with_eintr)
{
	VFIOMIG_OPTS(fault_spec, s, .op = VFIOMIG_KOP_PREAD, .nth = 2, .error = -EINTR);
	struct fault_fx x;
	uint8_t buf[8];

	fault_setup(&x);
	cr_assert_eq(vfiomig_fault_add(x.f, &s), 0);
	cr_assert_eq(x.F->pread(x.f, x.d, buf, 8, x.bar0), 8);
	cr_assert_eq(x.F->pread(x.f, x.d, buf, 8, x.bar0), -EINTR);
	cr_assert_eq(x.F->pread(x.f, x.d, buf, 8, x.bar0), 8);
	cr_assert_eq(vfiomig_fault_calls(x.f, VFIOMIG_KOP_PREAD), 3);
	cr_assert_eq(vfiomig_fault_fired(x.f), 1);
	/* Other ops pass through and are counted. */
	cr_assert_eq(x.F->ioctl(x.f, x.c, VU_GET_API_VERSION, NULL), 0);
	cr_assert_eq(vfiomig_fault_calls(x.f, VFIOMIG_KOP_IOCTL), 1);
	cr_assert_eq(vfiomig_fault_calls(x.f, 99), 0);
	fault_teardown(&x);
	assert_no_leaks();
}

Test(fault, shortens_transfers)
{
	VFIOMIG_OPTS(fault_spec, s, .op = VFIOMIG_KOP_PREAD, .short_len = 3);
	VFIOMIG_OPTS(fault_spec, z, .op = VFIOMIG_KOP_PWRITE, .short_len = 0);
	struct fault_fx x;
	uint8_t buf[8] = "abcdefgh", in[8] = { 0 };

	fault_setup(&x);
	cr_assert_eq(vfiomig_fault_add(x.f, &s), 0);
	cr_assert_eq(vfiomig_fault_add(x.f, &z), 0);
	/* short_len 0: returns 0 without writing. */
	cr_assert_eq(x.F->pwrite(x.f, x.d, buf, 8, x.bar0), 0);
	cr_assert_eq(K->pread(x.sim, x.d, in, 8, x.bar0), 8);
	cr_assert_eq(in[0], 0);
	cr_assert_eq(x.F->pwrite(x.f, x.d, buf, 8, x.bar0), 8);
	cr_assert_eq(x.F->pread(x.f, x.d, in, 8, x.bar0), 3);
	cr_assert_eq(memcmp(in, "abc", 3), 0);
	cr_assert_eq(x.F->pread(x.f, x.d, in, 8, x.bar0), 8);
	cr_assert_eq(vfiomig_fault_fired(x.f), 2);
	fault_teardown(&x);
	assert_no_leaks();
}

Test(fault, ioctl_request_filter_and_times)
{
	VFIOMIG_OPTS(fault_spec, s, .op = VFIOMIG_KOP_IOCTL, .ioctl_request = VU_DEVICE_GET_INFO,
		     .times = 2, .error = -EIO);
	struct vu_device_info info = { .argsz = sizeof(info) };
	struct fault_fx x;

	fault_setup(&x);
	cr_assert_eq(vfiomig_fault_add(x.f, &s), 0);
	cr_assert_eq(x.F->ioctl(x.f, x.c, VU_GET_API_VERSION, NULL), 0);
	cr_assert_eq(x.F->ioctl(x.f, x.d, VU_DEVICE_GET_INFO, &info), -EIO);
	cr_assert_eq(x.F->ioctl(x.f, x.d, VU_DEVICE_RESET, NULL), 0);
	cr_assert_eq(x.F->ioctl(x.f, x.d, VU_DEVICE_GET_INFO, &info), -EIO);
	cr_assert_eq(x.F->ioctl(x.f, x.d, VU_DEVICE_GET_INFO, &info), 0);
	cr_assert_eq(info.num_regions, 9);
	cr_assert_eq(vfiomig_fault_fired(x.f), 2);
	cr_assert_eq(vfiomig_fault_calls(x.f, VFIOMIG_KOP_IOCTL), 5);
	fault_teardown(&x);
	assert_no_leaks();
}

Test(fault, counts_from_when_armed_and_clear_disarms)
{
	VFIOMIG_OPTS(fault_spec, s, .op = VFIOMIG_KOP_OPEN, .nth = 2, .error = -EACCES);
	struct fault_fx x;
	int fd;

	fault_setup(&x);
	fd = x.F->open(x.f, "/dev/vfio/vfio", O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(x.F->close(x.f, fd), 0);
	cr_assert_eq(vfiomig_fault_add(x.f, &s), 0);
	fd = x.F->open(x.f, "/dev/vfio/vfio", O_RDWR); /* first since arming: passes */
	cr_assert_geq(fd, 0);
	cr_assert_eq(x.F->close(x.f, fd), 0);
	cr_assert_eq(x.F->open(x.f, "/dev/vfio/vfio", O_RDWR), -EACCES);
	/* The first matching fault applies. */
	s.nth = 1;
	s.error = -EPERM;
	cr_assert_eq(vfiomig_fault_add(x.f, &s), 0);
	s.error = -ENOENT;
	cr_assert_eq(vfiomig_fault_add(x.f, &s), 0);
	cr_assert_eq(x.F->open(x.f, "/dev/vfio/vfio", O_RDWR), -EPERM);
	vfiomig_fault_clear(x.f);
	fd = x.F->open(x.f, "/dev/vfio/vfio", O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(x.F->close(x.f, fd), 0);
	cr_assert_eq(vfiomig_fault_calls(x.f, VFIOMIG_KOP_OPEN), 5);
	cr_assert_eq(vfiomig_fault_calls(x.f, VFIOMIG_KOP_CLOSE), 3);
	cr_assert_eq(vfiomig_fault_fired(x.f), 2);
	fault_teardown(&x);
	assert_no_leaks();
}

Test(fault, add_validates_the_spec)
{
	struct {
		struct vfiomig_fault_spec s;
		uint64_t extra;
	} big;
	VFIOMIG_OPTS(fault_spec, s, .op = VFIOMIG_KOP_COUNT, .error = -EIO);
	struct vfiomig_fault *f = NULL;

	cr_assert_eq(vfiomig_fault_new(K, NULL, &f), 0);
	cr_assert_eq(vfiomig_fault_add(f, &s), -EINVAL);
	s.op = VFIOMIG_KOP_IOCTL;
	s.error = 0; /* an ioctl cannot be shortened */
	cr_assert_eq(vfiomig_fault_add(f, &s), -EINVAL);
	s.error = 5;
	cr_assert_eq(vfiomig_fault_add(f, &s), -EINVAL);
	s.op = VFIOMIG_KOP_READ;
	s.error = -EIO;
	s.ioctl_request = VU_DEVICE_GET_INFO;
	cr_assert_eq(vfiomig_fault_add(f, &s), -EINVAL);
	s.ioctl_request = 0;
	s.sz = 4;
	cr_assert_eq(vfiomig_fault_add(f, &s), -EINVAL);
	s.sz = sizeof(s);
	cr_assert_eq(vfiomig_fault_add(f, &s), 0);
	memset(&big, 0, sizeof(big));
	big.s = s;
	big.s.sz = sizeof(big);
	big.extra = 1;
	cr_assert_eq(vfiomig_fault_add(f, &big.s), -EINVAL);
	big.extra = 0;
	cr_assert_eq(vfiomig_fault_add(f, &big.s), 0);
	cr_assert_eq(vfiomig_fault_add(NULL, &s), -EINVAL);
	cr_assert_eq(vfiomig_fault_add(f, NULL), -EINVAL);
	vfiomig_fault_free(f);
	cr_assert_eq(vfiomig_fault_new(NULL, NULL, &f), -EINVAL);
	assert_no_leaks();
}

Test(fault, short_inner_table_gives_enosys)
{
	struct vfiomig_kernel_ops small;
	struct vfiomig_fault *f = NULL;
	struct vfiomig_sim *sim = sim_make(0);
	int fd;

	memcpy(&small, K, sizeof(small));
	small.sz = offsetof(struct vfiomig_kernel_ops, dup); /* open and close only */
	cr_assert_eq(vfiomig_fault_new(&small, sim, &f), 0);
	fd = vfiomig_fault_kernel_ops()->open(f, "/dev/vfio/vfio", O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(vfiomig_fault_kernel_ops()->dup(f, fd), -ENOSYS);
	cr_assert_eq(vfiomig_fault_kernel_ops()->ioctl(f, fd, VU_GET_API_VERSION, NULL), -ENOSYS);
	cr_assert_eq(vfiomig_fault_kernel_ops()->close(f, fd), 0);
	vfiomig_fault_free(f);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}
