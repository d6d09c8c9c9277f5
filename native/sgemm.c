/*
 * Single-threaded sgemm in the Goto/BLIS layout: op(b) is packed into KC×NR column panels
 * (kept in L2/L3), op(a) into MC×KC row panels of MR rows (kept in L2), and a 6×16
 * register-tiled AVX2/FMA microkernel (12 ymm accumulators, 2 loads and 6 broadcasts per
 * 12 FMAs) runs over the panels. Transposes are absorbed by packing. Without AVX2/FMA (at
 * run time), a portable kernel runs over the same packed layout.
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

#define MR 6
#define NR 16
#ifndef KC
#define KC 512
#endif
#ifndef MC
#define MC 144 /* 24 panels of MR rows: 288 KiB of packed a per KC block, within L2 */
#endif
#ifndef NC
#define NC 3072
#endif

static _Thread_local float *pack_a, *pack_b;
static _Thread_local size_t pack_b_floats;

void cr_sgemm_release(void) {
  free(pack_a);
  free(pack_b);
  pack_a = pack_b = NULL;
  pack_b_floats = 0;
}

static void *aligned(size_t floats) {
  size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
  return aligned_alloc(64, bytes);
}

int cr_has_avx2_fma(void) {
#if CR_X86 && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

/* Packs op(a)[i0 .. i0+mc, p0 .. p0+kc] as panels of MR rows: panel r, step p at [r·kc·MR + p·MR]. */
static void pack_block_a(const float *a, long m, long k, int trans_a, long i0, long mc, long p0, long kc, float *dst) {
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
static void pack_block_b(const float *b, long n, long k, int trans_b, long p0, long kc, long j0, long nc, float *dst) {
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
          memcpy(panel + p * NR, src, NR * sizeof(float));
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

/* c[MR×NR] (= or +=) Σ_p a[p]·b[p]: the portable kernel, which compilers vectorize for SSE. */
static void ukernel_generic(long kc, const float *a, const float *b, float *c, long ldc, int add) {
  float acc[MR][NR];
  memset(acc, 0, sizeof acc);
  for (long p = 0; p < kc; p++) {
    for (int r = 0; r < MR; r++) {
      float x = a[p * MR + r];
      for (int j = 0; j < NR; j++) acc[r][j] += x * b[p * NR + j];
    }
  }
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < NR; j++) c[r * ldc + j] = add ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

#if CR_X86
__attribute__((target("avx2,fma")))
static void ukernel_avx2(long kc, const float *a, const float *b, float *c, long ldc, int add) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  /* The six rows of c are ldc apart (often 4 KiB or more): start fetching them now. */
  for (int r = 0; r < MR; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
  for (long p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 x;
    x = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
    x = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
    x = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
    x = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
    x = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    a += MR;
    b += NR;
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
#endif

static ukernel_fn chosen_kernel(void) {
  static int checked = 0;
  static ukernel_fn fn = ukernel_generic;
  if (!checked) {
#if CR_X86
    if (cr_has_avx2_fma()) fn = ukernel_avx2;
#endif
    checked = 1;
  }
  return fn;
}

void cr_sgemm(long m, long n, long k, const float *a, const float *b, float *c,
              int trans_a, int trans_b, int accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate) for (long i = 0; i < m * n; i++) c[i] = 0.0f;
    return;
  }
  ukernel_fn kernel = chosen_kernel();
  if (!pack_a) pack_a = aligned((size_t)MC * KC);
  long nc_max = n < NC ? (n + NR - 1) / NR * NR : NC;
  if ((size_t)(KC * nc_max) > pack_b_floats) {
    free(pack_b);
    pack_b_floats = (size_t)KC * nc_max;
    pack_b = aligned(pack_b_floats);
  }
  float edge[MR * NR] __attribute__((aligned(64)));
  for (long j0 = 0; j0 < n; j0 += NC) {
    long nc = n - j0 < NC ? n - j0 : NC;
    for (long p0 = 0; p0 < k; p0 += KC) {
      long kc = k - p0 < KC ? k - p0 : KC;
      int add = accumulate || p0 > 0;
      pack_block_b(b, n, k, trans_b, p0, kc, j0, nc, pack_b);
      for (long i0 = 0; i0 < m; i0 += MC) {
        long mc = m - i0 < MC ? m - i0 : MC;
        pack_block_a(a, m, k, trans_a, i0, mc, p0, kc, pack_a);
        for (long jr = 0; jr < nc; jr += NR) {
          long cols = nc - jr < NR ? nc - jr : NR;
          const float *bp = pack_b + jr * kc;
          for (long ir = 0; ir < mc; ir += MR) {
            long rows = mc - ir < MR ? mc - ir : MR;
            const float *ap = pack_a + ir * kc;
            float *ct = c + (i0 + ir) * n + j0 + jr;
            if (rows == MR && cols == NR) {
              kernel(kc, ap, bp, ct, n, add);
            } else { /* an edge tile: compute the full tile aside, write back the part that exists */
              kernel(kc, ap, bp, edge, NR, 0);
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
