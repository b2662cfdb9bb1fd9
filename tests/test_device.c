/* SPDX-License-Identifier: MIT */
/* Device handle: open by every kind of spec, adopt, sharing, errors, no leaks. */
#include "testutil.h"

#include <fcntl.h>
#include <unistd.h>

#include "uapi.h"

static struct simenv env;

static void setup(void)
{
	simenv_init(&env);
}

static void teardown(void)
{
	simenv_fini(&env);
}

TestSuite(device, .init = setup, .fini = teardown);

static void expect_pci_info(struct vfiomig_device *dev, int group, uint32_t backend)
{
	VFIOMIG_OPTS(device_info, di);

	cr_assert_eq(vfiomig_device_get_info(dev, &di), 0);
	cr_assert(di.flags & VFIOMIG_DEVICE_FLAGS_PCI);
	cr_assert(di.flags & VFIOMIG_DEVICE_FLAGS_RESET);
	cr_assert_eq(di.num_regions, 9);
	cr_assert_eq(di.num_irqs, 5);
	cr_assert_eq(di.backend, backend);
	cr_assert_eq(di.group, group);
}

Test(device, open_by_pci_address)
{
	struct vfiomig_sim_device *sd = sim_add(&env, "sim:pci,name=0000:03:00.0");
	struct vfiomig_device *dev;

	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), 0, "%s",
		     env.log.last);
	cr_assert_str_eq(vfiomig_device_name(dev), "0000:03:00.0");
	cr_assert_eq(vfiomig_device_group(dev), vfiomig_sim_device_group(sd));
	cr_assert_geq(vfiomig_device_fd(dev), 0);
	cr_assert_geq(vfiomig_device_group_fd(dev), 0);
	cr_assert_geq(vfiomig_device_container_fd(dev), 0);
	cr_assert_eq(vfiomig_device_iommufd(dev), -ENOENT);
	cr_assert_eq(vfiomig_device_ctx(dev), env.ctx);
	expect_pci_info(dev, vfiomig_sim_device_group(sd), VFIOMIG_BACKEND_GROUP);
	/* device + group + container */
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 3);
	vfiomig_device_close(dev);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);
	cr_assert_eq(env.log.errors, 0);
}

Test(device, open_by_short_pci_address_and_sysfs_path)
{
	struct vfiomig_sim_device *sd = sim_add(&env, "sim:pci,name=0000:05:1f.7");
	struct vfiomig_device *dev;
	char path[256];

	cr_assert_eq(vfiomig_device_open(env.ctx, "05:1f.7", NULL, &dev), 0, "%s", env.log.last);
	cr_assert_str_eq(vfiomig_device_name(dev), "0000:05:1f.7");
	vfiomig_device_close(dev);

	snprintf(path, sizeof(path), "%s/", vfiomig_sim_device_sysfs_path(sd));
	cr_assert_eq(vfiomig_device_open(env.ctx, path, NULL, &dev), 0, "%s", env.log.last);
	cr_assert_str_eq(vfiomig_device_name(dev), "0000:05:1f.7");
	vfiomig_device_close(dev);
}

Test(device, open_mdev_by_uuid)
{
	struct vfiomig_sim_device *sd =
		sim_add(&env, "sim:mdev,name=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
	struct vfiomig_device *dev;

	/* Upper case is accepted and canonicalised. */
	cr_assert_eq(vfiomig_device_open(env.ctx, "83B8F4F2-509F-382F-3C1E-E6BFE0FA1001", NULL,
					 &dev), 0, "%s", env.log.last);
	cr_assert_str_eq(vfiomig_device_name(dev), "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
	cr_assert_eq(vfiomig_device_group(dev), vfiomig_sim_device_group(sd));
	vfiomig_device_close(dev);
}

Test(device, open_through_cdev_and_iommufd)
{
	struct vfiomig_sim_device *sd = sim_add(&env, "sim:pci,name=0000:07:00.0");
	VFIOMIG_OPTS(device_open_opts, o, .flags = VFIOMIG_OPEN_CDEV);
	VFIOMIG_OPTS(device_info, di);
	struct vfiomig_device *dev, *dev2;

	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:07:00.0", &o, &dev), 0, "%s",
		     env.log.last);
	cr_assert_geq(vfiomig_device_iommufd(dev), 0);
	cr_assert_eq(vfiomig_device_group_fd(dev), -ENOENT);
	cr_assert_eq(vfiomig_device_container_fd(dev), -ENOENT);
	cr_assert_eq(vfiomig_device_get_info(dev, &di), 0);
	cr_assert_eq(di.backend, VFIOMIG_BACKEND_IOMMUFD);
	/* No type1 container: IOMMU info is not available through it. */
	{
		void *buf;
		size_t len;

		cr_assert_eq(vfiomig_device_get_iommu_info_raw(dev, &buf, &len), -ENOTTY);
	}
	vfiomig_device_close(dev);

	/* The cdev path itself is a spec too. */
	cr_assert_eq(vfiomig_device_open(env.ctx, vfiomig_sim_device_cdev_path(sd), NULL, &dev2),
		     0, "%s", env.log.last);
	cr_assert_geq(vfiomig_device_iommufd(dev2), 0);
	vfiomig_device_close(dev2);
}

Test(device, cdev_refused_when_kernel_has_none)
{
	struct simenv e2;
	struct vfiomig_device *dev = NULL;
	VFIOMIG_OPTS(device_open_opts, o, .flags = VFIOMIG_OPEN_CDEV);

	simenv_init_flags(&e2, VFIOMIG_SIM_F_NO_IOMMUFD, false);
	sim_add(&e2, "sim:pci,name=0000:07:00.0");
	cr_assert_eq(vfiomig_device_open(e2.ctx, "0000:07:00.0", &o, &dev), -ENOENT);
	cr_assert_null(dev);
	cr_assert_eq(e2.log.errors, 1);
	cr_assert(strstr(e2.log.last, "cdev"), "message: %s", e2.log.last);
	simenv_fini(&e2);
}

Test(device, bad_specs_are_refused)
{
	static const char *const bad[] = {
		"", "0000:03:00", "0000:03:20.0", "0000:03:00.8", "zz:00.0",
		"83b8f4f2-509f-382f-3c1e-e6bfe0fa100", "hello", "/dev/vfio/devices/",
		"/dev/vfio/devices/foo",
	};
	struct vfiomig_device *dev = (void *)1;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int before = env.log.errors;

		cr_assert_eq(vfiomig_device_open(env.ctx, bad[i], NULL, &dev), -EINVAL, "'%s'",
			     bad[i]);
		cr_assert_null(dev);
		cr_assert_eq(env.log.errors, before + 1, "'%s' logged no error", bad[i]);
	}
}

Test(device, missing_device_is_enoent_with_message)
{
	struct vfiomig_device *dev;

	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:09:00.0", NULL, &dev), -ENOENT);
	cr_assert(strstr(env.log.last, "0000:09:00.0"), "message: %s", env.log.last);
	cr_assert(strstr(env.log.last, "iommu_group"), "message: %s", env.log.last);
}

Test(device, group_not_viable_is_ebusy)
{
	struct vfiomig_sim_device *a = sim_add(&env, "sim:pci,name=0000:03:00.0");
	struct vfiomig_sim_device *b;
	VFIOMIG_OPTS(sim_device_opts, so, .name = "0000:03:00.1", .same_group_as = a);
	struct vfiomig_device *dev;

	cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &b), 0);
	cr_assert_eq(vfiomig_sim_device_set_driver(b, "e1000e"), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), -EBUSY);
	cr_assert(strstr(env.log.last, "not viable"), "message: %s", env.log.last);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);

	cr_assert_eq(vfiomig_sim_device_set_driver(b, "vfio-pci"), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), 0, "%s",
		     env.log.last);
	vfiomig_device_close(dev);
}

Test(device, devices_of_one_group_share_group_and_container)
{
	struct vfiomig_sim_device *a = sim_add(&env, "sim:pci,name=0000:03:00.0");
	VFIOMIG_OPTS(sim_device_opts, so, .name = "0000:03:00.1", .same_group_as = a);
	struct vfiomig_sim_device *b;
	struct vfiomig_device *da, *db;

	cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &b), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &da), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.1", NULL, &db), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_device_group_fd(da), vfiomig_device_group_fd(db));
	cr_assert_eq(vfiomig_device_container_fd(da), vfiomig_device_container_fd(db));
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 4); /* 2 devices, 1 group, 1 container */
	/* Closing the first opener keeps the group alive for the second. */
	vfiomig_device_close(da);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 3);
	{
		VFIOMIG_OPTS(region_info, ri);
		cr_assert_eq(vfiomig_region_get_info(db, 7, &ri), 0);
	}
	vfiomig_device_close(db);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);
}

Test(device, share_container_of_another_device)
{
	struct vfiomig_device *da, *db, *dc;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	sim_add(&env, "sim:pci,name=0000:04:00.0");
	sim_add(&env, "sim:pci,name=0000:05:00.0");
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &da), 0);
	VFIOMIG_OPTS(device_open_opts, o, .share_container_of = da, .name = "nic1");
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:04:00.0", &o, &db), 0, "%s",
		     env.log.last);
	cr_assert_str_eq(vfiomig_device_name(db), "nic1");
	cr_assert_eq(vfiomig_device_container_fd(da), vfiomig_device_container_fd(db));
	cr_assert_neq(vfiomig_device_group_fd(da), vfiomig_device_group_fd(db));
	/* Without sharing, a new container. */
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:05:00.0", NULL, &dc), 0);
	cr_assert_neq(vfiomig_device_container_fd(dc), vfiomig_device_container_fd(da));
	/* Close the container's first user first: the second keeps it. */
	vfiomig_device_close(da);
	{
		void *buf;
		size_t len;

		cr_assert_eq(vfiomig_device_get_iommu_info_raw(db, &buf, &len), 0, "%s",
			     env.log.last);
		vfiomig_free(buf);
	}
	vfiomig_device_close(db);
	vfiomig_device_close(dc);
}

Test(device, opts_are_checked)
{
	struct vfiomig_device *dev;
	struct {
		struct vfiomig_device_open_opts o;
		uint64_t future;
	} big;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	{
		VFIOMIG_OPTS(device_open_opts, o, .flags = 1u << 30);
		cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", &o, &dev), -EINVAL);
	}
	{
		VFIOMIG_OPTS(device_open_opts, o, .flags = VFIOMIG_OPEN_CDEV | VFIOMIG_OPEN_NO_CDEV);
		cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", &o, &dev), -EINVAL);
	}
	{
		struct vfiomig_device_open_opts o = { .sz = 2 };
		cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", &o, &dev), -EINVAL);
	}
	/* A newer caller's struct: zero tail accepted, non-zero tail refused. */
	memset(&big, 0, sizeof(big));
	big.o.sz = sizeof(big);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", &big.o, &dev), 0, "%s",
		     env.log.last);
	vfiomig_device_close(dev);
	big.future = 1;
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", &big.o, &dev), -EINVAL);
	cr_assert(strstr(env.log.last, "does not know"), "message: %s", env.log.last);
	/* An older caller's struct (only sz + share_container_of) still works. */
	{
		struct vfiomig_device_open_opts o = { .sz = offsetof(struct vfiomig_device_open_opts,
								      name) };
		cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", &o, &dev), 0);
		vfiomig_device_close(dev);
	}
}

/* Open the group/container/device by hand through the simulated kernel, as a VMM would. */
static void vmm_open(const char *name, int group, int *cfd, int *gfd, int *dfd)
{
	const struct vfiomig_kernel_ops *k = vfiomig_sim_kernel_ops();
	char path[64];

	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	*cfd = k->open(env.sim, "/dev/vfio/vfio", O_RDWR);
	*gfd = k->open(env.sim, path, O_RDWR);
	cr_assert_geq(*cfd, 0);
	cr_assert_geq(*gfd, 0);
	cr_assert_eq(k->ioctl(env.sim, *gfd, VU_GROUP_SET_CONTAINER, cfd), 0);
	cr_assert_eq(k->ioctl(env.sim, *cfd, VU_SET_IOMMU, (void *)(uintptr_t)VU_TYPE1v2_IOMMU), 0);
	*dfd = k->ioctl(env.sim, *gfd, VU_GROUP_GET_DEVICE_FD, (void *)name);
	cr_assert_geq(*dfd, 0);
}

Test(device, adopt_dup_leaves_caller_fds_open)
{
	const struct vfiomig_kernel_ops *k = vfiomig_sim_kernel_ops();
	struct vfiomig_sim_device *sd = sim_add(&env, "sim:pci,name=0000:03:00.0");
	struct vfiomig_device *dev;
	int cfd, gfd, dfd;

	vmm_open("0000:03:00.0", vfiomig_sim_device_group(sd), &cfd, &gfd, &dfd);
	VFIOMIG_OPTS(device_adopt_opts, o,
		     .flags = VFIOMIG_ADOPT_DUP | VFIOMIG_ADOPT_HAS_CONTAINER |
			      VFIOMIG_ADOPT_HAS_GROUP,
		     .container_fd = cfd, .group_fd = gfd, .name = "vmm-nic");
	cr_assert_eq(vfiomig_device_adopt(env.ctx, dfd, &o, &dev), 0, "%s", env.log.last);
	cr_assert_str_eq(vfiomig_device_name(dev), "vmm-nic");
	cr_assert_neq(vfiomig_device_fd(dev), dfd);
	cr_assert_eq(vfiomig_device_group(dev), -ENOENT);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 6);
	{
		void *buf;
		size_t len;

		cr_assert_eq(vfiomig_device_get_iommu_info_raw(dev, &buf, &len), 0);
		vfiomig_free(buf);
	}
	vfiomig_device_close(dev);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 3);
	k->close(env.sim, dfd);
	k->close(env.sim, gfd);
	k->close(env.sim, cfd);
}

Test(device, adopt_take_owns_and_closes)
{
	struct vfiomig_sim_device *sd = sim_add(&env, "sim:pci,name=0000:03:00.0");
	struct vfiomig_device *dev;
	int cfd, gfd, dfd;

	vmm_open("0000:03:00.0", vfiomig_sim_device_group(sd), &cfd, &gfd, &dfd);
	VFIOMIG_OPTS(device_adopt_opts, o,
		     .flags = VFIOMIG_ADOPT_TAKE | VFIOMIG_ADOPT_HAS_CONTAINER |
			      VFIOMIG_ADOPT_HAS_GROUP,
		     .container_fd = cfd, .group_fd = gfd);
	cr_assert_eq(vfiomig_device_adopt(env.ctx, dfd, &o, &dev), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_device_fd(dev), dfd);
	cr_assert_eq(vfiomig_device_group_fd(dev), gfd);
	cr_assert_eq(vfiomig_device_container_fd(dev), cfd);
	{
		char want[32];

		snprintf(want, sizeof(want), "fd:%d", dfd);
		cr_assert_str_eq(vfiomig_device_name(dev), want);
	}
	vfiomig_device_close(dev);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);
}

Test(device, adopt_device_fd_alone_and_bad_adoptions)
{
	const struct vfiomig_kernel_ops *k = vfiomig_sim_kernel_ops();
	struct vfiomig_sim_device *sd = sim_add(&env, "sim:pci,name=0000:03:00.0");
	struct vfiomig_device *dev = NULL;
	int cfd, gfd, dfd;

	vmm_open("0000:03:00.0", vfiomig_sim_device_group(sd), &cfd, &gfd, &dfd);
	/* No opts: refused, nothing closed. */
	cr_assert_eq(vfiomig_device_adopt(env.ctx, dfd, NULL, &dev), -EINVAL);
	{
		VFIOMIG_OPTS(device_adopt_opts, o, .flags = VFIOMIG_ADOPT_TAKE | VFIOMIG_ADOPT_DUP);
		cr_assert_eq(vfiomig_device_adopt(env.ctx, dfd, &o, &dev), -EINVAL);
	}
	{
		VFIOMIG_OPTS(device_adopt_opts, o, .flags = 0);
		cr_assert_eq(vfiomig_device_adopt(env.ctx, dfd, &o, &dev), -EINVAL);
	}
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 3);
	/* Group + iommufd together is refused. */
	{
		VFIOMIG_OPTS(device_adopt_opts, o,
			     .flags = VFIOMIG_ADOPT_DUP | VFIOMIG_ADOPT_HAS_GROUP |
				      VFIOMIG_ADOPT_HAS_IOMMUFD,
			     .group_fd = gfd, .iommufd = cfd);
		cr_assert_eq(vfiomig_device_adopt(env.ctx, dfd, &o, &dev), -EINVAL);
	}
	/* A container fd is not a device fd: refused, and with DUP the caller's fd survives. */
	{
		VFIOMIG_OPTS(device_adopt_opts, o, .flags = VFIOMIG_ADOPT_DUP);
		cr_assert_lt(vfiomig_device_adopt(env.ctx, cfd, &o, &dev), 0);
		cr_assert_null(dev);
	}
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 3);
	/* Device fd alone, taken. */
	{
		VFIOMIG_OPTS(device_adopt_opts, o, .flags = VFIOMIG_ADOPT_TAKE);
		VFIOMIG_OPTS(device_info, di);

		cr_assert_eq(vfiomig_device_adopt(env.ctx, dfd, &o, &dev), 0, "%s", env.log.last);
		cr_assert_eq(vfiomig_device_get_info(dev, &di), 0);
		cr_assert_eq(di.backend, VFIOMIG_BACKEND_NONE);
		cr_assert_eq(vfiomig_device_group_fd(dev), -ENOENT);
		vfiomig_device_close(dev);
	}
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 2);
	k->close(env.sim, gfd);
	k->close(env.sim, cfd);
}

Test(device, reset_and_migration_info_on_a_device_without_migration)
{
	VFIOMIG_OPTS(migration_info, mi);
	struct vfiomig_device *dev;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), 0);
	cr_assert_eq(vfiomig_device_reset(dev), 0);
	cr_assert_eq(vfiomig_device_migration_info(dev, &mi), 0, "%s", env.log.last);
	cr_assert_eq(mi.protocols, 0);
	cr_assert_eq(mi.v1_region, -1);
	cr_assert(strstr(mi.reason, "does not support migration"), "reason: %s", mi.reason);
	vfiomig_device_close(dev);
}

Test(device, iommu_info_chain_from_the_container)
{
	struct vfiomig_iommu_migration mig;
	struct vfiomig_iova_range r[4];
	struct vfiomig_device *dev;
	uint32_t nr = 0, avail = 0;
	size_t len;
	void *buf;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), 0);
	cr_assert_eq(vfiomig_device_get_iommu_info_raw(dev, &buf, &len), 0);
	cr_assert_gt(len, 24); /* the growth retry fetched the caps */
	cr_assert_eq(vfiomig_caps_validate(env.ctx, VFIOMIG_INFO_IOMMU_TYPE1, buf, len), 3);
	cr_assert_eq(vfiomig_cap_iommu_migration(env.ctx, buf, len, &mig), 0);
	cr_assert_eq(mig.pgsize_bitmap, 0x1000);
	cr_assert_eq(mig.max_dirty_bitmap_size, 256ull << 20);
	cr_assert_eq(vfiomig_cap_dma_avail(env.ctx, buf, len, &avail), 0);
	cr_assert_gt(avail, 0);
	cr_assert_eq(vfiomig_cap_iova_ranges(env.ctx, buf, len, r, 4, &nr), 0);
	cr_assert_geq(nr, 1);
	cr_assert_leq(r[0].start, r[0].end);
	vfiomig_free(buf);
	vfiomig_device_close(dev);
}

/*
 * Fail every kernel call of the open sequence in turn (each op, each
 * position): the open either fails with that error and leaves nothing
 * open, or (where the library retries, e.g. -EINTR) succeeds.
 */
Test(device, open_failure_at_every_step_leaks_nothing)
{
	static const uint32_t ops[] = { VFIOMIG_KOP_OPEN, VFIOMIG_KOP_IOCTL, VFIOMIG_KOP_READLINK };
	int failures = 0;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++) {
		for (uint64_t nth = 1; nth <= 12; nth++) {
			struct vfiomig_device *dev = NULL;
			int ret;

			vfiomig_fault_clear(env.fault);
			fault(&env, ops[o], nth, -EIO, 0, 0);
			ret = vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev);
			if (ret == 0) {
				vfiomig_device_close(dev);
			} else {
				cr_assert_eq(ret, -EIO, "op %u call %llu: %d", ops[o],
					     (unsigned long long)nth, ret);
				cr_assert_null(dev);
				failures++;
			}
			cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0, "op %u call %llu leaked fds",
				     ops[o], (unsigned long long)nth);
		}
	}
	/* open: 3 calls, ioctl: 6 or more, readlink: 1 -- so at least 10 distinct failures. */
	cr_assert_geq(failures, 10, "only %d injected failures hit the open path", failures);
	vfiomig_fault_clear(env.fault);
}

Test(device, eintr_on_ioctls_is_retried)
{
	struct vfiomig_device *dev;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	fault(&env, VFIOMIG_KOP_IOCTL, 1, -EINTR, 0, VU_GROUP_GET_STATUS);
	fault(&env, VFIOMIG_KOP_IOCTL, 1, -EINTR, 0, VU_DEVICE_GET_INFO);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_fault_fired(env.fault), 2);
	vfiomig_device_close(dev);
}

/*
 * A kernel that answers what the simulator would not: its ops, with some
 * ioctl answers rewritten. The ctx's kernel_user is the simulator; the
 * lie is a static (each test runs in a worker of its own).
 */
static struct {
	bool api_version;       /* VFIO_GET_API_VERSION answers api_version_value */
	int api_version_value;
	uint32_t num_regions;   /* VFIO_DEVICE_GET_INFO reports this many regions (0: truth) */
	uint32_t get_api_calls;
} lie;

static int lie_ioctl(void *user, int fd, unsigned long req, void *arg)
{
	int ret = vfiomig_sim_kernel_ops()->ioctl(user, fd, req, arg);

	if (req == VU_GET_API_VERSION) {
		lie.get_api_calls++;
		if (lie.api_version && ret >= 0)
			ret = lie.api_version_value;
	}
	if (req == VU_DEVICE_GET_INFO && ret >= 0 && lie.num_regions)
		((struct vu_device_info *)arg)->num_regions = lie.num_regions;
	return ret;
}

static struct vfiomig_ctx *lying_ctx(void)
{
	static struct vfiomig_kernel_ops ops;
	struct vfiomig_ctx *ctx;

	ops = *vfiomig_sim_kernel_ops();
	ops.ioctl = lie_ioctl;
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = logcap_fn, .log_user = &env.log,
		     .log_priority = VFIOMIG_LOG_INFO, .kernel_ops = &ops, .kernel_user = env.sim);
	cr_assert_eq(vfiomig_ctx_new(&co, &ctx), 0);
	return ctx;
}

/* Only VFIO_API_VERSION (0) is the API this library speaks: any other answer is refused. */
Test(device, a_container_with_another_api_version_is_refused)
{
	static const int versions[] = { 1, 2, 0x7fffffff };
	struct vfiomig_ctx *ctx = lying_ctx();
	struct vfiomig_device *dev = NULL;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	lie.api_version = true;
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		lie.api_version_value = versions[i];
		lie.get_api_calls = 0;
		cr_assert_eq(vfiomig_device_open(ctx, "0000:03:00.0", NULL, &dev), -EPROTO,
			     "API version %d", versions[i]);
		cr_assert_eq(lie.get_api_calls, 1);
		cr_assert_null(dev);
		cr_assert(strstr(env.log.last_err, "VFIO_GET_API_VERSION"), "%s", env.log.last_err);
		cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0, "the container fd was left open");
	}
	lie.api_version_value = 0;
	cr_assert_eq(vfiomig_device_open(ctx, "0000:03:00.0", NULL, &dev), 0, "%s", env.log.last);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
}

/* At most 4096 regions are believed (VFIO_DEVICE_GET_INFO is the kernel's word, not a bound). */
Test(device, more_than_4096_regions_are_not_believed)
{
	struct vfiomig_ctx *ctx = lying_ctx();
	VFIOMIG_OPTS(device_info, di);
	struct vfiomig_device *dev = NULL;

	sim_add(&env, "sim:pci,name=0000:03:00.0");
	lie.num_regions = 4097;
	cr_assert_eq(vfiomig_device_open(ctx, "0000:03:00.0", NULL, &dev), -EINVAL);
	cr_assert_null(dev);
	cr_assert(strstr(env.log.last_err, "4097 regions"), "%s", env.log.last_err);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);
	lie.num_regions = 4096;
	cr_assert_eq(vfiomig_device_open(ctx, "0000:03:00.0", NULL, &dev), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_device_get_info(dev, &di), 0);
	cr_assert_eq(di.num_regions, 4096);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
}

/* A container that does not offer type1v2 is refused before the library tries to use it. */
Test(device, a_container_without_type1v2_is_refused)
{
	struct simenv e2;
	struct vfiomig_device *dev = NULL;

	simenv_init_flags(&e2, VFIOMIG_SIM_F_NO_TYPE1 | VFIOMIG_SIM_F_NO_IOMMUFD, true);
	sim_add(&e2, "sim:pci,name=0000:03:00.0");
	/* Were it tried anyway, VFIO_SET_IOMMU would say so. */
	fault(&e2, VFIOMIG_KOP_IOCTL, 1, -EIO, 0, VU_SET_IOMMU);
	cr_assert_eq(vfiomig_device_open(e2.ctx, "0000:03:00.0", NULL, &dev), -EOPNOTSUPP, "%s",
		     e2.log.last);
	cr_assert_null(dev);
	cr_assert(strstr(e2.log.last_err, "type1v2"), "%s", e2.log.last_err);
	cr_assert_eq(vfiomig_fault_fired(e2.fault), 0, "VFIO_SET_IOMMU was attempted");
	simenv_fini(&e2);
}
