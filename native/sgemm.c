/*
 * Single-threaded sgemm in the Goto/BLIS layout: op(b) is packed into KC×NR column panels
 * (kept in L2/L3), op(a) into MC×KC row panels of MR rows (kept in L2), and a register-tiled
 * microkernel runs over the panels: 12×32 with AVX-512, 6×16 with AVX2/FMA, or a portable
 * 6×16, whichever is the fastest the CPU has at run time. Transposes are absorbed by packing.
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

/* Packs op(b)[p0 .. p0+kc, j0 .. j0+nc] as panels of NR columns: panel j, step p at [j·kc·NR + p·NR]. */
static void pack_block_b(const float *b, long n, long k, int trans_b, long p0, long kc, long j0, long nc, float *dst, const long NR) {
  for (long jr = 0; jr < nc; jr += NR) {
    long cols = nc - jr < NR ? nc - jr : NR;
    float *panel = dst + jr * kc;
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

/* A microkernel, the CPU test it needs, and the blocking that suits it: op(a) panels of mr rows,
 * op(b) panels of nr columns, KC so that one kc×nr panel of b stays in L1, MC so that mc×kc of
 * a stays in L2. */
typedef struct { const char *name; int (*supported)(void); long mr, nr, kc, mc; ukernel_fn fn; } kernel_t;

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
/* 6×16 with AVX2/FMA: 12 ymm accumulators; per step 2 loads of b, 6 broadcasts of a, 12 FMAs. */
__attribute__((target("avx2,fma")))
static void ukernel_avx2(long kc, const float *a, const float *b, float *c, long ldc, int add) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  /* The rows of c are ldc apart (often 4 KiB or more): start fetching them now. */
  for (int r = 0; r < 6; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
  for (long p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
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

/* 12×32 with AVX-512: 24 zmm accumulators; per step 2 loads of b, 12 broadcasts, 24 FMAs. */
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
#endif

static int always(void) { return 1; }

/* Fastest first. */
static const kernel_t kernels[] = {
#if CR_X86
  { "avx512", has_avx512, 12, 32, 256, 144, ukernel_avx512 },
  { "avx2+fma", has_avx2_fma, 6, 16, 512, 144, ukernel_avx2 },
#endif
  { "generic", always, 6, 16, 256, 144, ukernel_generic },
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

void cr_sgemm(long m, long n, long k, const float *a, const float *b, float *c,
              int trans_a, int trans_b, int accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate) for (long i = 0; i < m * n; i++) c[i] = 0.0f;
    return;
  }
  const kernel_t *ker = kernel_now();
  const long MR = ker->mr, NR = ker->nr, KC = ker->kc, MC = ker->mc;
  long nc_max = n < NC ? (n + NR - 1) / NR * NR : NC;
  float *pa = reserve(&pack_a, &pack_a_floats, (size_t)MC * KC);
  float *pb = reserve(&pack_b, &pack_b_floats, (size_t)KC * nc_max);
  float edge[MAX_MR * MAX_NR] __attribute__((aligned(64)));
  for (long j0 = 0; j0 < n; j0 += NC) {
    long nc = n - j0 < NC ? n - j0 : NC;
    for (long p0 = 0; p0 < k; p0 += KC) {
      long kc = k - p0 < KC ? k - p0 : KC;
      int add = accumulate || p0 > 0;
      pack_block_b(b, n, k, trans_b, p0, kc, j0, nc, pb, NR);
      for (long i0 = 0; i0 < m; i0 += MC) {
        long mc = m - i0 < MC ? m - i0 : MC;
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
  }
}
