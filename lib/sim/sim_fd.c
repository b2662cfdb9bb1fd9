/* SPDX-License-Identifier: MIT */
/*
 * The simulator's fd table: a simulated fd is a real fd (unique number,
 * visible to leak checks) that refers to a reference-counted kernel
 * object (container, group file, device file, iommufd, data_fd). Also the
 * kernel ops that act on an fd (close, dup, ioctl, read, write, pread,
 * pwrite, mmap, munmap) and the ops table the library is given; the
 * path ops (open, readlink, readdir) are in sim_paths.c.
 *
 * Every op runs under the simulator lock, but read, write, pread and
 * pwrite: they take it to find their object and hold a reference on it,
 * then move the data under the device lock only (sim_internal.h).
 */
#include "sim_internal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

bool sim_fd_is_real(int fd)
{
	return fd >= 0 && fcntl(fd, F_GETFD) != -1;
}

/* ------------------------------------------------------- objects, fds */

void sim_obj_init(struct sim_obj *obj, struct vfiomig_sim *sim, uint32_t type,
		  const struct sim_obj_ops *ops)
{
	obj->ops = ops;
	obj->sim = sim;
	obj->type = type;
	obj->refs = 0;
}

void sim_obj_get(struct sim_obj *obj)
{
	__atomic_add_fetch(&obj->refs, 1, __ATOMIC_RELAXED);
}

void sim_obj_put(struct sim_obj *obj)
{
	/* Acquire-release: the last holder sees every write the others made before letting go. */
	if (__atomic_sub_fetch(&obj->refs, 1, __ATOMIC_ACQ_REL) == 0)
		obj->ops->release(obj);
}

/* A real fd, so numbers are unique and leaks show up in the process. */
static int sim_real_fd(void)
{
	int fd = memfd_create("vfiomig-sim", MFD_CLOEXEC);

	if (fd < 0)
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int sim_fd_attach(struct vfiomig_sim *sim, int fd, struct sim_obj *obj)
{
	struct sim_obj **t;

	t = sim_grow(sim->fds, &sim->fds_cap, (size_t)fd + 1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	sim->fds = t;
	if (t[fd]) {
		/* The caller closed this number behind our back; forget the stale entry. */
		struct sim_obj *stale = t[fd];

		t[fd] = NULL;
		sim->open_fds--;
		sim_obj_put(stale);
	}
	t[fd] = obj;
	sim_obj_get(obj);
	sim->open_fds++;
	return 0;
}

int sim_fd_install(struct vfiomig_sim *sim, struct sim_obj *obj)
{
	int fd = sim_real_fd();
	int err;

	if (fd < 0)
		return fd;
	err = sim_fd_attach(sim, fd, obj);
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

struct sim_obj *sim_fd_lookup(const struct vfiomig_sim *sim, int fd)
{
	if (fd < 0 || (size_t)fd >= sim->fds_cap)
		return NULL;
	return sim->fds[fd];
}

int sim_fd_install_new(struct vfiomig_sim *sim, struct sim_obj *obj)
{
	int fd;

	sim_obj_get(obj);
	fd = sim_fd_install(sim, obj);
	sim_obj_put(obj);
	return fd;
}

/* -------------------------------------------------------------- fd ops */

/*
 * The object behind fd, for an fd op, with the simulator lock held:
 * -EBADF for an fd that is not a simulated one, -EINVAL for an offset
 * past what off_t holds (0 for ops without one).
 */
static int sim_op_obj(struct vfiomig_sim *sim, int fd, uint64_t off, struct sim_obj **obj)
{
	*obj = sim_fd_lookup(sim, fd);
	if (!*obj)
		return -EBADF;
	return off > (uint64_t)INT64_MAX ? -EINVAL : 0;
}

static int sim_close_locked(struct vfiomig_sim *sim, int fd)
{
	struct sim_obj *obj;
	int err = sim_op_obj(sim, fd, 0, &obj);

	if (err)
		return err;
	if (obj->ops->fd_closed)
		obj->ops->fd_closed(obj);
	sim->fds[fd] = NULL;
	sim->open_fds--;
	close(fd);
	sim_obj_put(obj);
	return 0;
}

static int sim_op_close(void *user, int fd)
{
	struct vfiomig_sim *sim = user;
	int err;

	if (!sim)
		return -EINVAL;
	sim_lock(sim);
	err = sim_close_locked(sim, fd);
	sim_unlock(sim);
	return err;
}

static int sim_op_dup(void *user, int fd)
{
	struct vfiomig_sim *sim = user;
	struct sim_obj *obj;
	int nfd, err;

	if (!sim)
		return -EINVAL;
	sim_lock(sim);
	err = sim_op_obj(sim, fd, 0, &obj);
	nfd = err ? err : fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (!err && nfd < 0)
		nfd = -errno;
	if (nfd >= 0) {
		err = sim_fd_attach(sim, nfd, obj);
		if (err) {
			close(nfd);
			nfd = err;
		}
	}
	sim_unlock(sim);
	return nfd;
}

static int sim_op_ioctl(void *user, int fd, unsigned long request, void *arg)
{
	struct vfiomig_sim *sim = user;
	struct sim_obj *obj;
	int err;

	if (!sim)
		return -EINVAL;
	sim_lock(sim);
	err = sim_op_obj(sim, fd, 0, &obj);
	if (!err)
		err = obj->ops->ioctl ? obj->ops->ioctl(obj, request, arg) : -ENOTTY;
	sim_unlock(sim);
	return err;
}

/*
 * A data op's object, with a reference the op drops by sim_data_put:
 * the data moves without the simulator lock.
 */
static int sim_data_get(void *user, int fd, uint64_t off, struct sim_obj **obj)
{
	struct vfiomig_sim *sim = user;
	int err;

	if (!sim)
		return -EINVAL;
	sim_lock(sim);
	err = sim_op_obj(sim, fd, off, obj);
	if (!err)
		sim_obj_get(*obj);
	sim_unlock(sim);
	return err;
}

/*
 * Drop a data op's reference. Should the fd have been closed meanwhile it
 * may be the last one, whose release needs the simulator lock; any other
 * goes without the lock (each decrement is atomic: only one sees 0).
 */
static void sim_data_put(struct sim_obj *obj)
{
	struct vfiomig_sim *sim = obj->sim;
	unsigned int refs = __atomic_load_n(&obj->refs, __ATOMIC_RELAXED);

	while (refs > 1)
		if (__atomic_compare_exchange_n(&obj->refs, &refs, refs - 1, true,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			return;
	sim_lock(sim);
	sim_obj_put(obj);
	sim_unlock(sim);
}

static ssize_t sim_op_read(void *user, int fd, void *buf, size_t len)
{
	struct sim_obj *obj;
	ssize_t ret = sim_data_get(user, fd, 0, &obj);

	if (ret)
		return ret;
	ret = obj->ops->read ? obj->ops->read(obj, buf, len) : -EINVAL;
	sim_data_put(obj);
	return ret;
}

static ssize_t sim_op_write(void *user, int fd, const void *buf, size_t len)
{
	struct sim_obj *obj;
	ssize_t ret = sim_data_get(user, fd, 0, &obj);

	if (ret)
		return ret;
	ret = obj->ops->write ? obj->ops->write(obj, buf, len) : -EINVAL;
	sim_data_put(obj);
	return ret;
}

static ssize_t sim_op_pread(void *user, int fd, void *buf, size_t len, uint64_t off)
{
	struct sim_obj *obj;
	ssize_t ret = sim_data_get(user, fd, off, &obj);

	if (ret)
		return ret;
	ret = obj->ops->pread ? obj->ops->pread(obj, buf, len, off) : -EINVAL;
	sim_data_put(obj);
	return ret;
}

static ssize_t sim_op_pwrite(void *user, int fd, const void *buf, size_t len, uint64_t off)
{
	struct sim_obj *obj;
	ssize_t ret = sim_data_get(user, fd, off, &obj);

	if (ret)
		return ret;
	ret = obj->ops->pwrite ? obj->ops->pwrite(obj, buf, len, off) : -EINVAL;
	sim_data_put(obj);
	return ret;
}

static int sim_op_mmap(void *user, int fd, uint64_t off, size_t len, int prot, void **addr)
{
	struct vfiomig_sim *sim = user;
	struct sim_obj *obj;
	int err;

	if (!sim || !addr)
		return -EINVAL;
	sim_lock(sim);
	err = sim_op_obj(sim, fd, off, &obj);
	if (!err)
		err = obj->ops->mmap ? obj->ops->mmap(obj, off, len, prot, addr) : -ENODEV;
	sim_unlock(sim);
	return err;
}

static int sim_munmap_locked(struct vfiomig_sim *sim, void *addr, size_t len)
{
	for (size_t i = 0; i < sim->nmaps; i++) {
		struct sim_map *m = &sim->maps[i];
		size_t pg = sim->page_size;

		if (m->addr != addr)
			continue;
		/* Whole mappings only: partial unmaps would split our bookkeeping. */
		if (!len || len > m->len || (len + pg - 1) / pg * pg != m->len)
			return -EINVAL;
		if (munmap(m->addr, m->len) < 0)
			return -errno;
		*m = sim->maps[--sim->nmaps];
		return 0;
	}
	return -EINVAL;
}

static int sim_op_munmap(void *user, void *addr, size_t len)
{
	struct vfiomig_sim *sim = user;
	int err;

	if (!sim)
		return -EINVAL;
	sim_lock(sim);
	err = sim_munmap_locked(sim, addr, len);
	sim_unlock(sim);
	return err;
}

static const struct vfiomig_kernel_ops sim_kernel_ops = {
	.sz = sizeof(struct vfiomig_kernel_ops),
	.open = sim_op_open,
	.close = sim_op_close,
	.dup = sim_op_dup,
	.ioctl = sim_op_ioctl,
	.read = sim_op_read,
	.write = sim_op_write,
	.pread = sim_op_pread,
	.pwrite = sim_op_pwrite,
	.mmap = sim_op_mmap,
	.munmap = sim_op_munmap,
	.readlink = sim_op_readlink,
	.readdir = sim_op_readdir,
};

const struct vfiomig_kernel_ops *vfiomig_sim_kernel_ops(void)
{
	return &sim_kernel_ops;
}

void sim_fd_close_all(struct vfiomig_sim *sim)
{
	for (size_t fd = 0; fd < sim->fds_cap; fd++)
		if (sim->fds[fd])
			sim_close_locked(sim, (int)fd);
	for (size_t i = 0; i < sim->nmaps; i++)
		munmap(sim->maps[i].addr, sim->maps[i].len);
	sim->nmaps = 0;
}
