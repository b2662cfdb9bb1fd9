/* SPDX-License-Identifier: MIT */
/*
 * The simulated device's migration engine: its state bytes and dirty
 * pages, protocol v2 (VFIO_DEVICE_FEATURE MIGRATION / MIG_DEVICE_STATE /
 * MIG_DATA_SIZE, data_fd objects with PRECOPY_INFO), the v1 migration
 * region, the fault knobs and one public event line per step.
 *
 * Both protocols drive one engine that speaks v2 states; v1's
 * device_state bits map onto them (000 STOP, 001 RUNNING, 011 PRE_COPY,
 * 010 STOP_COPY, 100 RESUMING, 110 ERROR).
 *
 * The engine, its state and its knobs are the device lock's: the device
 * ioctls reach it with the simulator lock held too, data_fd reads and
 * writes and the v1 region's pread and pwrite with the device lock alone
 * (sim_internal.h). So nothing here takes the simulator lock, and a
 * data_fd whose session ends here is dropped by an atomic reference.
 *
 * The device's own data format (what a data_fd yields and takes, what v1
 * stages in its data section) is a sequence of little-endian records:
 *
 *   page: u32 magic 0x50474d56, u32 flags (0), u64 page index,
 *         then the page's 4096 bytes                         (4112 bytes)
 *   end:  u32 magic 0x444e4556, u32 flags, u64 page count,
 *         then u64 state checksum, u64 stream checksum        (32 bytes)
 *
 * A save sends the initial image first (every page once, in order), then
 * the pages changed since they were last sent; a stop-copy closes with
 * the end record. The destination parses the records however the bytes
 * are split and refuses the image (bad magic or flags, index out of
 * range, page count mismatch, data after the end, a record cut short, a
 * checksum mismatch) when RESUMING is left, as a real device refuses a
 * bad image.
 *
 * The stream checksum covers every page record before the end record:
 * h = (h ^ w) * FNV prime over their 64-bit words (host order, as every
 * word here), from the FNV offset basis. Each step is a bijection of h,
 * so any one changed word changes the result: a flipped bit is always
 * caught. It costs what is sent.
 *
 * The state checksum covers the whole state as it is when the end
 * record is made. The end record's flags say which of two it is:
 *
 *  - flags 0, the state hash: the same chain over every word of the
 *    state. It costs the state size, so a source writes it only for
 *    states of up to 64 pages (256 KiB), where that is a few microseconds
 *    and keeps the device data of small devices byte for byte what 0.1
 *    wrote (the golden streams, the fuzz corpus, recorded return-path
 *    messages whose CRC32C covers it). A destination takes it at any size.
 *
 *  - flags 1 (PAGESUM), the page sum, for bigger states:
 *
 *      S = sum over pages i of T(i, H(page i)) - T(i, H(zero page))  mod 2^64
 *      T(i, h) = fmix(h ^ K(i)),   K(i) = fmix((i + 1) * 0x9e3779b97f4a7c15)
 *
 *    fmix is MurmurHash3's 64-bit finaliser (a bijection). H hashes a page
 *    in four lanes, lane j taking words j, j + 4, ...: l = rotl(l ^ w, 29)
 *    * 0x9e3779b97f4a7c15, then the lanes fold in order by the FNV step.
 *    A page's term is taken when the page is sent (from the bytes sent)
 *    or received (from the bytes received); a page that changes otherwise
 *    (the device running) goes on a list of stale pages, hashed again
 *    only when the sum is wanted. The sum is kept up to date as terms
 *    come and go, and a zero page's term is 0 (a fresh or reset state
 *    costs nothing): the end record and the destination's check cost the
 *    pages changed since the last look, not the state size.
 *
 *    What it catches: a difference within one 64-bit word (a flipped bit
 *    or byte) always changes S: the lane step is a bijection of the lane
 *    for a given word and of the word for a given lane, the fold is a
 *    bijection of each lane with the others fixed, T(i, .) is a bijection
 *    and the other terms do not move. Any other difference (several words
 *    of a page, pages swapped, a page missing or written at the wrong
 *    index) goes unseen only if pseudo-random 64-bit values happen to
 *    cancel, about one chance in 2^64; K(i) binds each term to its index,
 *    without which swapped pages would sum the same. (These are checks
 *    against accidents, not against an adversary: nothing here is a
 *    cryptographic hash.)
 *
 *  - flags 2 (UNCHECKED): no checksums, both fields 0, from a device made
 *    with VFIOMIG_SIM_MIG_COST_COPY (spec cost=copy). Such a device's
 *    data path costs the copy and nothing else, for benchmarks of the
 *    library: a read copies page records straight out of the state (the
 *    16-byte header aside), a write copies page bodies straight into it,
 *    and it neither computes nor checks a checksum; the records and
 *    their structural checks (magic, flags, index, page count, order, a
 *    record cut short) are the same. It takes images with or without
 *    checksums; a device of the default kind refuses an image without.
 *    The caller checks the result outside its timing, with
 *    vfiomig_sim_device_state_hash() (the page sum, which any device
 *    gives on request: pages a copy-cost device moved are hashed then).
 */
#include "sim_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define MIG_PAGE        4096u
#define MIG_REC_HDR     16u
#define MIG_REC_PAGE    (MIG_REC_HDR + MIG_PAGE)
#define MIG_REC_END     32u
#define MIG_MAGIC_PAGE  0x50474d56u
#define MIG_MAGIC_END   0x444e4556u

#define MIG_STATE_DEFAULT (64ull << 10)
#define MIG_STATE_MAX     (64ull << 30)
#define MIG_V1_DATA_DEFAULT (64ull << 10)
#define MIG_V1_DATA_MAX   (1ull << 30)
#define MIG_V1_REGS       4096u   /* the register page; the data section follows */
#define MIG_V1_ERROR_BITS (VU_V1_STATE_SAVING | VU_V1_STATE_RESUMING)
/* A v1 device's engine: stop-copy and pre-copy, no P2P states. */
#define MIG_V1_FLAGS      (VU_MIGRATION_STOP_COPY | VU_MIGRATION_PRE_COPY)
/* A single read moves at most this much (the kernel caps at MAX_RW_COUNT). */
#define MIG_RW_MAX        (1ul << 30)

#define MIG_HASH_INIT  0xcbf29ce484222325ull
#define MIG_HASH_PRIME 0x100000001b3ull
#define MIG_GOLDEN     0x9e3779b97f4a7c15ull

/* End record flags. */
#define MIG_END_F_PAGESUM   1u /* the state checksum is the page sum */
#define MIG_END_F_UNCHECKED 2u /* no checksums (a copy-cost device's image) */
/* A source writes the page sum for states of more pages than this. */
#define MIG_HASH_MAX_PAGES 64u

enum mig_rec_kind { REC_NONE, REC_INIT, REC_DIRTY, REC_END };

/* A v2 data_fd: a handle on the device's current save or resume session. */
struct sim_datafd {
	struct sim_obj obj;
	struct vfiomig_sim_device *dev;
	bool resume; /* made by STOP -> RESUMING: write only */
	bool valid;  /* cleared when an arc or a reset ends its session */
};

struct sim_mig {
	struct vfiomig_sim_device *dev;
	uint32_t opts;          /* VFIOMIG_SIM_MIG_* */
	uint64_t v2_flags;      /* VU_MIGRATION_*: what GET MIGRATION reports (0: no v2) */
	uint32_t state;         /* VU_STATE_* */
	uint8_t *mem;           /* the device state: private anonymous, untouched pages are free */
	uint64_t size, npages;
	uint64_t *dirty;        /* pages changed since they were sent (save sessions only) */
	uint64_t ndirty, dirty_scan;
	uint64_t rng;
	uint32_t auto_dirty;
	bool copy_cost;         /* VFIOMIG_SIM_MIG_COST_COPY: no checksums */

	/*
	 * The page sum (see the top of the file), kept page by page. A page
	 * is either current (term[i] is its term, counted in sum) or stale
	 * (changed since: on the stale list at slot[i] - 1, not counted).
	 */
	uint64_t zero_hash;     /* H(zero page) */
	uint64_t *term;         /* npages terms, 0 for a zero page */
	uint32_t *slot;         /* npages: 0 current, else 1 + its index in stale[] */
	uint32_t *stale;        /* the stale pages, in no order */
	uint64_t nstale;
	uint64_t sum;           /* the terms of the current pages */
	void *sum_map;          /* one mapping holds term, slot and stale */
	size_t sum_map_len;

	/* save session (PRE_COPY*, STOP_COPY) */
	bool saving;
	bool end_sent;
	uint64_t init_next;     /* next page of the initial image */
	uint8_t rec[MIG_REC_PAGE]; /* the record being handed out */
	const uint8_t *rec_body; /* its bytes past the header when not in rec (copy cost) */
	size_t rec_len, rec_off;
	int rec_kind;
	uint64_t tx_hash;

	/* resume session (RESUMING) */
	bool resuming;
	bool in_end;
	const char *in_bad;     /* why the image is refused (latched) */
	uint8_t in[MIG_REC_PAGE];
	size_t in_have;
	uint64_t rx_hash, in_state_hash;
	uint32_t in_end_flags;

	struct sim_datafd *fd;  /* the session's data_fd (a reference held), or NULL */
	bool fd_fresh;          /* made by the walk in progress: to be installed */

	struct {
		bool armed, to_error;
		uint32_t to;
		int err;
	} ft;
	struct {
		bool armed;
		uint64_t left;
		int err;
	} fdk;
	struct {
		bool armed;
		uint64_t left;
	} cdk;

	/* v1 */
	int v1_index;           /* region index, -1 without v1 */
	uint64_t v1_data_len;   /* bytes of the data section */
	uint32_t v1_reserved;   /* device_state bits 3..31 as last written */
	uint64_t v1_data_size;  /* the data_size register */
};

/* ------------------------------------------------------------ helpers */

static size_t sim_min_size(size_t a, uint64_t b)
{
	return b < a ? (size_t)b : a;
}

static const char *const mig_state_names[VU_STATE_NR] = {
	[VU_STATE_ERROR] = "ERROR",
	[VU_STATE_STOP] = "STOP",
	[VU_STATE_RUNNING] = "RUNNING",
	[VU_STATE_STOP_COPY] = "STOP_COPY",
	[VU_STATE_RESUMING] = "RESUMING",
	[VU_STATE_RUNNING_P2P] = "RUNNING_P2P",
	[VU_STATE_PRE_COPY] = "PRE_COPY",
	[VU_STATE_PRE_COPY_P2P] = "PRE_COPY_P2P",
};

static const char *mig_name(uint32_t s)
{
	return s < VU_STATE_NR ? mig_state_names[s] : "(invalid)";
}

/*
 * The kernel's step table for combination transitions
 * (vfio_mig_get_next_state): row = current state, column = target,
 * cell = the next state to move to.
 */
#define E_ VU_STATE_ERROR
#define ST VU_STATE_STOP
#define RU VU_STATE_RUNNING
#define SC VU_STATE_STOP_COPY
#define RS VU_STATE_RESUMING
#define RP VU_STATE_RUNNING_P2P
#define PC VU_STATE_PRE_COPY
#define PP VU_STATE_PRE_COPY_P2P
static const uint8_t mig_step[VU_STATE_NR][VU_STATE_NR] = {
	/*                 ERR STOP RUN SC  RES RP  PC  PP */
	[VU_STATE_ERROR] = { E_, E_, E_, E_, E_, E_, E_, E_ },
	[ST] =             { E_, ST, RP, SC, RS, RP, RP, RP },
	[RU] =             { E_, RP, RU, RP, RP, RP, PC, RP },
	[SC] =             { E_, ST, ST, SC, ST, ST, E_, E_ },
	[RS] =             { E_, ST, ST, ST, RS, ST, ST, ST },
	[RP] =             { E_, ST, RU, ST, ST, RP, RU, PP },
	[PC] =             { E_, RU, RU, PP, RU, RU, PC, PP },
	[PP] =             { E_, RP, RP, SC, RP, RP, PC, PP },
};
#undef E_
#undef ST
#undef RU
#undef SC
#undef RS
#undef RP
#undef PC
#undef PP

/* May a device with these migration flags be in state s? */
static bool mig_state_ok(uint32_t s, uint64_t flags)
{
	switch (s) {
	case VU_STATE_RUNNING_P2P:
		return flags & VU_MIGRATION_P2P;
	case VU_STATE_PRE_COPY:
		return flags & VU_MIGRATION_PRE_COPY;
	case VU_STATE_PRE_COPY_P2P:
		return (flags & VU_MIGRATION_P2P) && (flags & VU_MIGRATION_PRE_COPY);
	default:
		return true;
	}
}

/* The next step towards target, skipping states the device lacks as the kernel does. */
static uint32_t mig_next(uint32_t cur, uint32_t target, uint64_t flags)
{
	uint32_t next = mig_step[cur][target];

	while (next != VU_STATE_ERROR && !mig_state_ok(next, flags))
		next = mig_step[next][target];
	return next;
}

static bool mig_running(uint32_t s)
{
	return s == VU_STATE_RUNNING || s == VU_STATE_RUNNING_P2P || s == VU_STATE_PRE_COPY ||
	       s == VU_STATE_PRE_COPY_P2P;
}

static bool mig_precopy(uint32_t s)
{
	return s == VU_STATE_PRE_COPY || s == VU_STATE_PRE_COPY_P2P;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* len is a multiple of 8 (records and states are). */
static uint64_t mig_hash(uint64_t h, const uint8_t *p, uint64_t len)
{
	for (uint64_t i = 0; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, sizeof(w));
		h = (h ^ w) * MIG_HASH_PRIME;
	}
	return h;
}

static uint64_t rotl64(uint64_t x, unsigned int r)
{
	return x << r | x >> (64 - r);
}

/* MurmurHash3's 64-bit finaliser: a bijection that mixes every bit into every bit. */
static uint64_t fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	k ^= k >> 33;
	return k;
}

/* H of the page sum: four independent lanes (so the multiplies overlap), folded in order. */
static uint64_t mig_page_hash(const uint8_t *p)
{
	uint64_t l0 = MIG_HASH_INIT, l1 = MIG_HASH_INIT + 1, l2 = MIG_HASH_INIT + 2,
		 l3 = MIG_HASH_INIT + 3;

	for (size_t i = 0; i < MIG_PAGE; i += 32) {
		uint64_t w[4];

		memcpy(w, p + i, sizeof(w));
		l0 = rotl64(l0 ^ w[0], 29) * MIG_GOLDEN;
		l1 = rotl64(l1 ^ w[1], 29) * MIG_GOLDEN;
		l2 = rotl64(l2 ^ w[2], 29) * MIG_GOLDEN;
		l3 = rotl64(l3 ^ w[3], 29) * MIG_GOLDEN;
	}
	l0 = (l0 ^ l1) * MIG_HASH_PRIME;
	l0 = (l0 ^ l2) * MIG_HASH_PRIME;
	return (l0 ^ l3) * MIG_HASH_PRIME;
}

/* ------------------------------------------------------------ page sum */

/* T(i, h) - T(i, H(zero page)): a zero page adds nothing. */
static uint64_t sum_term(const struct sim_mig *m, uint64_t i, uint64_t h)
{
	uint64_t k = fmix64((i + 1) * MIG_GOLDEN);

	return fmix64(h ^ k) - fmix64(m->zero_hash ^ k);
}

/* Page i changed: its term no longer counts until it is taken again. */
static void sum_stale(struct sim_mig *m, uint64_t i)
{
	if (m->slot[i])
		return;
	m->sum -= m->term[i];
	m->stale[m->nstale++] = (uint32_t)i;
	m->slot[i] = (uint32_t)m->nstale;
}

/* Page i now hashes to h (the bytes just sent, received or read): its term counts again. */
static void sum_take(struct sim_mig *m, uint64_t i, uint64_t h)
{
	uint32_t s = m->slot[i];

	if (s) {
		uint32_t last = m->stale[--m->nstale];

		m->stale[s - 1] = last;
		m->slot[last] = s;
		m->slot[i] = 0;
	} else {
		m->sum -= m->term[i];
	}
	m->term[i] = sum_term(m, i, h);
	m->sum += m->term[i];
}

/* The page sum of the state as it is: the stale pages are hashed again. */
static uint64_t sum_now(struct sim_mig *m)
{
	while (m->nstale) {
		uint64_t i = m->stale[m->nstale - 1];

		sum_take(m, i, mig_page_hash(m->mem + i * MIG_PAGE));
	}
	return m->sum;
}

/* The state is all zero again (reset): every term is 0, nothing is stale. */
static void sum_clear(struct sim_mig *m)
{
	if (madvise(m->sum_map, m->sum_map_len, MADV_DONTNEED) < 0)
		memset(m->sum_map, 0, m->sum_map_len);
	m->nstale = 0;
	m->sum = 0;
}

static int sum_setup(struct sim_mig *m)
{
	static const uint8_t zero[MIG_PAGE];
	size_t n = (size_t)m->npages;
	void *p;

	m->zero_hash = mig_page_hash(zero);
	m->sum_map_len = n * (sizeof(*m->term) + sizeof(*m->slot) + sizeof(*m->stale));
	p = mmap(NULL, m->sum_map_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	m->sum_map = p;
	m->term = p;
	m->slot = (uint32_t *)(m->term + n);
	m->stale = m->slot + n;
	return 0;
}

/* xorshift64*: cheap, deterministic per device. */
static uint64_t mig_rand(struct sim_mig *m)
{
	uint64_t x = m->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	m->rng = x;
	return x * 0x2545f4914f6cdd1dull;
}

static uint64_t mig_gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

static bool page_is_zero(const uint8_t *p)
{
	uint64_t acc = 0;

	for (size_t i = 0; i < MIG_PAGE; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, sizeof(w));
		acc |= w;
	}
	return !acc;
}

/* --------------------------------------------------------- the device */

static void mig_mark_dirty(struct sim_mig *m, uint64_t p)
{
	uint64_t bit = 1ull << (p % 64);

	/* Pages the initial image has not reached yet go out fresh anyway. */
	if (!m->saving || p >= m->init_next)
		return;
	if (!(m->dirty[p / 64] & bit)) {
		m->dirty[p / 64] |= bit;
		m->ndirty++;
	}
}

/* The next dirty page from the scan point on (wrapping); ndirty must be > 0. */
static uint64_t mig_take_dirty(struct sim_mig *m)
{
	uint64_t nwords = (m->npages + 63) / 64, w = m->dirty_scan / 64;

	for (uint64_t i = 0; i <= nwords; i++) {
		uint64_t bits = m->dirty[w];

		if (i == 0)
			bits &= ~0ull << (m->dirty_scan % 64);
		if (bits) {
			uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);

			m->dirty[w] &= ~(1ull << (p % 64));
			m->ndirty--;
			m->dirty_scan = p + 1 < m->npages ? p + 1 : 0;
			return p;
		}
		w = w + 1 < nwords ? w + 1 : 0;
	}
	m->ndirty = 0; /* not reached: the count and the bits agree */
	return 0;
}

/* Change min(pages, npages) distinct pages: a random start and a stride coprime to npages. */
static void mig_run(struct sim_mig *m, uint64_t pages)
{
	uint64_t n = pages < m->npages ? pages : m->npages, idx, stride = 1;

	if (!n)
		return;
	idx = mig_rand(m) % m->npages;
	if (m->npages > 1) {
		stride = 1 + mig_rand(m) % (m->npages - 1);
		while (mig_gcd(stride, m->npages) != 1)
			stride = stride % (m->npages - 1) + 1;
	}
	for (uint64_t k = 0; k < n; k++) {
		uint8_t *pg = m->mem + idx * MIG_PAGE;

		for (size_t i = 0; i < MIG_PAGE; i += 8) {
			uint64_t w = mig_rand(m);

			memcpy(pg + i, &w, sizeof(w));
		}
		sum_stale(m, idx);
		mig_mark_dirty(m, idx);
		idx += stride;
		if (idx >= m->npages)
			idx -= m->npages;
	}
}

/* ------------------------------------------------------- save sessions */

static void mig_save_begin(struct sim_mig *m)
{
	m->saving = true;
	m->end_sent = false;
	m->init_next = 0;
	m->rec_len = m->rec_off = 0;
	m->rec_kind = REC_NONE;
	m->tx_hash = MIG_HASH_INIT;
	memset(m->dirty, 0, (m->npages + 63) / 64 * sizeof(m->dirty[0]));
	m->ndirty = 0;
	m->dirty_scan = 0;
}

static void mig_save_end(struct sim_mig *m)
{
	m->saving = false;
	m->rec_len = m->rec_off = 0;
	m->rec_kind = REC_NONE;
	m->ndirty = 0;
}

static void mig_snapshot(struct sim_mig *m, uint64_t p, int kind)
{
	put32(m->rec, MIG_MAGIC_PAGE);
	put32(m->rec + 4, 0);
	put64(m->rec + 8, p);
	if (m->copy_cost) {
		/*
		 * Straight from the state: should the page change before it is
		 * all read, it is dirty and goes again whole.
		 */
		m->rec_body = m->mem + p * MIG_PAGE;
	} else {
		/* A snapshot: the checksums are of the very bytes that go out. */
		m->rec_body = NULL;
		memcpy(m->rec + MIG_REC_HDR, m->mem + p * MIG_PAGE, MIG_PAGE);
		m->tx_hash = mig_hash(m->tx_hash, m->rec, MIG_REC_PAGE);
		/* A current page has not changed since its term was taken. */
		if (m->slot[p])
			sum_take(m, p, mig_page_hash(m->rec + MIG_REC_HDR));
	}
	m->rec_len = MIG_REC_PAGE;
	m->rec_off = 0;
	m->rec_kind = kind;
}

static void mig_make_end(struct sim_mig *m)
{
	bool pagesum = m->npages > MIG_HASH_MAX_PAGES;

	put32(m->rec, MIG_MAGIC_END);
	put64(m->rec + 8, m->npages);
	if (m->copy_cost) {
		put32(m->rec + 4, MIG_END_F_UNCHECKED);
		put64(m->rec + 16, 0);
		put64(m->rec + 24, 0);
	} else {
		put32(m->rec + 4, pagesum ? MIG_END_F_PAGESUM : 0);
		put64(m->rec + 16,
		      pagesum ? sum_now(m) : mig_hash(MIG_HASH_INIT, m->mem, m->size));
		put64(m->rec + 24, m->tx_hash);
	}
	m->rec_body = NULL;
	m->rec_len = MIG_REC_END;
	m->rec_off = 0;
	m->rec_kind = REC_END;
	m->end_sent = true;
}

static bool mig_refill(struct sim_mig *m)
{
	if (m->init_next < m->npages) {
		mig_snapshot(m, m->init_next++, REC_INIT);
		return true;
	}
	if (m->ndirty) {
		mig_snapshot(m, mig_take_dirty(m), REC_DIRTY);
		return true;
	}
	/* Only a stopped device can promise it has nothing more: the end. */
	if (m->state == VU_STATE_STOP_COPY && !m->end_sent) {
		mig_make_end(m);
		return true;
	}
	return false;
}

static size_t mig_produce(struct sim_mig *m, uint8_t *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t n;

		if (m->rec_off == m->rec_len && !mig_refill(m))
			break;
		n = sim_min_size(len - done, m->rec_len - m->rec_off);
		/* A page record straight from the state: its header, then its body. */
		if (m->rec_body && m->rec_off < MIG_REC_HDR)
			n = sim_min(n, MIG_REC_HDR - m->rec_off);
		if (!m->rec_body || m->rec_off < MIG_REC_HDR)
			memcpy(buf + done, m->rec + m->rec_off, n);
		else
			memcpy(buf + done, m->rec_body + (m->rec_off - MIG_REC_HDR), n);
		m->rec_off += n;
		done += n;
	}
	return done;
}

/* Device data handed to the host (a data_fd read, a v1 staged chunk): the knobs apply here. */
static size_t mig_emit(struct sim_mig *m, uint8_t *buf, size_t len)
{
	size_t n;

	if (m->fdk.armed && len > m->fdk.left)
		len = (size_t)m->fdk.left;
	n = mig_produce(m, buf, len);
	if (m->fdk.armed)
		m->fdk.left -= n;
	if (m->cdk.armed) {
		if (m->cdk.left < n) {
			buf[m->cdk.left] ^= 0x01;
			m->cdk.armed = false;
			sim_event_add(m->dev->sim, "corrupted data of %s", m->dev->name);
		} else {
			m->cdk.left -= n;
		}
	}
	return n;
}

/* Has fail_data reached its point? Then it fires once: *err is what to report. */
static bool mig_fail_fires(struct sim_mig *m, int *err)
{
	if (!m->fdk.armed || m->fdk.left)
		return false;
	m->fdk.armed = false;
	*err = m->fdk.err;
	sim_event_add(m->dev->sim, "failed data of %s", m->dev->name);
	return true;
}

static uint64_t mig_rec_left(const struct sim_mig *m, int kind)
{
	return m->rec_kind == kind ? m->rec_len - m->rec_off : 0;
}

static uint64_t mig_initial_bytes(const struct sim_mig *m)
{
	if (!m->saving)
		return 0;
	return (m->npages - m->init_next) * MIG_REC_PAGE + mig_rec_left(m, REC_INIT);
}

static uint64_t mig_dirty_bytes(const struct sim_mig *m)
{
	if (!m->saving)
		return 0;
	return m->ndirty * MIG_REC_PAGE + mig_rec_left(m, REC_DIRTY);
}

/* What a stop-copy would send from now on (the whole image outside a save). */
static uint64_t mig_stopcopy_bytes(const struct sim_mig *m)
{
	if (!m->saving)
		return m->npages * MIG_REC_PAGE + MIG_REC_END;
	return mig_initial_bytes(m) + mig_dirty_bytes(m) +
	       (m->end_sent ? mig_rec_left(m, REC_END) : MIG_REC_END);
}

/* ----------------------------------------------------- resume sessions */

static void mig_resume_begin(struct sim_mig *m)
{
	m->resuming = true;
	m->in_end = false;
	m->in_bad = NULL;
	m->in_have = 0;
	m->rx_hash = MIG_HASH_INIT;
	m->in_state_hash = 0;
	m->in_end_flags = 0;
}

static void mig_check_header(struct sim_mig *m)
{
	uint32_t magic = get32(m->in), flags = get32(m->in + 4);
	uint64_t idx = get64(m->in + 8);

	if (m->in_end)
		m->in_bad = "data after the end record";
	else if (magic != MIG_MAGIC_PAGE && magic != MIG_MAGIC_END)
		m->in_bad = "bad record magic";
	else if (magic == MIG_MAGIC_PAGE ? flags != 0
					  : flags != 0 && flags != MIG_END_F_PAGESUM &&
						    flags != MIG_END_F_UNCHECKED)
		m->in_bad = "unknown record flags";
	else if (magic == MIG_MAGIC_PAGE && idx >= m->npages)
		m->in_bad = "page index out of range";
	else if (magic == MIG_MAGIC_END && idx != m->npages)
		m->in_bad = "state size differs";
}

static void mig_apply_record(struct sim_mig *m)
{
	if (get32(m->in) == MIG_MAGIC_PAGE && m->copy_cost) {
		sum_stale(m, get64(m->in + 8)); /* its body went straight into the state */
		return;
	}
	if (get32(m->in) == MIG_MAGIC_PAGE) {
		uint64_t idx = get64(m->in + 8);
		uint8_t *dst = m->mem + idx * MIG_PAGE;
		const uint8_t *src = m->in + MIG_REC_HDR;

		m->rx_hash = mig_hash(m->rx_hash, m->in, MIG_REC_PAGE);
		/* Leave untouched pages untouched: a big zero state costs no memory. */
		if (!page_is_zero(src)) {
			memcpy(dst, src, MIG_PAGE);
			sum_take(m, idx, mig_page_hash(src));
		} else if (!page_is_zero(dst)) {
			memset(dst, 0, MIG_PAGE);
			sum_take(m, idx, m->zero_hash);
		} else {
			sum_take(m, idx, m->zero_hash);
		}
		return;
	}
	m->in_state_hash = get64(m->in + 16);
	m->in_end_flags = get32(m->in + 4);
	m->in_end = true;
	if (m->copy_cost)
		return;
	if (m->in_end_flags & MIG_END_F_UNCHECKED)
		m->in_bad = "no checksums (an image of a cost=copy device)";
	else if (get64(m->in + 24) != m->rx_hash)
		m->in_bad = "stream checksum mismatch";
}

/* Take device data from the host, split anywhere. Garbage is latched, not reported here. */
static void mig_consume(struct sim_mig *m, const uint8_t *buf, size_t len)
{
	while (len && !m->in_bad) {
		size_t need = MIG_REC_HDR, n;

		if (m->in_have >= MIG_REC_HDR)
			need = get32(m->in) == MIG_MAGIC_PAGE ? MIG_REC_PAGE : MIG_REC_END;
		n = sim_min_size(len, need - m->in_have);
		if (m->copy_cost && m->in_have >= MIG_REC_HDR && need == MIG_REC_PAGE)
			memcpy(m->mem + get64(m->in + 8) * MIG_PAGE + (m->in_have - MIG_REC_HDR),
			       buf, n);
		else
			memcpy(m->in + m->in_have, buf, n);
		m->in_have += n;
		buf += n;
		len -= n;
		if (m->in_have == MIG_REC_HDR) {
			mig_check_header(m);
			continue;
		}
		if (m->in_have == need) {
			mig_apply_record(m);
			m->in_have = 0;
		}
	}
}

/* Why the image received is refused, or NULL when it is whole and intact. */
static const char *mig_resume_verdict(struct sim_mig *m)
{
	if (m->in_bad)
		return m->in_bad;
	if (m->in_have)
		return "a record cut short";
	if (!m->in_end)
		return "no end record";
	if (m->copy_cost)
		return NULL;
	if ((m->in_end_flags & MIG_END_F_PAGESUM ? sum_now(m)
						  : mig_hash(MIG_HASH_INIT, m->mem, m->size)) !=
	    m->in_state_hash)
		return "state checksum mismatch";
	return NULL;
}

/* ------------------------------------------------------------ data_fd */

static struct sim_mig *datafd_mig(struct sim_datafd *df)
{
	return df->dev->mig;
}

static ssize_t datafd_read_locked(struct sim_datafd *df, void *buf, size_t len)
{
	struct sim_mig *m = datafd_mig(df);
	size_t n;
	int err;

	if (!df->valid)
		return -ENODEV;
	if (df->resume)
		return -EINVAL; /* the resume file has no read */
	if (len && !buf)
		return -EFAULT;
	if (mig_running(m->state) && m->auto_dirty)
		mig_run(m, m->auto_dirty);
	if (mig_fail_fires(m, &err))
		return err;
	n = mig_emit(m, buf, sim_min_size(len, MIG_RW_MAX));
	if (!n && len && mig_precopy(m->state) && (m->opts & VFIOMIG_SIM_MIG_ENOMSG))
		return -ENOMSG;
	return (ssize_t)n;
}

/*
 * The data ops run under the device lock alone (sim_internal.h): two
 * devices' data_fds move their data at once.
 */
static ssize_t datafd_read(struct sim_obj *obj, void *buf, size_t len)
{
	struct sim_datafd *df = (struct sim_datafd *)obj;
	ssize_t ret;

	dev_lock(df->dev);
	ret = datafd_read_locked(df, buf, len);
	dev_unlock(df->dev);
	return ret;
}

static ssize_t datafd_write_locked(struct sim_datafd *df, const void *buf, size_t len)
{
	if (!df->valid)
		return -ENODEV;
	if (!df->resume)
		return -EINVAL; /* the save file has no write */
	if (len && !buf)
		return -EFAULT;
	len = sim_min_size(len, MIG_RW_MAX);
	mig_consume(datafd_mig(df), buf, len);
	return (ssize_t)len;
}

static ssize_t datafd_write(struct sim_obj *obj, const void *buf, size_t len)
{
	struct sim_datafd *df = (struct sim_datafd *)obj;
	ssize_t ret;

	dev_lock(df->dev);
	ret = datafd_write_locked(df, buf, len);
	dev_unlock(df->dev);
	return ret;
}

/* A stream: positioned I/O is refused as on a pipe. */
static ssize_t datafd_pread(struct sim_obj *obj, void *buf, size_t len, uint64_t off)
{
	return -ESPIPE;
}

static ssize_t datafd_pwrite(struct sim_obj *obj, const void *buf, size_t len, uint64_t off)
{
	return -ESPIPE;
}

static int datafd_ioctl_locked(struct sim_datafd *df, unsigned long req, void *arg)
{
	struct sim_mig *m = datafd_mig(df);
	struct vu_precopy_info pi;

	if (req != VU_MIG_GET_PRECOPY_INFO || df->resume)
		return -ENOTTY;
	if (!arg)
		return -EFAULT;
	memcpy(&pi, arg, sizeof(pi.argsz));
	if (pi.argsz < sizeof(pi))
		return -EINVAL;
	if (!mig_precopy(m->state))
		return -EINVAL;
	if (!df->valid)
		return -ENODEV;
	memcpy(&pi, arg, sizeof(pi));
	pi.initial_bytes = mig_initial_bytes(m);
	pi.dirty_bytes = mig_dirty_bytes(m);
	memcpy(arg, &pi, sizeof(pi));
	return 0;
}

static int datafd_ioctl(struct sim_obj *obj, unsigned long req, void *arg)
{
	struct sim_datafd *df = (struct sim_datafd *)obj;
	int ret;

	dev_lock(df->dev);
	ret = datafd_ioctl_locked(df, req, arg);
	dev_unlock(df->dev);
	return ret;
}

static void datafd_fd_closed(struct sim_obj *obj)
{
	struct sim_datafd *df = (struct sim_datafd *)obj;

	sim_event_add(obj->sim, "close data_fd %s", df->dev->name);
}

static void datafd_release(struct sim_obj *obj)
{
	free(obj);
}

static const struct sim_obj_ops datafd_ops = {
	.name = "data_fd",
	.ioctl = datafd_ioctl,
	.read = datafd_read,
	.write = datafd_write,
	.pread = datafd_pread,
	.pwrite = datafd_pwrite,
	.fd_closed = datafd_fd_closed,
	.release = datafd_release,
};

/* A new session handle; the device holds one reference until the session ends. */
static int mig_datafd_new(struct sim_mig *m, bool resume)
{
	struct sim_datafd *df = calloc(1, sizeof(*df));

	if (!df)
		return -ENOMEM;
	sim_obj_init(&df->obj, m->dev->sim, SIM_OBJ_DATAFD, &datafd_ops);
	df->dev = m->dev;
	df->resume = resume;
	df->valid = true;
	sim_obj_get(&df->obj);
	m->fd = df;
	m->fd_fresh = true;
	return 0;
}

/* The session is over: its data_fd answers -ENODEV from now on (it stays open until closed). */
static void mig_drop_fd(struct sim_mig *m)
{
	struct sim_datafd *df = m->fd;

	if (!df)
		return;
	df->valid = false;
	m->fd = NULL;
	m->fd_fresh = false;
	sim_obj_put(&df->obj);
}

static void mig_end_sessions(struct sim_mig *m)
{
	mig_save_end(m);
	m->resuming = false;
	mig_drop_fd(m);
}

/* ----------------------------------------------------------- transitions */

static void mig_fail_event(struct sim_mig *m, uint32_t from, uint32_t to, int err)
{
	sim_pub_event(m->dev->sim, "%s: %s -> %s failed (injected: %s)%s", m->dev->name,
		      mig_name(from), mig_name(to), strerror(-err),
		      m->ft.to_error ? ", now ERROR" : "");
}

/* fail_transition fires: the device stays in `from`, or goes to ERROR. */
static int mig_fail_arc(struct sim_mig *m, uint32_t from, uint32_t to)
{
	m->ft.armed = false;
	if (m->ft.to_error) {
		mig_end_sessions(m);
		m->state = VU_STATE_ERROR;
	}
	mig_fail_event(m, from, to, m->ft.err);
	return m->ft.err;
}

/*
 * One arc of the walk with its semantics. Only the final arc of a v2
 * request may make a data_fd (want_fd), as in the kernel.
 */
static int mig_arc(struct sim_mig *m, uint32_t from, uint32_t to, bool want_fd)
{
	struct vfiomig_sim_device *dev = m->dev;
	int err = 0;

	if (m->ft.armed && m->ft.to == to)
		return mig_fail_arc(m, from, to);

	if (from == VU_STATE_RESUMING && to == VU_STATE_STOP) {
		const char *why = mig_resume_verdict(m);

		mig_end_sessions(m);
		if (why) {
			m->state = VU_STATE_ERROR;
			sim_pub_event(dev->sim, "%s: RESUMING -> STOP failed (device data refused: "
				      "%s), now ERROR", dev->name, why);
			return -EINVAL;
		}
	} else if ((from == VU_STATE_RUNNING && to == VU_STATE_PRE_COPY) ||
		   (from == VU_STATE_RUNNING_P2P && to == VU_STATE_PRE_COPY_P2P) ||
		   (from == VU_STATE_STOP && to == VU_STATE_STOP_COPY)) {
		mig_end_sessions(m);
		mig_save_begin(m);
		if (want_fd)
			err = mig_datafd_new(m, false);
	} else if (from == VU_STATE_STOP && to == VU_STATE_RESUMING) {
		mig_end_sessions(m);
		mig_resume_begin(m);
		if (want_fd)
			err = mig_datafd_new(m, true);
	} else if ((mig_precopy(from) || from == VU_STATE_STOP_COPY) &&
		   (to == VU_STATE_STOP || to == VU_STATE_RUNNING || to == VU_STATE_RUNNING_P2P)) {
		mig_end_sessions(m);
	}
	/* PRE_COPY* -> STOP_COPY keeps the session and its data_fd; the rest change nothing. */
	if (err) {
		mig_end_sessions(m);
		return err;
	}
	m->state = to;
	sim_pub_event(dev->sim, "%s: %s -> %s", dev->name, mig_name(from), mig_name(to));
	return 0;
}

static void mig_refused(struct sim_mig *m, uint32_t target, const char *why)
{
	char t[16];

	if (target < VU_STATE_NR)
		snprintf(t, sizeof(t), "%s", mig_name(target));
	else
		snprintf(t, sizeof(t), "%u", target);
	sim_pub_event(m->dev->sim, "%s: %s -> %s refused (%s)", m->dev->name, mig_name(m->state),
		      t, why);
}

/* SET MIG_DEVICE_STATE: walk to target arc by arc; *fd_out gets a new data_fd or -1. */
static int mig_set(struct sim_mig *m, uint32_t target, int *fd_out)
{
	int fd;

	*fd_out = -1;
	if (m->state == VU_STATE_ERROR) {
		mig_refused(m, target, "only a reset leaves ERROR");
		return -EINVAL;
	}
	if (target >= VU_STATE_NR || target == VU_STATE_ERROR ||
	    !mig_state_ok(target, m->v2_flags)) {
		mig_refused(m, target, "not a state of this device");
		return -EINVAL;
	}
	if (m->state == VU_STATE_STOP_COPY &&
	    (target == VU_STATE_PRE_COPY || target == VU_STATE_PRE_COPY_P2P)) {
		sim_pub_event(m->dev->sim, "%s: STOP_COPY -> %s requested (real kernels hang here)",
			      m->dev->name, mig_name(target));
		return -EDEADLK;
	}
	while (m->state != target) {
		uint32_t from = m->state, next = mig_next(from, target, m->v2_flags);
		int err;

		if (next == VU_STATE_ERROR)
			return -EINVAL; /* not reached: refused above */
		err = mig_arc(m, from, next, next == target);
		if (err)
			return err;
	}
	if (!m->fd_fresh)
		return 0;
	m->fd_fresh = false;
	fd = sim_fd_install(m->dev->sim, &m->fd->obj);
	if (fd < 0)
		return fd; /* the state has changed anyway, as in the kernel */
	*fd_out = fd;
	return 0;
}

/* ------------------------------------------------------------------- v2 */

static int mig_feature(struct vfiomig_sim_device *dev, uint32_t flags, void *data, size_t argsz)
{
	struct sim_mig *m = dev->mig;
	int ret, fd;

	switch (flags & VU_DEVICE_FEATURE_MASK) {
	case VU_FEATURE_MIGRATION: {
		struct vu_feature_migration f = { .flags = m->v2_flags };

		ret = sim_feature_check(flags, argsz, VU_DEVICE_FEATURE_GET, sizeof(f));
		if (ret != 1)
			return ret;
		memcpy(data, &f, sizeof(f));
		return 0;
	}
	case VU_FEATURE_MIG_DEVICE_STATE: {
		struct vu_feature_mig_state st;

		ret = sim_feature_check(flags, argsz, VU_DEVICE_FEATURE_GET | VU_DEVICE_FEATURE_SET,
					sizeof(st));
		if (ret != 1)
			return ret;
		memcpy(&st, data, sizeof(st));
		if (flags & VU_DEVICE_FEATURE_GET) {
			st.device_state = m->state;
			st.data_fd = -1;
			memcpy(data, &st, sizeof(st));
			return 0;
		}
		/* Success or not, the requested state goes back; the fd only on success. */
		ret = mig_set(m, st.device_state, &fd);
		st.data_fd = ret ? -1 : fd;
		memcpy(data, &st, sizeof(st));
		return ret;
	}
	case VU_FEATURE_MIG_DATA_SIZE: {
		struct vu_feature_mig_data_size ds;

		if (m->opts & VFIOMIG_SIM_MIG_NO_DATA_SIZE)
			return -ENOTTY; /* before 6.2 vfio-pci does not know the feature */
		ret = sim_feature_check(flags, argsz, VU_DEVICE_FEATURE_GET, sizeof(ds));
		if (ret != 1)
			return ret;
		ds.stop_copy_length = mig_stopcopy_bytes(m);
		memcpy(data, &ds, sizeof(ds));
		return 0;
	}
	default:
		return -ENOTTY;
	}
}

/* ------------------------------------------------------------------- v1 */

static uint32_t v1_bits(uint32_t s)
{
	switch (s) {
	case VU_STATE_STOP:
		return VU_V1_STATE_STOP;
	case VU_STATE_RUNNING:
	case VU_STATE_RUNNING_P2P:
		return VU_V1_STATE_RUNNING;
	case VU_STATE_PRE_COPY:
	case VU_STATE_PRE_COPY_P2P:
		return VU_V1_STATE_RUNNING | VU_V1_STATE_SAVING;
	case VU_STATE_STOP_COPY:
		return VU_V1_STATE_SAVING;
	case VU_STATE_RESUMING:
		return VU_V1_STATE_RESUMING;
	default:
		return MIG_V1_ERROR_BITS;
	}
}

static bool v1_state_of(uint32_t bits, uint32_t *s)
{
	switch (bits) {
	case VU_V1_STATE_STOP: *s = VU_STATE_STOP; return true;
	case VU_V1_STATE_RUNNING: *s = VU_STATE_RUNNING; return true;
	case VU_V1_STATE_RUNNING | VU_V1_STATE_SAVING: *s = VU_STATE_PRE_COPY; return true;
	case VU_V1_STATE_SAVING: *s = VU_STATE_STOP_COPY; return true;
	case VU_V1_STATE_RESUMING: *s = VU_STATE_RESUMING; return true;
	default: return false; /* 101 and 111 are invalid; 110 is the device's to set */
	}
}

/* v1 transitions a vendor driver accepts: no saving after resuming, no resuming while saving. */
static bool v1_allowed(uint32_t from, uint32_t to)
{
	if (from == VU_STATE_STOP_COPY && (to == VU_STATE_PRE_COPY || to == VU_STATE_RESUMING))
		return false;
	if (from == VU_STATE_RESUMING && (to == VU_STATE_PRE_COPY || to == VU_STATE_STOP_COPY))
		return false;
	if (from == VU_STATE_PRE_COPY && to == VU_STATE_RESUMING)
		return false;
	return true;
}

/* A device_state write: one atomic step for the host, logged as the engine's arcs. */
static int v1_set(struct sim_mig *m, uint32_t value)
{
	uint32_t bits = value & VU_V1_STATE_MASK, target, path[VU_STATE_NR], n = 0, s;

	if (m->state == VU_STATE_ERROR) {
		if (bits == MIG_V1_ERROR_BITS) {
			m->v1_reserved = value & ~VU_V1_STATE_MASK;
			return 0;
		}
		sim_pub_event(m->dev->sim, "%s: ERROR -> v1 state %u refused (only a reset leaves "
			      "ERROR)", m->dev->name, bits);
		return -EINVAL;
	}
	if (!v1_state_of(bits, &target)) {
		sim_pub_event(m->dev->sim, "%s: %s -> v1 state %u refused (invalid)", m->dev->name,
			      mig_name(m->state), bits);
		return -EINVAL;
	}
	if (target != m->state && v1_bits(target) == v1_bits(m->state))
		target = m->state; /* a P2P twin reached through v2: same bits */
	if (target != m->state && !v1_allowed(m->state, target)) {
		mig_refused(m, target, "not a v1 transition");
		return -EINVAL;
	}
	for (s = m->state; s != target && n < VU_STATE_NR; n++)
		path[n] = s = mig_next(s, target, MIG_V1_FLAGS);
	/* The knob fails the whole write: the device stays where the host left it. */
	for (uint32_t i = 0; i < n && m->ft.armed; i++)
		if (path[i] == m->ft.to)
			return mig_fail_arc(m, i ? path[i - 1] : m->state, path[i]);
	for (uint32_t i = 0; i < n; i++) {
		int err = mig_arc(m, m->state, path[i], false);

		if (err)
			return err;
	}
	m->v1_reserved = value & ~VU_V1_STATE_MASK;
	return 0;
}

static uint8_t *v1_data(struct sim_mig *m)
{
	return (uint8_t *)m->dev->regions[m->v1_index].mem + MIG_V1_REGS;
}

static bool v1_saving(const struct sim_mig *m)
{
	return m->saving && (mig_precopy(m->state) || m->state == VU_STATE_STOP_COPY);
}

static int v1_reg_read(struct sim_mig *m, uint64_t off, uint64_t *v)
{
	int err;

	switch (off) {
	case 0:
		*v = m->v1_reserved | v1_bits(m->state);
		return 0;
	case 4:
		*v = 0;
		return 0;
	case 8:
		if (mig_running(m->state) && m->auto_dirty)
			mig_run(m, m->auto_dirty);
		*v = 0;
		if (!v1_saving(m))
			return 0;
		if (mig_fail_fires(m, &err))
			return err; /* err 0: "nothing more", a truncated save */
		*v = mig_precopy(m->state) ? mig_initial_bytes(m) + mig_dirty_bytes(m)
					   : mig_stopcopy_bytes(m);
		return 0;
	case 16:
		/* Reading data_offset asks for the next chunk. */
		if (v1_saving(m))
			m->v1_data_size = mig_emit(m, v1_data(m), (size_t)m->v1_data_len);
		*v = MIG_V1_REGS;
		return 0;
	default:
		*v = m->v1_data_size;
		return 0;
	}
}

static int v1_reg_write(struct sim_mig *m, uint64_t off, uint64_t v)
{
	switch (off) {
	case 0:
		return v1_set(m, (uint32_t)v);
	case 4:
		return 0;
	case 24:
		if (m->state != VU_STATE_RESUMING || v > m->v1_data_len)
			return -EINVAL;
		mig_consume(m, v1_data(m), (size_t)v);
		m->v1_data_size = v;
		return m->in_bad ? -EINVAL : 0;
	default:
		return -EINVAL; /* pending_bytes and data_offset are read-only */
	}
}

/* The migration region: registers at their native width only, then the data section. */
static ssize_t v1_rw(struct vfiomig_sim_device *dev, struct sim_region *r, void *buf, size_t len,
		     uint64_t off, bool write)
{
	struct sim_mig *m = dev->mig;
	unsigned int width;
	int err;

	if (off >= MIG_V1_REGS) {
		size_t n;

		if (off >= r->size)
			return -EINVAL;
		n = sim_min_size(len, r->size - off);
		if (write)
			memcpy((uint8_t *)r->mem + off, buf, n);
		else
			memcpy(buf, (uint8_t *)r->mem + off, n);
		return (ssize_t)n;
	}
	switch (off) {
	case 0: case 4: width = 4; break;
	case 8: case 16: case 24: width = 8; break;
	default: return -EINVAL;
	}
	if (len != width)
		return -EINVAL;
	if (write) {
		uint64_t v = 0;

		if (width == 4) {
			uint32_t v32;

			memcpy(&v32, buf, sizeof(v32));
			v = v32;
		} else {
			memcpy(&v, buf, sizeof(v));
		}
		err = v1_reg_write(m, off, v);
	} else {
		uint64_t v;

		err = v1_reg_read(m, off, &v);
		if (!err && width == 4) {
			uint32_t v32 = (uint32_t)v;

			memcpy(buf, &v32, sizeof(v32));
		} else if (!err) {
			memcpy(buf, &v, sizeof(v));
		}
	}
	return err ? err : (ssize_t)width;
}

/* ---------------------------------------------------------- set up, reset */

static void mig_reset(struct vfiomig_sim_device *dev)
{
	struct sim_mig *m = dev->mig;

	mig_end_sessions(m);
	m->state = VU_STATE_RUNNING;
	/* Power-on state: zero, the pages back to the kernel (a copy-cost device keeps them). */
	if (m->copy_cost || madvise(m->mem, m->size, MADV_DONTNEED) < 0)
		memset(m->mem, 0, m->size);
	sum_clear(m);
	m->v1_reserved = 0;
	m->v1_data_size = 0;
}

int sim_mig_check_opts(struct vfiomig_sim *sim, const struct vfiomig_sim_device_opts *opts)
{
	const uint32_t known = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY |
			       VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_V1_TRAPPED |
			       VFIOMIG_SIM_MIG_ENOMSG | VFIOMIG_SIM_MIG_NO_DATA_SIZE |
			       VFIOMIG_SIM_MIG_COST_COPY;
	const uint32_t v2only = VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY |
				VFIOMIG_SIM_MIG_ENOMSG | VFIOMIG_SIM_MIG_NO_DATA_SIZE;
	uint32_t mig = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, migration, 0);
	uint32_t autod = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, auto_dirty_pages, 0);
	uint64_t state = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, state_size, 0);
	uint64_t v1d = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, v1_data_size, 0);

	if (mig & ~known) {
		sim_set_error(sim, "migration flags 0x%x: unknown bits", mig);
		return -EINVAL;
	}
	if (!mig) {
		if (autod || state || v1d) {
			sim_set_error(sim, "state_size, auto_dirty_pages, v1_data_size: only with "
				      "migration");
			return -EINVAL;
		}
		return 0;
	}
	if (mig == VFIOMIG_SIM_MIG_COST_COPY) {
		sim_set_error(sim, "COST_COPY (cost=copy): only with migration (V1 or V2)");
		return -EINVAL;
	}
	if (!(mig & (VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_V2))) {
		sim_set_error(sim, "migration flags 0x%x: neither V1 nor V2", mig);
		return -EINVAL;
	}
	if ((mig & v2only) && !(mig & VFIOMIG_SIM_MIG_V2)) {
		sim_set_error(sim, "migration flags 0x%x: P2P, PRE_COPY, ENOMSG, NO_DATA_SIZE need "
			      "V2", mig);
		return -EINVAL;
	}
	if ((mig & VFIOMIG_SIM_MIG_V1_TRAPPED) && !(mig & VFIOMIG_SIM_MIG_V1)) {
		sim_set_error(sim, "migration flags 0x%x: V1_TRAPPED needs V1", mig);
		return -EINVAL;
	}
	if (state && (state % MIG_PAGE || state > MIG_STATE_MAX)) {
		sim_set_error(sim, "state_size %llu: not a multiple of 4 KiB up to 64 GiB",
			      (unsigned long long)state);
		return -EINVAL;
	}
	if (v1d && (!(mig & VFIOMIG_SIM_MIG_V1) || v1d % MIG_PAGE || v1d > MIG_V1_DATA_MAX)) {
		sim_set_error(sim, "v1_data_size %llu: needs V1, a multiple of 4 KiB up to 1 GiB",
			      (unsigned long long)v1d);
		return -EINVAL;
	}
	return 0;
}

static uint64_t mig_seed(const char *name)
{
	uint64_t h = MIG_HASH_INIT;

	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * MIG_HASH_PRIME;
	return h ? h : 0x9e3779b97f4a7c15ull;
}

static int mig_add_v1_region(struct sim_mig *m)
{
	struct sim_region t = { 0 };
	bool trapped = m->opts & VFIOMIG_SIM_MIG_V1_TRAPPED;
	int idx;

	t.flags = VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE;
	t.size = MIG_V1_REGS + m->v1_data_len;
	t.has_type = true;
	t.type = VU_REGION_TYPE_MIGRATION_DEPRECATED;
	t.subtype = VU_REGION_SUBTYPE_MIGRATION_DEPRECATED;
	if (!trapped) {
		/* Only the data section may be mapped; the registers stay trapped. */
		t.flags |= VU_REGION_INFO_FLAG_MMAP;
		t.sparse = true;
		t.nr_areas = 1;
		t.areas[0].offset = MIG_V1_REGS;
		t.areas[0].size = m->v1_data_len;
	}
	t.rw = v1_rw;
	idx = sim_device_add_region(m->dev, &t);
	if (idx < 0)
		return idx;
	m->v1_index = idx;
	return 0;
}

int sim_mig_setup(struct vfiomig_sim_device *dev, const struct vfiomig_sim_device_opts *opts)
{
	uint32_t mig = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, migration, 0);
	uint64_t state = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, state_size, 0);
	uint64_t v1d = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, v1_data_size, 0);
	struct sim_mig *m;
	void *p;

	if (!mig)
		return 0;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->dev = dev;
	m->opts = mig;
	m->size = state ? state : MIG_STATE_DEFAULT;
	m->npages = m->size / MIG_PAGE;
	m->auto_dirty = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, auto_dirty_pages, 0);
	m->copy_cost = mig & VFIOMIG_SIM_MIG_COST_COPY;
	m->rng = mig_seed(dev->name);
	m->state = VU_STATE_RUNNING;
	m->v1_index = -1;
	m->v1_data_len = v1d ? v1d : MIG_V1_DATA_DEFAULT;
	if (mig & VFIOMIG_SIM_MIG_V2) {
		m->v2_flags = VU_MIGRATION_STOP_COPY;
		if (mig & VFIOMIG_SIM_MIG_P2P)
			m->v2_flags |= VU_MIGRATION_P2P;
		if (mig & VFIOMIG_SIM_MIG_PRE_COPY)
			m->v2_flags |= VU_MIGRATION_PRE_COPY;
	}
	m->dirty = calloc((size_t)((m->npages + 63) / 64), sizeof(m->dirty[0]));
	/*
	 * Untouched pages cost nothing: a big state that stays mostly zero is
	 * cheap. A copy-cost device's state is resident from the start
	 * instead, so its data path takes no page faults either.
	 */
	p = mmap(NULL, (size_t)m->size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS |
			 (m->copy_cost ? MAP_POPULATE : MAP_NORESERVE), -1, 0);
	if (!m->dirty || p == MAP_FAILED) {
		if (p != MAP_FAILED)
			munmap(p, (size_t)m->size);
		free(m->dirty);
		free(m);
		return -ENOMEM;
	}
	m->mem = p;
	dev->mig = m;
	if (sum_setup(m))
		return -ENOMEM; /* the caller frees the device, and the engine with it */
	if (mig & VFIOMIG_SIM_MIG_V1) {
		int err = mig_add_v1_region(m);

		if (err)
			return err; /* the caller frees the device, and the engine with it */
	}
	if (mig & VFIOMIG_SIM_MIG_V2)
		dev->feature = mig_feature;
	dev->reset_hook = mig_reset;
	return 0;
}

void sim_mig_free(struct vfiomig_sim_device *dev)
{
	struct sim_mig *m = dev->mig;

	if (!m)
		return;
	mig_end_sessions(m);
	munmap(m->mem, (size_t)m->size);
	if (m->sum_map)
		munmap(m->sum_map, m->sum_map_len);
	free(m->dirty);
	free(m);
	dev->mig = NULL;
}

/* ---------------------------------------------------------- public knobs */

int vfiomig_sim_device_run(struct vfiomig_sim_device *dev, uint64_t pages)
{
	int err = 0;

	if (!dev)
		return -EINVAL;
	if (!dev->mig)
		return -EOPNOTSUPP;
	dev_lock(dev);
	if (mig_running(dev->mig->state))
		mig_run(dev->mig, pages);
	else
		err = -EBUSY;
	dev_unlock(dev);
	return err;
}

const void *vfiomig_sim_device_state(const struct vfiomig_sim_device *dev, size_t *len)
{
	if (len)
		*len = 0;
	if (!dev || !dev->mig)
		return NULL;
	if (len)
		*len = (size_t)dev->mig->size;
	return dev->mig->mem;
}

int vfiomig_sim_device_state_hash(struct vfiomig_sim_device *dev, uint64_t *hash)
{
	if (!dev || !hash)
		return -EINVAL;
	if (!dev->mig)
		return -EOPNOTSUPP;
	dev_lock(dev);
	*hash = sum_now(dev->mig);
	dev_unlock(dev);
	return 0;
}

int vfiomig_sim_device_mig_state(const struct vfiomig_sim_device *dev)
{
	/* Read under the device lock, which is the one thing changed through a const dev. */
	pthread_mutex_t *lock;
	int s;

	if (!dev)
		return -EINVAL;
	if (!dev->mig)
		return -EOPNOTSUPP;
	lock = (pthread_mutex_t *)&dev->lock;
	pthread_mutex_lock(lock);
	s = (int)dev->mig->state;
	pthread_mutex_unlock(lock);
	return s;
}

int vfiomig_sim_device_fail_transition(struct vfiomig_sim_device *dev, uint32_t to, int err,
				       bool to_error)
{
	if (!dev || !dev->mig || to == VU_STATE_ERROR || to >= VU_STATE_NR || err >= 0 ||
	    err < -4095)
		return -EINVAL;
	dev_lock(dev);
	dev->mig->ft.armed = true;
	dev->mig->ft.to = to;
	dev->mig->ft.err = err;
	dev->mig->ft.to_error = to_error;
	dev_unlock(dev);
	return 0;
}

int vfiomig_sim_device_fail_data(struct vfiomig_sim_device *dev, uint64_t after_bytes, int err)
{
	if (!dev || !dev->mig || err > 0 || err < -4095)
		return -EINVAL;
	dev_lock(dev);
	dev->mig->fdk.armed = true;
	dev->mig->fdk.left = after_bytes;
	dev->mig->fdk.err = err;
	dev_unlock(dev);
	return 0;
}

int vfiomig_sim_device_corrupt_data(struct vfiomig_sim_device *dev, uint64_t after_bytes)
{
	if (!dev || !dev->mig)
		return -EINVAL;
	dev_lock(dev);
	dev->mig->cdk.armed = true;
	dev->mig->cdk.left = after_bytes;
	dev_unlock(dev);
	return 0;
}
