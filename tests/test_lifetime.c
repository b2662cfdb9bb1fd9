/* SPDX-License-Identifier: MIT */
/*
 * Object lifetimes: the context and devices are reference counted by
 * what is built on them, device sets never own their members, and every
 * release order is safe (no use after free, nothing leaked). Under ASan
 * the use-after-free cases crash if a reference is missing; in every
 * build the simulator's fd and mapping counts show what is still open.
 */
#include "testutil.h"

#include <stdlib.h>

static struct simenv env;

static void setup(void)
{
	simenv_init(&env);
}

static void teardown(void)
{
	simenv_fini(&env);
}

TestSuite(lifetime, .init = setup, .fini = teardown);

static struct vfiomig_sim_device *last_sd; /* the simulated device of the last open_mig_dev() */

static struct vfiomig_device *open_mig_dev(const char *name)
{
	VFIOMIG_OPTS(sim_device_opts, so, .name = name, .migration = VFIOMIG_SIM_MIG_V2 |
		     VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY, .state_size = 64 << 10);
	struct vfiomig_device *dev;

	cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &last_sd), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, name, NULL, &dev), 0, "%s", env.log.last);
	return dev;
}

/* The case the freeze review found: ctx freed first, device closed later. */
Test(lifetime, context_released_before_its_device_lives_until_the_device_closes)
{
	struct vfiomig_device *dev = open_mig_dev("0000:03:00.0");
	struct vfiomig_ctx *ctx = env.ctx;
	VFIOMIG_OPTS(device_info, di);

	env.ctx = NULL; /* the caller lets go of its reference first */
	cr_assert_null(vfiomig_ctx_unref(ctx));
	/* The device still works: it holds the context. */
	cr_assert_eq(vfiomig_device_get_info(dev, &di), 0);
	cr_assert_eq(vfiomig_device_ctx(dev), ctx);
	cr_assert_gt(vfiomig_sim_open_fds(env.sim), 0);
	vfiomig_device_close(dev); /* closes its fds, then frees the context */
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);
}

Test(lifetime, ctx_ref_and_unref_count)
{
	struct vfiomig_ctx *ctx = env.ctx;

	cr_assert_eq(vfiomig_ctx_ref(ctx), ctx);
	cr_assert_null(vfiomig_ctx_unref(ctx));
	/* Still alive: the first reference is env's. */
	cr_assert_eq(vfiomig_ctx_get_log_priority(ctx), VFIOMIG_LOG_INFO);
	cr_assert_null(vfiomig_ctx_ref(NULL));
	cr_assert_null(vfiomig_ctx_unref(NULL));
}

Test(lifetime, stream_outlives_its_context)
{
	struct vfiomig_stream *s;
	const void *data;
	size_t len;

	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &s), 0);
	vfiomig_ctx_unref(env.ctx);
	env.ctx = NULL;
	cr_assert_eq(vfiomig_stream_write(s, "abc", 3), 0);
	cr_assert_eq(vfiomig_stream_mem_data(s, &data, &len), 0);
	cr_assert_eq(len, 3);
	vfiomig_stream_free(s);
}

Test(lifetime, migration_keeps_its_device_open_and_puts_it_back_on_free)
{
	struct vfiomig_device *dev = open_mig_dev("0000:03:00.0");
	struct vfiomig_sim_device *sd = last_sd;
	struct vfiomig_stream *out;
	struct vfiomig_mig *m;

	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &out), 0);
	cr_assert_eq(vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, NULL, &m), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_mig_save_setup(m, out), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_sim_device_mig_state(sd),
		     VFIOMIG_DEVICE_STATE_PRE_COPY);
	/* The VMM closes the device and drops the context while the save is open. */
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(env.ctx);
	env.ctx = NULL;
	cr_assert_gt(vfiomig_sim_open_fds(env.sim), 0, "the migration still holds the device");
	/* Freeing the unfinished save still puts the device back: its fd is still open. */
	vfiomig_mig_free(m);
	cr_assert_eq(vfiomig_sim_device_mig_state(sd),
		     VFIOMIG_DEVICE_STATE_RUNNING);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);
	vfiomig_stream_free(out);
}

Test(lifetime, region_map_and_dirty_session_keep_the_device)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev;
	struct vfiomig_region_map *map;
	struct vfiomig_dirty *d;
	static const struct vfiomig_dma_range r = { .iova = 0x100000, .length = 0x10000 };
	VFIOMIG_OPTS(dirty_opts, dopts, .mechanism = VFIOMIG_DIRTY_MECH_DEVICE, .ranges = &r,
		     .nr_ranges = 1);
	volatile uint8_t *p;

	sd = sim_add(&env, "sim:pci,name=0000:03:00.0,mig=v2,dmalog=1,sparse=0");
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_region_mmap(dev, VFIOMIG_PCI_BAR0_REGION, 3, &map), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_dirty_start(dev, &dopts, &d), 0, "%s", env.log.last);
	vfiomig_device_close(dev);
	/* The mapping is still live and still the device's memory. */
	p = vfiomig_region_map_ptr(map, 0, 1);
	cr_assert_not_null(p);
	*p = 0x5a;
	cr_assert_eq(((uint8_t *)vfiomig_sim_device_region_mem(sd, 0, NULL))[0], 0x5a);
	vfiomig_region_unmap(map);
	cr_assert_gt(vfiomig_sim_open_fds(env.sim), 0, "the dirty session holds the device");
	vfiomig_dirty_free(d);
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0);
	cr_assert_eq(vfiomig_sim_live_maps(env.sim), 0);
}

/* ------------------------------------------------------------ sets */

struct two {
	struct vfiomig_device *dev[2];
	struct vfiomig_mig *m[2];
	struct vfiomig_mig_set *set;
};

static void two_open(struct two *t)
{
	t->dev[0] = open_mig_dev("0000:03:00.0");
	t->dev[1] = open_mig_dev("0000:03:00.1");
	for (int i = 0; i < 2; i++)
		cr_assert_eq(vfiomig_mig_new(t->dev[i], VFIOMIG_ROLE_SAVE, NULL, &t->m[i]), 0);
	cr_assert_eq(vfiomig_mig_set_new(env.ctx, &t->set), 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(vfiomig_mig_set_add(t->set, t->m[i]), 0, "%s", env.log.last);
}

static void two_close_devices(struct two *t)
{
	for (int i = 0; i < 2; i++)
		vfiomig_device_close(t->dev[i]);
}

Test(lifetime, set_freed_first_leaves_its_members_usable)
{
	struct two t;
	VFIOMIG_OPTS(mig_stats, st);

	two_open(&t);
	vfiomig_mig_set_free(t.set);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(vfiomig_mig_get_stats(t.m[i], &st), 0);
		vfiomig_mig_free(t.m[i]);
	}
	two_close_devices(&t);
}

Test(lifetime, member_freed_first_leaves_the_set)
{
	struct two t;
	VFIOMIG_OPTS(mig_stats, st);
	char reason[128];

	two_open(&t);
	vfiomig_mig_free(t.m[0]);
	/* The set no longer sees the freed member (ASan would catch a dangling one). */
	cr_assert_eq(vfiomig_mig_set_check(t.set, reason, sizeof(reason)), 0, "%s", reason);
	cr_assert_eq(vfiomig_mig_set_event(t.set, VFIOMIG_EVENT_SETUP), 0);
	cr_assert_eq(vfiomig_mig_set_get_stats(t.set, &st), 0);
	cr_assert_eq(vfiomig_mig_set_remove(t.set, t.m[1]), 0);
	cr_assert_eq(vfiomig_mig_set_remove(t.set, t.m[1]), -ENOENT);
	cr_assert(strstr(env.log.last, "not a member"), "%s", env.log.last);
	vfiomig_mig_set_free(t.set);
	vfiomig_mig_free(t.m[1]);
	two_close_devices(&t);
}

Test(lifetime, a_migration_is_in_one_set_only)
{
	struct two t;
	struct vfiomig_mig_set *other;

	two_open(&t);
	cr_assert_eq(vfiomig_mig_set_add(t.set, t.m[0]), -EEXIST);
	cr_assert_eq(vfiomig_mig_set_new(env.ctx, &other), 0);
	cr_assert_eq(vfiomig_mig_set_add(other, t.m[0]), -EBUSY);
	cr_assert(strstr(env.log.last, "another set"), "%s", env.log.last);
	/* Moved: out of the first set, into the other. */
	cr_assert_eq(vfiomig_mig_set_remove(t.set, t.m[0]), 0);
	cr_assert_eq(vfiomig_mig_set_add(other, t.m[0]), 0);
	vfiomig_mig_free(t.m[0]);
	vfiomig_mig_free(t.m[1]);
	vfiomig_mig_set_free(other);
	vfiomig_mig_set_free(t.set);
	two_close_devices(&t);
}

Test(lifetime, a_set_refuses_a_migration_of_another_context)
{
	struct vfiomig_ctx *ctx2;
	struct vfiomig_device *dev = open_mig_dev("0000:03:00.0");
	struct vfiomig_mig *m;
	struct vfiomig_mig_set *set;
	struct logcap lc = { 0 };
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = logcap_fn, .log_user = &lc);

	cr_assert_eq(vfiomig_sim_ctx_new(env.sim, &co, &ctx2), 0);
	cr_assert_eq(vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, NULL, &m), 0);
	cr_assert_eq(vfiomig_mig_set_new(ctx2, &set), 0);
	cr_assert_eq(vfiomig_mig_set_add(set, m), -EINVAL);
	cr_assert(strstr(lc.last, "another context"), "%s", lc.last);
	cr_assert_eq(lc.errors, 1);
	vfiomig_mig_set_free(set);
	vfiomig_ctx_unref(ctx2);
	vfiomig_mig_free(m);
	vfiomig_device_close(dev);
}

#if defined(__GNUC__)
/* The cleanup helpers release at scope exit, in reverse order of declaration. */
Test(lifetime, cleanup_helpers_release_at_scope_exit)
{
	struct vfiomig_sim_device *sd;

	{
		VFIOMIG_CLEANUP(vfiomig_device_closep) struct vfiomig_device *dev = NULL;
		VFIOMIG_CLEANUP(vfiomig_mig_freep) struct vfiomig_mig *m = NULL;
		VFIOMIG_CLEANUP(vfiomig_stream_freep) struct vfiomig_stream *s = NULL;
		VFIOMIG_CLEANUP(vfiomig_freep) void *info = NULL;
		size_t len;

		dev = open_mig_dev("0000:03:00.0");
		sd = last_sd;
		cr_assert_eq(vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, NULL, &m), 0);
		cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &s), 0);
		cr_assert_eq(vfiomig_mig_save_setup(m, s), 0);
		cr_assert_eq(vfiomig_device_get_info_raw(dev, &info, &len), 0);
		cr_assert_gt(vfiomig_sim_open_fds(env.sim), 0);
	}
	cr_assert_eq(vfiomig_sim_open_fds(env.sim), 0, "everything was released at scope exit");
	cr_assert_eq(vfiomig_sim_device_mig_state(sd),
		     VFIOMIG_DEVICE_STATE_RUNNING);
}
#endif
