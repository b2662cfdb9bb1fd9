/* SPDX-License-Identifier: MIT */
/*
 * Dirty-bitmap helpers: counting, OR-ing, clearing, run iteration and
 * page-size conversion over uint64_t words (the kernel's layout: bit i of
 * word w is page w * 64 + i). Everything works a word at a time so a
 * 1 TiB guest's 4 KiB-page bitmap (32 MiB) scans at memory speed; the
 * last word is masked so bits past nbits are never read as set nor written.
 *
 * Conversion between page sizes folds groups of bits into one (to a larger
 * page) or spreads one bit into a group (to a smaller page) with shifts and
 * masks on whole words. On x86-64 with AVX2 the bulk of ratios 2..32 runs
 * 32 bytes at a time: byte compares and movemask gather one bit per group
 * in a few instructions where shifts take a dozen per word (4 KiB -> 16 KiB
 * measured 0.2x the speed of a plain read of the bitmap with shifts, 0.8x
 * with AVX2). The portable code does the rest, and all of it elsewhere.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define VM_INLINE static inline __attribute__((always_inline))

static inline uint64_t tail_mask(uint64_t nbits)
{
	unsigned int r = (unsigned int)(nbits & 63);

	return r ? (1ull << r) - 1 : ~0ull;
}

static uint64_t count_words_generic(const uint64_t *bm, uint64_t words)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	return n;
}

#if defined(__x86_64__)
/* The POPCNT instruction is ~4x the portable bit trick; pick it at run time. */
__attribute__((target("popcnt")))
static uint64_t count_words_popcnt(const uint64_t *bm, uint64_t words)
{
	uint64_t n0 = 0, n1 = 0, i;

	for (i = 0; i + 1 < words; i += 2) {
		n0 += (uint64_t)__builtin_popcountll(bm[i]);
		n1 += (uint64_t)__builtin_popcountll(bm[i + 1]);
	}
	if (i < words)
		n0 += (uint64_t)__builtin_popcountll(bm[i]);
	return n0 + n1;
}
#endif

uint64_t vfiomig_bitmap_count(const uint64_t *bm, uint64_t nbits)
{
	uint64_t words = nbits / 64, n;

	if (!bm)
		return 0;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("popcnt"))
		n = count_words_popcnt(bm, words);
	else
#endif
		n = count_words_generic(bm, words);
	if (nbits & 63)
		n += (uint64_t)__builtin_popcountll(bm[words] & tail_mask(nbits));
	return n;
}

void vfiomig_bitmap_or(uint64_t *dst, const uint64_t *src, uint64_t nbits)
{
	uint64_t words = nbits / 64, i;

	if (!dst || !src)
		return;
	for (i = 0; i < words; i++)
		dst[i] |= src[i];
	if (nbits & 63)
		dst[words] |= src[words] & tail_mask(nbits);
}

void vfiomig_bitmap_clear(uint64_t *bm, uint64_t nbits)
{
	uint64_t words = nbits / 64;

	if (!bm)
		return;
	memset(bm, 0, words * sizeof(*bm));
	if (nbits & 63)
		bm[words] &= ~tail_mask(nbits);
}

void vfiomig_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t count)
{
	uint64_t end = first + count, w, lastw;

	if (!bm || !count || end < first)
		return;
	w = first / 64;
	lastw = (end - 1) / 64;
	if (w == lastw) {
		uint64_t m = (count == 64 ? ~0ull : ((1ull << count) - 1)) << (first & 63);

		bm[w] |= m;
		return;
	}
	bm[w++] |= ~0ull << (first & 63);
	while (w < lastw)
		bm[w++] = ~0ull;
	bm[lastw] |= tail_mask(end);
}

/*
 * One callback per maximal run of set bits. A word XORed with itself
 * shifted up by one (the previous word's top bit shifted in) has a bit set
 * where a run starts or ends, so each run costs two count-trailing-zeros;
 * words inside a gap or a run (all zeros, all ones) cost a compare, four
 * at a time. With millions of short runs the time goes to the calls and to
 * the branches on where runs end, which no word trick removes (a buffer of
 * run boundaries filled without branches measured no faster).
 */
int vfiomig_bitmap_for_each_run(const uint64_t *bm, uint64_t nbits, vfiomig_bitmap_run_fn fn,
				void *user)
{
	uint64_t full = nbits / 64, w = 0, start = 0, in = 0;
	int ret;

	if (!bm || !fn)
		return -EINVAL;
	for (;;) {
		uint64_t v, t, base, fill = 0 - in; /* fill: a word that changes nothing */

		while (w + 4 <= full &&
		       ((bm[w] ^ fill) | (bm[w + 1] ^ fill) | (bm[w + 2] ^ fill) | (bm[w + 3] ^ fill)) == 0)
			w += 4;
		if (w < full)
			v = bm[w];
		else if (w == full && (nbits & 63))
			v = bm[w] & tail_mask(nbits); /* clear past nbits: an open run ends there */
		else
			break;
		base = w * 64;
		t = v ^ (v << 1 | in);
		in = v >> 63;
		w++;
		if (!t)
			continue;
		if (fill) { /* the first change ends the run carried in */
			ret = fn(user, start, base + (uint64_t)__builtin_ctzll(t) - start);
			if (ret)
				return ret;
			t &= t - 1;
		}
		while (t) {
			uint64_t end;

			start = base + (uint64_t)__builtin_ctzll(t);
			t &= t - 1;
			if (!t)
				break; /* runs into the next word */
			end = base + (uint64_t)__builtin_ctzll(t);
			t &= t - 1;
			ret = fn(user, start, end - start);
			if (ret)
				return ret;
		}
	}
	return in ? fn(user, start, nbits - start) : 0;
}

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* w one bits every s bits (1 <= w <= s <= 64); constant-folded. */
VM_INLINE uint64_t pattern(unsigned int w, unsigned int s)
{
	uint64_t ones = w >= 64 ? ~0ull : (1ull << w) - 1;

	return s >= 64 ? ones : ~0ull / ((1ull << s) - 1) * ones;
}

/*
 * Compress step t (1..5) of fold_word(): fields of w = 2^(t-k) bits every
 * 2^t bits merge pairwise into 2w bits every 2^(t+1) bits. Steps below k
 * have nothing to do (the fields are single bits every 2^k).
 */
VM_INLINE uint64_t compress_step(uint64_t v, unsigned int k, unsigned int t)
{
	unsigned int w = 1u << (t >= k ? t - k : 0);

	return t >= k ? (v | v >> ((1u << t) - w)) & pattern(2 * w, 2u << t) : v;
}

/* The reverse of compress_step(): 2w bits every 2^(t+1) split into w bits every 2^t. */
VM_INLINE uint64_t spread_step(uint64_t x, unsigned int k, unsigned int t)
{
	unsigned int w = 1u << (t >= k ? t - k : 0);

	return t >= k ? (x | x << ((1u << t) - w)) & pattern(w, 1u << t) : x;
}

/*
 * OR each group of 2^k bits of v (1 <= k <= 5) into one bit: the 64 >> k
 * results, in order, in the low bits. The OR lands in each group's lowest
 * bit, then the compress steps close the gaps. Called with a constant k:
 * the steps that do nothing vanish and the masks are constants (written
 * out, not as loops: an unroll pragma is refused under the sanitizers).
 */
VM_INLINE uint64_t fold_word(uint64_t v, unsigned int k)
{
	v |= v >> 1;
	if (k > 1)
		v |= v >> 2;
	if (k > 2)
		v |= v >> 4;
	if (k > 3)
		v |= v >> 8;
	if (k > 4)
		v |= v >> 16;
	v &= pattern(1, 1u << k);
	v = compress_step(v, k, 1);
	v = compress_step(v, k, 2);
	v = compress_step(v, k, 3);
	v = compress_step(v, k, 4);
	return compress_step(v, k, 5);
}

/* The inverse: each of the low 64 >> k bits of x becomes a run of 2^k bits. */
VM_INLINE uint64_t spread_word(uint64_t x, unsigned int k)
{
	x = spread_step(x, k, 5);
	x = spread_step(x, k, 4);
	x = spread_step(x, k, 3);
	x = spread_step(x, k, 2);
	x = spread_step(x, k, 1);
	/* One bit every 2^k: times 2^(2^k) - 1 fills each group, no carries. */
	return (x << (1u << k)) - x;
}

/*
 * Below this many whole source words (2 KiB) the portable loops do it all:
 * the expansion's 1 KiB of shuffle tables is not worth building for a few
 * words, and the tests reach both paths by the size of their bitmaps.
 */
#define SIMD_MIN_WORDS 256

#if defined(__x86_64__)
#define VM_AVX2 __attribute__((target("avx2")))

static inline VM_AVX2 __m256i load32(const void *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

/* movemask of a 32-byte vector, as the low 32 bits of a word. */
#define MASK32(x) ((uint64_t)(uint32_t)_mm256_movemask_epi8(x))

/*
 * Fold kernels: nd destination words, each from 2^k whole source words;
 * return how many they did. A group is "any bit set" = "not equal to 0":
 * compare bytes (16-, 32-bit lanes) with zero and gather the results with
 * movemask; groups smaller than a byte are first brought to bit 7 of their
 * byte by shifts, one movemask per position, and interleaved by unpacks.
 */
static VM_AVX2 uint64_t fold_avx2_k1(const uint64_t *src, uint64_t *dst, uint64_t nd)
{
	uint64_t j;

	for (j = 0; j + 2 <= nd; j += 2) {
		__m256i v = load32(src + 2 * j), a, b, c, d, ab, cd, x0, x1, x2, x3;

		v = _mm256_or_si256(v, _mm256_srli_epi64(v, 1)); /* pair i at bit 2i */
		a = _mm256_slli_epi64(v, 7); /* bit 7 of byte n: pair 4n */
		b = _mm256_slli_epi64(v, 5); /* pair 4n + 1 */
		c = _mm256_slli_epi64(v, 3);
		d = _mm256_slli_epi64(v, 1);
		ab = _mm256_unpacklo_epi8(a, b);
		cd = _mm256_unpacklo_epi8(c, d);
		x0 = _mm256_unpacklo_epi16(ab, cd); /* per 16-byte lane: bytes 0-3 */
		x1 = _mm256_unpackhi_epi16(ab, cd); /* bytes 4-7 */
		ab = _mm256_unpackhi_epi8(a, b);
		cd = _mm256_unpackhi_epi8(c, d);
		x2 = _mm256_unpacklo_epi16(ab, cd); /* bytes 8-11 */
		x3 = _mm256_unpackhi_epi16(ab, cd); /* bytes 12-15 */
		dst[j] |= MASK32(_mm256_permute2x128_si256(x0, x1, 0x20)) |
			  MASK32(_mm256_permute2x128_si256(x2, x3, 0x20)) << 32;
		dst[j + 1] |= MASK32(_mm256_permute2x128_si256(x0, x1, 0x31)) |
			      MASK32(_mm256_permute2x128_si256(x2, x3, 0x31)) << 32;
	}
	return j;
}

static VM_AVX2 uint64_t fold_avx2_k2(const uint64_t *src, uint64_t *dst, uint64_t nd)
{
	const __m256i lo = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
	uint64_t j;

	for (j = 0; j < nd; j++) {
		__m256i v = load32(src + 4 * j), a, b, x0, x1;

		a = _mm256_cmpeq_epi8(_mm256_and_si256(v, lo), zero); /* nibble 2n empty */
		b = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo), zero);
		x0 = _mm256_unpacklo_epi8(a, b);
		x1 = _mm256_unpackhi_epi8(a, b);
		dst[j] |= ~(MASK32(_mm256_permute2x128_si256(x0, x1, 0x20)) |
			    MASK32(_mm256_permute2x128_si256(x0, x1, 0x31)) << 32);
	}
	return j;
}

static VM_AVX2 uint64_t fold_avx2_k3(const uint64_t *src, uint64_t *dst, uint64_t nd)
{
	const __m256i zero = _mm256_setzero_si256();
	uint64_t j;

	for (j = 0; j < nd; j++)
		dst[j] |= ~(MASK32(_mm256_cmpeq_epi8(load32(src + 8 * j), zero)) |
			    MASK32(_mm256_cmpeq_epi8(load32(src + 8 * j + 4), zero)) << 32);
	return j;
}

static VM_AVX2 uint64_t fold_avx2_k4(const uint64_t *src, uint64_t *dst, uint64_t nd)
{
	const __m256i zero = _mm256_setzero_si256();
	uint64_t j;

	for (j = 0; j < nd; j++) {
		const uint64_t *s = src + 16 * j;
		__m256i p0, p1;

		/* 16-bit compares packed to bytes; packs works per 16-byte lane, 0xD8 restores order. */
		p0 = _mm256_packs_epi16(_mm256_cmpeq_epi16(load32(s), zero),
					_mm256_cmpeq_epi16(load32(s + 4), zero));
		p1 = _mm256_packs_epi16(_mm256_cmpeq_epi16(load32(s + 8), zero),
					_mm256_cmpeq_epi16(load32(s + 12), zero));
		dst[j] |= ~(MASK32(_mm256_permute4x64_epi64(p0, 0xD8)) |
			    MASK32(_mm256_permute4x64_epi64(p1, 0xD8)) << 32);
	}
	return j;
}

static VM_AVX2 uint64_t fold_avx2_k5(const uint64_t *src, uint64_t *dst, uint64_t nd)
{
	const __m256i zero = _mm256_setzero_si256();
	uint64_t j;

	for (j = 0; j < nd; j++) {
		uint64_t m = 0;

		for (unsigned int t = 0; t < 8; t++) {
			__m256i c = _mm256_cmpeq_epi32(load32(src + 32 * j + 4 * t), zero);

			m |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(c)) << (8 * t);
		}
		dst[j] |= ~m;
	}
	return j;
}

static uint64_t fold_avx2(const uint64_t *src, uint64_t *dst, uint64_t nd, unsigned int k)
{
	switch (k) {
	case 1: return fold_avx2_k1(src, dst, nd);
	case 2: return fold_avx2_k2(src, dst, nd);
	case 3: return fold_avx2_k3(src, dst, nd);
	case 4: return fold_avx2_k4(src, dst, nd);
	default: return fold_avx2_k5(src, dst, nd);
	}
}

/*
 * Expansion: every 16 source bytes (two words) make 16 * 2^k destination
 * bytes, 2^k / 2 vectors. Both 16-byte lanes get the 16 source bytes; a
 * shuffle gives each destination byte the source byte its bits come from,
 * and per source bit a mask-and-compare turns it into its 2^k copies
 * (ratios >= 8: the whole byte). An all-zero pair of source words is
 * skipped from ratio 8 up, where it saves 4 to 16 vector stores; by 2 and
 * 4 the branch, mispredicted at 10% dirty, costs more than it saves
 * (measured on the bench's bitmaps).
 */
VM_INLINE VM_AVX2 uint64_t expand_avx2_k(const uint64_t *src, uint64_t *dst, uint64_t ns,
					  unsigned int k)
{
	const unsigned int r = 1u << k, nvec = r / 2, nsel = r >= 8 ? 1 : 8 / r;
	uint8_t idx[16][32] __attribute__((aligned(32)));
	uint8_t sel[16][32] __attribute__((aligned(32)));
	__m256i out[4];
	uint64_t i;

	for (unsigned int t = 0; t < nvec; t++) {
		for (unsigned int d = 0; d < 32; d++) {
			unsigned int bit = (32 * t + d) * 8 >> k; /* first source bit of this byte */

			idx[t][d] = (uint8_t)(bit / 8);
			for (unsigned int e = 0; e < nsel; e++)
				sel[t * nsel + e][d] = (uint8_t)(1u << (bit % 8 + e));
		}
	}
	for (unsigned int e = 0; e < nsel; e++)
		out[e] = _mm256_set1_epi8((char)(r >= 8 ? 0xff : ((1u << r) - 1) << (e * r)));
	for (i = 0; i + 2 <= ns; i += 2) {
		__m256i b;

		if (r >= 8 && !(src[i] | src[i + 1]))
			continue;
		b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(src + i)));
		for (unsigned int t = 0; t < nvec; t++) {
			__m256i x = _mm256_shuffle_epi8(b, load32(idx[t])), o = _mm256_setzero_si256();
			__m256i *p = (__m256i *)(dst + (i << k) + 4 * t);

			for (unsigned int e = 0; e < nsel; e++) {
				__m256i s = load32(sel[t * nsel + e]);
				__m256i m = _mm256_cmpeq_epi8(_mm256_and_si256(x, s), s);

				o = _mm256_or_si256(o, nsel == 1 ? m : _mm256_and_si256(m, out[e]));
			}
			_mm256_storeu_si256(p, _mm256_or_si256(_mm256_loadu_si256(p), o));
		}
	}
	return i;
}

static VM_AVX2 uint64_t expand_avx2(const uint64_t *src, uint64_t *dst, uint64_t ns, unsigned int k)
{
	switch (k) {
	case 1: return expand_avx2_k(src, dst, ns, 1);
	case 2: return expand_avx2_k(src, dst, ns, 2);
	case 3: return expand_avx2_k(src, dst, ns, 3);
	case 4: return expand_avx2_k(src, dst, ns, 4);
	default: return expand_avx2_k(src, dst, ns, 5);
	}
}

static bool have_avx2(void)
{
	return __builtin_cpu_supports("avx2");
}
#else
static bool have_avx2(void)
{
	return false;
}
static uint64_t fold_avx2(const uint64_t *src, uint64_t *dst, uint64_t nd, unsigned int k)
{
	(void)src, (void)dst, (void)nd, (void)k;
	return 0;
}
static uint64_t expand_avx2(const uint64_t *src, uint64_t *dst, uint64_t ns, unsigned int k)
{
	(void)src, (void)dst, (void)ns, (void)k;
	return 0;
}
#endif

/*
 * To a page 2^k times larger, k 1..5: destination word j is made of source
 * words j * 2^k .. j * 2^k + 2^k - 1, each giving 64 >> k bits. The words
 * after the last whole group go one at a time, the last one masked.
 */
VM_INLINE void fold_small(const uint64_t *src, uint64_t n, uint64_t *dst, unsigned int k)
{
	const unsigned int r = 1u << k, g = 64 >> k;
	uint64_t full = n / 64, words = (n + 63) / 64, nd = full >> k, j = 0, i;

	if (full >= SIMD_MIN_WORDS && have_avx2())
		j = fold_avx2(src, dst, nd, k);
	for (; j < nd; j++) {
		const uint64_t *s = src + (j << k);
		uint64_t x = 0;

		for (unsigned int q = 0; q < r; q++)
			x |= fold_word(s[q], k) << (q * g);
		dst[j] |= x;
	}
	for (i = nd << k; i < words; i++) {
		uint64_t v = i < full ? src[i] : src[i] & tail_mask(n);
		uint64_t x = fold_word(v, k) << ((i & (r - 1)) * g);

		if (x)
			dst[i >> k] |= x;
	}
}

/*
 * To a page 2^k times smaller, k 1..5: source word i makes destination
 * words i * 2^k .. i * 2^k + 2^k - 1. Zero source words are skipped; the
 * last, partial one writes only the destination words that hold bits.
 */
VM_INLINE void expand_small(const uint64_t *src, uint64_t n, uint64_t *dst, unsigned int k)
{
	const unsigned int r = 1u << k, g = 64 >> k;
	uint64_t full = n / 64, dwords = ((n << k) + 63) / 64, i = 0;

	if (full >= SIMD_MIN_WORDS && have_avx2())
		i = expand_avx2(src, dst, full, k);
	for (; i < full; i++) {
		uint64_t v = src[i], *d = dst + (i << k);

		if (!v)
			continue;
		for (unsigned int q = 0; q < r; q++)
			d[q] |= spread_word(v >> (q * g) & pattern(g, 64), k);
	}
	if (n & 63) {
		uint64_t v = src[full] & tail_mask(n);

		for (uint64_t q = 0; (full << k) + q < dwords; q++) {
			uint64_t x = spread_word(v >> (q * g) & pattern(g, 64), k);

			if (x)
				dst[(full << k) + q] |= x;
		}
	}
}

/* To a page 2^k times larger, k >= 6: one destination bit per 2^(k-6) source words. */
static void fold_large(const uint64_t *src, uint64_t n, uint64_t *dst, unsigned int k)
{
	uint64_t per = 1ull << (k - 6), full = n / 64, words = (n + 63) / 64, acc = 0, w = 0;

	for (uint64_t j = 0; w < words; j++) {
		uint64_t end = words - w > per ? w + per : words, any = 0;

		for (; w < end && w < full; w++)
			any |= src[w];
		if (w < end) /* the last word, partial */
			any |= src[w++] & tail_mask(n);
		if (any)
			acc |= 1ull << (j & 63);
		if ((j & 63) == 63 || w == words) {
			if (acc)
				dst[j / 64] |= acc;
			acc = 0;
		}
	}
}

/*
 * To a page 2^k times smaller, k >= 6: each set source bit is 2^(k-6)
 * whole destination words, so each run of set bits is one memset.
 */
static void expand_large(const uint64_t *src, uint64_t n, uint64_t *dst, unsigned int k)
{
	uint64_t full = n / 64, words = (n + 63) / 64;
	unsigned int sh = k - 6;

	for (uint64_t w = 0; w < words; w++) {
		uint64_t v = w < full ? src[w] : src[w] & tail_mask(n);

		while (v) {
			unsigned int s = (unsigned int)__builtin_ctzll(v);
			uint64_t rest = ~(v >> s), len = rest ? (uint64_t)__builtin_ctzll(rest) : 64;

			memset(dst + ((w * 64 + s) << sh), 0xff, (len << sh) * sizeof(*dst));
			v &= v + (v & (0 - v)); /* clear the lowest run */
		}
	}
}

int vfiomig_bitmap_convert(const uint64_t *src, uint64_t src_bits, uint64_t src_pgsize,
			   uint64_t *dst, uint64_t dst_pgsize)
{
	uint64_t bytes;
	unsigned int k;

	if (!src || !dst || !pow2(src_pgsize) || !pow2(dst_pgsize) ||
	    __builtin_mul_overflow(src_bits, src_pgsize, &bytes))
		return -EINVAL;
	if (src_pgsize == dst_pgsize) {
		vfiomig_bitmap_or(dst, src, src_bits);
		return 0;
	}
	if (src_pgsize < dst_pgsize) {
		k = (unsigned int)(__builtin_ctzll(dst_pgsize) - __builtin_ctzll(src_pgsize));
		/* A constant k per call of the inlined code: its loops unroll, its masks fold. */
		switch (k) {
		case 1: fold_small(src, src_bits, dst, 1); break;
		case 2: fold_small(src, src_bits, dst, 2); break;
		case 3: fold_small(src, src_bits, dst, 3); break;
		case 4: fold_small(src, src_bits, dst, 4); break;
		case 5: fold_small(src, src_bits, dst, 5); break;
		default: fold_large(src, src_bits, dst, k); break;
		}
	} else {
		/* src_bits << k does not overflow: it is at most bytes / dst_pgsize. */
		k = (unsigned int)(__builtin_ctzll(src_pgsize) - __builtin_ctzll(dst_pgsize));
		switch (k) {
		case 1: expand_small(src, src_bits, dst, 1); break;
		case 2: expand_small(src, src_bits, dst, 2); break;
		case 3: expand_small(src, src_bits, dst, 3); break;
		case 4: expand_small(src, src_bits, dst, 4); break;
		case 5: expand_small(src, src_bits, dst, 5); break;
		default: expand_large(src, src_bits, dst, k); break;
		}
	}
	return 0;
}
