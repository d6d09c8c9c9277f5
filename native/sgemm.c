/*
 * sgemm in the Goto/BLIS layout: op(b) is packed into KC×NR column panels
 * (kept in L2/L3), op(a) into MC×KC row panels of MR rows (kept in L2), and a register-tiled
 * microkernel runs over the panels: 12×32 with AVX-512, 6×16 with AVX2/FMA, or a portable
 * 6×16, whichever is the fastest the CPU has at run time. Transposes are absorbed by packing.
 * cr_sgemm_packing keeps the packed op(b) for later products (cr_sgemm_packed: a weight reused
 * by a step's micro-batches); both run the same blocks through the same kernels, so the bits
 * are cr_sgemm's. With kernel threads (threads.c) a large product is split by columns (or rows)
 * among them, each element still computed by the same chain, so the bits do not change.
 */
#include "kernels.h"
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CR_X86 1
#else
#define CR_X86 0
#endif

/* The largest tile any kernel uses (for the edge buffer). */
#define MAX_MR 12
#define MAX_NR 32
#define NC 3072

static _Thread_local float *pack_a, *pack_b;
static _Thread_local size_t pack_a_floats, pack_b_floats;

void cr_sgemm_release(void) {
  free(pack_a);
  free(pack_b);
  pack_a = pack_b = NULL;
  pack_a_floats = pack_b_floats = 0;
}

static float *aligned(size_t floats) {
  size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
  return aligned_alloc(64, bytes);
}

/* Grows a thread's packing buffer to hold `floats`; kept for later calls (no per-call allocation). */
static float *reserve(float **buf, size_t *have, size_t floats) {
  if (floats > *have) {
    free(*buf);
    *buf = aligned(floats);
    *have = floats;
  }
  return *buf;
}

static int has_avx2_fma(void) {
#if CR_X86 && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

static int has_avx512(void) {
#if CR_X86 && defined(__GNUC__)
  __builtin_cpu_init(); /* libgcc also checks that the OS saves the zmm state */
  return __builtin_cpu_supports("avx512f");
#else
  return 0;
#endif
}

/* Packs op(a)[i0 .. i0+mc, p0 .. p0+kc] as panels of MR rows: panel r, step p at [r·kc·MR + p·MR]. */
static void pack_block_a(const float *a, long m, long k, int trans_a, long i0, long mc, long p0, long kc, float *dst, const long MR) {
  for (long ir = 0; ir < mc; ir += MR) {
    long rows = mc - ir < MR ? mc - ir : MR;
    float *panel = dst + ir * kc;
    if (trans_a) { /* a is k×m: op(a)(i, p) = a[p·m + i], rows contiguous per p */
      for (long p = 0; p < kc; p++) {
        const float *src = a + (p0 + p) * m + i0 + ir;
        long r = 0;
        for (; r < rows; r++) panel[p * MR + r] = src[r];
        for (; r < MR; r++) panel[p * MR + r] = 0.0f;
      }
    } else { /* a is m×k: op(a)(i, p) = a[i·k + p] */
      for (long r = 0; r < MR; r++) {
        if (r < rows) {
          const float *src = a + (i0 + ir + r) * k + p0;
          for (long p = 0; p < kc; p++) panel[p * MR + r] = src[p];
        } else {
          for (long p = 0; p < kc; p++) panel[p * MR + r] = 0.0f;
        }
      }
    }
  }
}

#if CR_X86
/* dst[p·ldd + j] = src[j·ld + p] for an 8×8 block: the transposing pack of b, eight at a time. */
__attribute__((target("avx2")))
static void transpose8(const float *src, long ld, float *dst, long ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld), r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);
  __m256 r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld), r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5), t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#endif

static int has_avx2(void) {
#if CR_X86 && defined(__GNUC__)
  static int known = -1;
  if (known < 0) { __builtin_cpu_init(); known = __builtin_cpu_supports("avx2"); }
  return known;
#else
  return 0;
#endif
}

/* Packs op(b)[p0 .. p0+kc, j0 .. j0+nc] as panels of NR columns: panel j, step p at [j·kc·NR + p·NR]. */
static void pack_block_b(const float *b, long n, long k, int trans_b, long p0, long kc, long j0, long nc, float *dst, const long NR) {
  for (long jr = 0; jr < nc; jr += NR) {
    long cols = nc - jr < NR ? nc - jr : NR;
    float *panel = dst + jr * kc;
#if CR_X86
    if (trans_b && cols == NR && NR % 8 == 0 && has_avx2()) { /* whole panels: 8×8 blocks in registers (a copy: same bits) */
      long p = 0;
      for (; p + 8 <= kc; p += 8)
        for (long j = 0; j < NR; j += 8) transpose8(b + (j0 + jr + j) * k + p0 + p, k, panel + p * NR + j, NR);
      for (; p < kc; p++)
        for (long j = 0; j < NR; j++) panel[p * NR + j] = b[(j0 + jr + j) * k + p0 + p];
      continue;
    }
#endif
    if (trans_b) { /* b is n×k: op(b)(p, j) = b[j·k + p] */
      for (long j = 0; j < NR; j++) {
        if (j < cols) {
          const float *src = b + (j0 + jr + j) * k + p0;
          for (long p = 0; p < kc; p++) panel[p * NR + j] = src[p];
        } else {
          for (long p = 0; p < kc; p++) panel[p * NR + j] = 0.0f;
        }
      }
    } else { /* b is k×n: op(b)(p, j) = b[p·n + j], NR contiguous per p */
      for (long p = 0; p < kc; p++) {
        const float *src = b + (p0 + p) * n + j0 + jr;
        if (cols == NR) {
          memcpy(panel + p * NR, src, (size_t)NR * sizeof(float));
        } else {
          long j = 0;
          for (; j < cols; j++) panel[p * NR + j] = src[j];
          for (; j < NR; j++) panel[p * NR + j] = 0.0f;
        }
      }
    }
  }
}

typedef void (*ukernel_fn)(long kc, const float *a, const float *b, float *c, long ldc, int add);
/* The same product for the first `rows` (< mr) rows of a panel only, straight into c: a bottom
 * edge costs its own rows, not a full tile (a micro-batch of 32 rows is 12 + 12 + 8). Each
 * entry is the same chain of FMAs as in the full tile, so the bits are the same. */
typedef void (*ukernel_rows_fn)(long kc, const float *a, const float *b, float *c, long ldc, int add, int rows);

/* A microkernel, the CPU test it needs, and the blocking that suits it: op(a) panels of mr rows,
 * op(b) panels of nr columns, KC so that one kc×nr panel of b stays in L1, MC so that mc×kc of
 * a stays in L2. */
typedef struct { const char *name; int (*supported)(void); long mr, nr, kc, mc; ukernel_fn fn; ukernel_rows_fn rows_fn; } kernel_t;

/* c[6×16] (= or +=) Σ_p a[p]·b[p]: the portable kernel, which compilers vectorize for SSE. */
static void ukernel_generic(long kc, const float *restrict a, const float *restrict b, float *restrict c, long ldc, int add) {
  float acc[6][16] __attribute__((aligned(64)));
  memset(acc, 0, sizeof acc);
  for (long p = 0; p < kc; p++, a += 6, b += 16) {
    for (int r = 0; r < 6; r++) {
      const float x = a[r];
      for (int j = 0; j < 16; j++) acc[r][j] += x * b[j];
    }
  }
  for (int r = 0; r < 6; r++)
    for (int j = 0; j < 16; j++) c[r * ldc + j] = add ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

#if CR_X86
/*
 * The kernels fetch b one panel ahead into L2 (8192 floats: a 256×32 or 512×16 panel). A thin
 * product (a micro-batch of 32 rows) streams a packed weight from memory at 16 flops a byte,
 * and the hardware prefetcher alone left it waiting: measured, this brought 8 micro-batches of
 * 32 rows from 0.85× to 0.97× the time of one of 256 (cpu time, the wide MLP's products).
 * A prefetch changes no arithmetic.
 */
#define CR_PF_DIST 8192
#define CR_Y_PREFETCH_B _mm_prefetch((const char *)(b + CR_PF_DIST), _MM_HINT_T1);

/* 6×16 with AVX2/FMA: 12 ymm accumulators; per step 2 loads of b, 6 broadcasts of a, 12 FMAs. */
__attribute__((target("avx2,fma")))
static void ukernel_avx2(long kc, const float *a, const float *b, float *c, long ldc, int add) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  /* The rows of c are ldc apart (often 4 KiB or more): start fetching them now. */
  for (int r = 0; r < 6; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
  for (long p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    CR_Y_PREFETCH_B
    __m256 x;
    x = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
    x = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
    x = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
    x = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
    x = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    a += 6;
    b += 16;
  }
#define CR_STORE_ROW(r, lo, hi)                                           \
  do {                                                                    \
    float *row = c + (r) * ldc;                                           \
    if (add) {                                                            \
      lo = _mm256_add_ps(_mm256_loadu_ps(row), lo);                       \
      hi = _mm256_add_ps(_mm256_loadu_ps(row + 8), hi);                   \
    }                                                                     \
    _mm256_storeu_ps(row, lo);                                            \
    _mm256_storeu_ps(row + 8, hi);                                        \
  } while (0)
  CR_STORE_ROW(0, c00, c01);
  CR_STORE_ROW(1, c10, c11);
  CR_STORE_ROW(2, c20, c21);
  CR_STORE_ROW(3, c30, c31);
  CR_STORE_ROW(4, c40, c41);
  CR_STORE_ROW(5, c50, c51);
#undef CR_STORE_ROW
}

/* The first R rows of the 6×16 tile (R < 6), R a constant once inlined: accumulators stay in registers. */
__attribute__((target("avx2,fma"), always_inline))
static inline void avx2_rows(long kc, const float *a, const float *b, float *c, long ldc, int add, const int R) {
  __m256 lo[6], hi[6];
  for (int r = 0; r < R; r++) {
    lo[r] = _mm256_setzero_ps();
    hi[r] = _mm256_setzero_ps();
    _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
  }
  for (long p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    CR_Y_PREFETCH_B
    for (int r = 0; r < R; r++) {
      const __m256 x = _mm256_broadcast_ss(a + r);
      lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
    }
    a += 6;
    b += 16;
  }
  for (int r = 0; r < R; r++) {
    float *row = c + r * ldc;
    if (add) {
      lo[r] = _mm256_add_ps(_mm256_loadu_ps(row), lo[r]);
      hi[r] = _mm256_add_ps(_mm256_loadu_ps(row + 8), hi[r]);
    }
    _mm256_storeu_ps(row, lo[r]);
    _mm256_storeu_ps(row + 8, hi[r]);
  }
}

__attribute__((target("avx2,fma")))
static void ukernel_avx2_rows(long kc, const float *a, const float *b, float *c, long ldc, int add, int rows) {
  switch (rows) {
    case 1: avx2_rows(kc, a, b, c, ldc, add, 1); break;
    case 2: avx2_rows(kc, a, b, c, ldc, add, 2); break;
    case 3: avx2_rows(kc, a, b, c, ldc, add, 3); break;
    case 4: avx2_rows(kc, a, b, c, ldc, add, 4); break;
    default: avx2_rows(kc, a, b, c, ldc, add, 5); break;
  }
}

/* 12×32 with AVX-512: 24 zmm accumulators; per step 2 loads of b, 12 broadcasts, 24 FMAs. */
#define CR_Z_PREFETCH_B { _mm_prefetch((const char *)(b + CR_PF_DIST), _MM_HINT_T1); _mm_prefetch((const char *)(b + CR_PF_DIST + 16), _MM_HINT_T1); }
#define CR_Z_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps();
#define CR_Z_FMA(r)                                                        \
  {                                                                        \
    const __m512 x = _mm512_set1_ps(a[r]);                                 \
    c##r##0 = _mm512_fmadd_ps(x, b0, c##r##0);                             \
    c##r##1 = _mm512_fmadd_ps(x, b1, c##r##1);                             \
  }
#define CR_Z_STORE(r)                                                      \
  {                                                                        \
    float *row = c + (r) * ldc;                                            \
    if (add) {                                                             \
      c##r##0 = _mm512_add_ps(_mm512_loadu_ps(row), c##r##0);              \
      c##r##1 = _mm512_add_ps(_mm512_loadu_ps(row + 16), c##r##1);         \
    }                                                                      \
    _mm512_storeu_ps(row, c##r##0);                                        \
    _mm512_storeu_ps(row + 16, c##r##1);                                   \
  }
__attribute__((target("avx512f")))
static void ukernel_avx512(long kc, const float *a, const float *b, float *c, long ldc, int add) {
  CR_Z_DECL(0) CR_Z_DECL(1) CR_Z_DECL(2) CR_Z_DECL(3) CR_Z_DECL(4) CR_Z_DECL(5)
  CR_Z_DECL(6) CR_Z_DECL(7) CR_Z_DECL(8) CR_Z_DECL(9) CR_Z_DECL(10) CR_Z_DECL(11)
  for (int r = 0; r < 12; r++) {
    _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
  }
  for (long p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
    CR_Z_PREFETCH_B
    CR_Z_FMA(0) CR_Z_FMA(1) CR_Z_FMA(2) CR_Z_FMA(3) CR_Z_FMA(4) CR_Z_FMA(5)
    CR_Z_FMA(6) CR_Z_FMA(7) CR_Z_FMA(8) CR_Z_FMA(9) CR_Z_FMA(10) CR_Z_FMA(11)
    a += 12;
    b += 32;
  }
  CR_Z_STORE(0) CR_Z_STORE(1) CR_Z_STORE(2) CR_Z_STORE(3) CR_Z_STORE(4) CR_Z_STORE(5)
  CR_Z_STORE(6) CR_Z_STORE(7) CR_Z_STORE(8) CR_Z_STORE(9) CR_Z_STORE(10) CR_Z_STORE(11)
}
#undef CR_Z_DECL
#undef CR_Z_FMA
#undef CR_Z_STORE

/* The first R rows of the 12×32 tile (R < 12), R a constant once inlined. */
__attribute__((target("avx512f"), always_inline))
static inline void avx512_rows(long kc, const float *a, const float *b, float *c, long ldc, int add, const int R) {
  __m512 lo[12], hi[12];
  for (int r = 0; r < R; r++) {
    lo[r] = _mm512_setzero_ps();
    hi[r] = _mm512_setzero_ps();
    _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
  }
  for (long p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
    CR_Z_PREFETCH_B
    for (int r = 0; r < R; r++) {
      const __m512 x = _mm512_set1_ps(a[r]);
      lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
    }
    a += 12;
    b += 32;
  }
  for (int r = 0; r < R; r++) {
    float *row = c + r * ldc;
    if (add) {
      lo[r] = _mm512_add_ps(_mm512_loadu_ps(row), lo[r]);
      hi[r] = _mm512_add_ps(_mm512_loadu_ps(row + 16), hi[r]);
    }
    _mm512_storeu_ps(row, lo[r]);
    _mm512_storeu_ps(row + 16, hi[r]);
  }
}

__attribute__((target("avx512f")))
static void ukernel_avx512_rows(long kc, const float *a, const float *b, float *c, long ldc, int add, int rows) {
  switch (rows) {
    case 1: avx512_rows(kc, a, b, c, ldc, add, 1); break;
    case 2: avx512_rows(kc, a, b, c, ldc, add, 2); break;
    case 3: avx512_rows(kc, a, b, c, ldc, add, 3); break;
    case 4: avx512_rows(kc, a, b, c, ldc, add, 4); break;
    case 5: avx512_rows(kc, a, b, c, ldc, add, 5); break;
    case 6: avx512_rows(kc, a, b, c, ldc, add, 6); break;
    case 7: avx512_rows(kc, a, b, c, ldc, add, 7); break;
    case 8: avx512_rows(kc, a, b, c, ldc, add, 8); break;
    case 9: avx512_rows(kc, a, b, c, ldc, add, 9); break;
    case 10: avx512_rows(kc, a, b, c, ldc, add, 10); break;
    default: avx512_rows(kc, a, b, c, ldc, add, 11); break;
  }
}
#endif

static int always(void) { return 1; }

/* Fastest first. */
static const kernel_t kernels[] = {
#if CR_X86
  { "avx512", has_avx512, 12, 32, 256, 144, ukernel_avx512, ukernel_avx512_rows },
  { "avx2+fma", has_avx2_fma, 6, 16, 512, 144, ukernel_avx2, ukernel_avx2_rows },
#endif
  { "generic", always, 6, 16, 256, 144, ukernel_generic, NULL },
};
#define KERNEL_COUNT ((int)(sizeof kernels / sizeof kernels[0]))

/* The fastest kernel this CPU runs, unless cr_sgemm_use_kernel chose another. */
static const kernel_t *_Atomic current_kernel;

static const kernel_t *kernel_now(void) {
  const kernel_t *k = current_kernel;
  if (!k) {
    for (int i = 0; i < KERNEL_COUNT && !k; i++) if (kernels[i].supported()) k = &kernels[i];
    current_kernel = k;
  }
  return k;
}

const char *cr_sgemm_kernel(void) { return kernel_now()->name; }
long cr_sgemm_row_tile(void) { return kernel_now()->mr; }

int cr_sgemm_kernel_names(const char **names, int max) {
  int n = 0;
  for (int i = 0; i < KERNEL_COUNT && n < max; i++) if (kernels[i].supported()) names[n++] = kernels[i].name;
  return n;
}

int cr_sgemm_use_kernel(const char *name) {
  for (int i = 0; i < KERNEL_COUNT; i++) {
    if (strcmp(kernels[i].name, name) == 0 && kernels[i].supported()) {
      current_kernel = &kernels[i];
      return 1;
    }
  }
  return 0;
}

/* One kc×nc block of op(b), packed at pb, against rows r0 .. r1 of op(a) (m rows in all): c[r0 .. r1, j0 .. j0+nc] (+)= ... */
static void block_product(const kernel_t *ker, long m, long r0, long r1, long n, long k, const float *a, int trans_a, long p0, long kc,
                          long j0, long nc, const float *pb, float *c, int add) {
  const long MR = ker->mr, NR = ker->nr, MC = ker->mc;
  float *pa = reserve(&pack_a, &pack_a_floats, (size_t)MC * ker->kc);
  float edge[MAX_MR * MAX_NR] __attribute__((aligned(64)));
  for (long i0 = r0; i0 < r1; i0 += MC) {
    long mc = r1 - i0 < MC ? r1 - i0 : MC;
    pack_block_a(a, m, k, trans_a, i0, mc, p0, kc, pa, MR);
    for (long jr = 0; jr < nc; jr += NR) {
      long cols = nc - jr < NR ? nc - jr : NR;
      const float *bp = pb + jr * kc;
      for (long ir = 0; ir < mc; ir += MR) {
        long rows = mc - ir < MR ? mc - ir : MR;
        const float *ap = pa + ir * kc;
        float *ct = c + (i0 + ir) * n + j0 + jr;
        if (rows == MR && cols == NR) {
          ker->fn(kc, ap, bp, ct, n, add);
        } else if (cols == NR && ker->rows_fn) {
          ker->rows_fn(kc, ap, bp, ct, n, add, (int)rows);
        } else { /* an edge tile: compute the full tile aside, write back the part that exists */
          ker->fn(kc, ap, bp, edge, NR, 0);
          for (long r = 0; r < rows; r++)
            for (long j = 0; j < cols; j++)
              ct[r * n + j] = add ? ct[r * n + j] + edge[r * NR + j] : edge[r * NR + j];
        }
      }
    }
  }
}

static void zero_or_keep(long m, long n, float *c, int accumulate) {
  if (!accumulate) for (long i = 0; i < m * n; i++) c[i] = 0.0f;
}

/*
 * One product, or the part of it over columns c0 .. c1 and rows r0 .. r1 of c. Whatever the
 * part, each element of c gets the same chain: its kc-long dot products in the microkernel,
 * added block after block of KC in order; parts start on tile boundaries (c0 a multiple of NR,
 * r0 of MR), so a split product, on any number of threads, gives the unsplit one's bits.
 * `packed` is op(b)'s layout for later products (cr_sgemm_packing; NULL: the thread's buffer),
 * packed here when `pack`, else already there (cr_sgemm_packed).
 */
typedef struct {
  const kernel_t *ker;
  long m, n, k;
  const float *a, *b;
  float *c;
  int trans_a, trans_b, accumulate, pack, by_rows;
  float *packed;
} product_t;

static void product_part(const product_t *g, long c0, long c1, long r0, long r1) {
  const kernel_t *ker = g->ker;
  const long NR = ker->nr, KC = ker->kc, n = g->n, k = g->k;
  float *own = NULL;
  if (!g->packed) {
    long width = c1 - c0, nc_max = width < NC ? (width + NR - 1) / NR * NR : NC;
    own = reserve(&pack_b, &pack_b_floats, (size_t)KC * nc_max);
  }
  for (long j0 = 0; j0 < n; j0 += NC) {
    long nc = n - j0 < NC ? n - j0 : NC;
    long lo = j0 > c0 ? j0 : c0, hi = j0 + nc < c1 ? j0 + nc : c1;
    if (lo >= hi) continue;
    long ncr = (nc + NR - 1) / NR * NR;
    for (long p0 = 0; p0 < k; p0 += KC) {
      long kc = k - p0 < KC ? k - p0 : KC;
      /* Block (j0, p0) of a kept layout is at j0·k + p0·ncr; column lo's panel within it at (lo − j0)·kc. */
      float *pb = g->packed ? g->packed + j0 * k + p0 * ncr + (lo - j0) * kc : own;
      if (g->pack) pack_block_b(g->b, n, k, g->trans_b, p0, kc, lo, hi - lo, pb, NR);
      if (r1 > r0) block_product(ker, g->m, r0, r1, n, k, g->a, g->trans_a, p0, kc, lo, hi - lo, pb, g->c, g->accumulate || p0 > 0);
    }
  }
}

/* Part `part` of `parts`: an equal share of whole tiles, of columns (or rows when by_rows). */
static void run_part(void *arg, int part, int parts) {
  const product_t *g = arg;
  const long step = g->by_rows ? g->ker->mr : g->ker->nr, total = g->by_rows ? g->m : g->n;
  long share = ((total + step - 1) / step + parts - 1) / parts * step;
  long lo = part * share, hi = lo + share < total ? lo + share : total;
  if (lo >= total) return;
  if (g->by_rows) product_part(g, 0, g->n, lo, hi);
  else product_part(g, lo, hi, 0, g->m);
}

/* Below this many multiply-adds (~20 µs on one core) a helper's wake-up costs what it saves. */
#define SPLIT_MACS (2L << 20)

/* How many parts, and along which side: columns when there are tiles for every thread (each
 * packs only its columns of op(b)), else rows (each packs all of op(b)) unless only columns may be split. */
static int parts_of(product_t *g, int columns_only) {
  int t = cr_threads();
  if (t <= 1 || (double)g->m * g->n * g->k < (double)SPLIT_MACS) return 1;
  long col_tiles = (g->n + g->ker->nr - 1) / g->ker->nr, row_tiles = (g->m + g->ker->mr - 1) / g->ker->mr;
  g->by_rows = 0;
  if (col_tiles >= 2L * t || columns_only) return col_tiles < t ? (int)col_tiles : t;
  if (row_tiles > col_tiles) { g->by_rows = 1; return row_tiles < t ? (int)row_tiles : t; }
  return col_tiles < t ? (int)col_tiles : t;
}

static void run_product(product_t *g, int columns_only) {
  int parts = parts_of(g, columns_only);
  if (parts <= 1) product_part(g, 0, g->n, 0, g->m);
  else cr_run_parts(run_part, g, parts);
}

void cr_sgemm_block(long m, long n, long k, const float *a, const float *b, float *c,
                    int trans_a, int trans_b, int accumulate, long r0, long r1) {
  if (m <= 0 || n <= 0 || r0 >= r1) return;
  if (k <= 0) { if (!accumulate) for (long i = r0 * n; i < r1 * n; i++) c[i] = 0.0f; return; }
  product_t g = { kernel_now(), m, n, k, a, b, c, trans_a, trans_b, accumulate, 1, 0, NULL };
  product_part(&g, 0, n, r0, r1);
}

void cr_sgemm(long m, long n, long k, const float *a, const float *b, float *c,
              int trans_a, int trans_b, int accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) { zero_or_keep(m, n, c, accumulate); return; }
  product_t g = { kernel_now(), m, n, k, a, b, c, trans_a, trans_b, accumulate, 1, 0, NULL };
  run_product(&g, 0);
}

/*
 * op(b) packed once: every (j0, p0) block cr_sgemm would pack, in the order it packs them,
 * block (j0, p0) at j0·k + p0·round_up(nc, NR). Products against it run the same blocks
 * through the same kernel, so they give cr_sgemm's bits without packing b again.
 */
struct cr_packed_b { const kernel_t *ker; long n, k; size_t floats; float *data; };

static size_t packed_floats(const kernel_t *ker, long n, long k) {
  return (size_t)k * (size_t)((n + ker->nr - 1) / ker->nr * ker->nr);
}

cr_packed_b *cr_sgemm_packing(long m, long n, long k, const float *a, const float *b, float *c,
                              int trans_a, int trans_b, int accumulate, cr_packed_b *into) {
  const kernel_t *ker = kernel_now();
  size_t floats = packed_floats(ker, n > 0 ? n : 0, k > 0 ? k : 0);
  cr_packed_b *p = into;
  if (!p) {
    p = calloc(1, sizeof *p);
    if (!p) return NULL;
  }
  if (p->floats < floats || !p->data) {
    free(p->data);
    p->data = aligned(floats > 0 ? floats : 1);
    p->floats = p->data ? floats : 0;
    if (!p->data) {
      if (!into) free(p);
      return NULL;
    }
  }
  p->ker = ker;
  p->n = n;
  p->k = k;
  if (n <= 0) return p;
  if (k <= 0) { if (m > 0) zero_or_keep(m, n, c, accumulate); return p; }
  /* Each block is packed right before its product, while it is still in cache; split by
   * columns only, so each thread writes its own panels of the layout. */
  product_t g = { ker, m > 0 ? m : 0, n, k, a, b, c, trans_a, trans_b, accumulate, 1, 0, p->data };
  run_product(&g, 1);
  return p;
}

void cr_sgemm_packed_free(cr_packed_b *p) {
  if (!p) return;
  free(p->data);
  free(p);
}

size_t cr_sgemm_packed_bytes(const cr_packed_b *p) { return p ? p->floats * sizeof(float) : 0; }
long cr_sgemm_packed_n(const cr_packed_b *p) { return p->n; }
long cr_sgemm_packed_k(const cr_packed_b *p) { return p->k; }
const char *cr_sgemm_packed_kernel(const cr_packed_b *p) { return p->ker->name; }

void cr_sgemm_packed(long m, const float *a, int trans_a, const cr_packed_b *b, float *c, int accumulate) {
  const long n = b->n, k = b->k;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) { zero_or_keep(m, n, c, accumulate); return; }
  /* the layout's kernel, whichever is current now */
  product_t g = { b->ker, m, n, k, a, NULL, c, trans_a, 0, accumulate, 0, 0, b->data };
  run_product(&g, 0);
}
