/*
 * Element-wise kernels, reductions and optimizer updates. Each one repeats the TypeScript
 * reference's arithmetic in the same order and precision (double where JavaScript computes
 * in double, float32 where it stores); with FMA contraction off (binding.gyp) the results
 * are the reference's bits, which test/native.test.ts checks exactly.
 */
#include "kernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

/* AVX2 and AVX-512 copies of the streaming loops, picked at load time by the CPU (GCC's
 * function multiversioning). The same IEEE operations in wider registers: the bits do not change. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define CR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CR_CLONES
#endif

#define CR_INDEX(mode, i, inner) ((mode) == CR_FULL ? (i) : (mode) == CR_SCALAR ? 0 : (i) % (inner))

#define CR_BINARY_LOOP(expr)                                                   \
  do {                                                                         \
    if (a_mode == CR_FULL && b_mode == CR_FULL) {                              \
      for (long i = 0; i < n; i++) { float x = a[i], y = b[i]; out[i] = (expr); } \
    } else if (a_mode == CR_FULL && b_mode == CR_SCALAR) {                     \
      const float y = b[0];                                                    \
      for (long i = 0; i < n; i++) { float x = a[i]; out[i] = (expr); }       \
    } else if (a_mode == CR_FULL && b_mode == CR_ROW) {                        \
      for (long o = 0; o < n; o += inner)                                      \
        for (long j = 0; j < inner; j++) { float x = a[o + j], y = b[j]; out[o + j] = (expr); } \
    } else {                                                                   \
      for (long i = 0; i < n; i++) {                                           \
        float x = a[CR_INDEX(a_mode, i, inner)], y = b[CR_INDEX(b_mode, i, inner)]; \
        out[i] = (expr);                                                       \
      }                                                                        \
    }                                                                          \
  } while (0)

CR_CLONES void cr_binary(int kind, const float *a, int a_mode, const float *b, int b_mode, float *out, long n, long inner) {
  switch (kind) {
    case CR_ADD: CR_BINARY_LOOP(x + y); break;
    case CR_SUB: CR_BINARY_LOOP(x - y); break;
    case CR_MUL: CR_BINARY_LOOP(x * y); break;
    case CR_DIV: CR_BINARY_LOOP(x / y); break;
    case CR_MAX: CR_BINARY_LOOP(x >= y ? x : y); break;
    case CR_MIN: CR_BINARY_LOOP(x <= y ? x : y); break;
    case CR_RELU_GRAD: CR_BINARY_LOOP(y > 0.0f ? x : 0.0f); break;
  }
}

CR_CLONES void cr_unary(int kind, const float *x, float *out, long n) {
  switch (kind) {
    case CR_NEG: for (long i = 0; i < n; i++) out[i] = -x[i]; break;
    case CR_ABS: for (long i = 0; i < n; i++) out[i] = fabsf(x[i]); break;
    case CR_RELU: for (long i = 0; i < n; i++) { float v = x[i]; out[i] = v > 0.0f ? v : 0.0f; } break;
    /* float sqrt is correctly rounded, as is double sqrt rounded to float. */
    case CR_SQRT: for (long i = 0; i < n; i++) out[i] = sqrtf(x[i]); break;
    case CR_EXP: for (long i = 0; i < n; i++) out[i] = (float)exp((double)x[i]); break;
    case CR_LOG: for (long i = 0; i < n; i++) out[i] = (float)log((double)x[i]); break;
    case CR_SIGMOID:
      for (long i = 0; i < n; i++) {
        const double v = x[i];
        if (v >= 0) {
          out[i] = (float)(1 / (1 + exp(-v)));
        } else {
          const double e = exp(v);
          out[i] = (float)(e / (1 + e));
        }
      }
      break;
    case CR_TANH: for (long i = 0; i < n; i++) out[i] = (float)tanh((double)x[i]); break;
    case CR_SOFTPLUS: /* max(x, 0) + log1p(e^-|x|), with Math.max's NaN */
      for (long i = 0; i < n; i++) {
        const double v = x[i];
        const double m = isnan(v) ? v : (v > 0 ? v : 0.0);
        out[i] = (float)(m + log1p(exp(-fabs(v))));
      }
      break;
  }
}

/* NaN and ±Infinity are the floats whose exponent bits are all set. Integer tests, so the loop
 * vectorizes without reassociating any float arithmetic; memcpy reads the bits without aliasing. */
CR_CLONES int cr_all_finite(const float *x, long n) {
  uint32_t bad = 0;
  for (long i = 0; i < n; i++) {
    uint32_t v;
    memcpy(&v, x + i, sizeof v);
    bad |= (v & 0x7f800000u) == 0x7f800000u;
  }
  return bad == 0;
}

float cr_sum_all(const float *x, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) s += x[i];
  return (float)s;
}

CR_CLONES void cr_sum_rows(const float *x, long rows, long cols, float *out) {
  for (long j = 0; j < cols; j++) out[j] = 0.0f;
  for (long i = 0; i < rows; i++) {
    const float *row = x + i * cols;
    for (long j = 0; j < cols; j++) out[j] += row[j];
  }
}

void cr_sum_cols(const float *x, long rows, long cols, float *out) {
  for (long i = 0; i < rows; i++) {
    const float *row = x + i * cols;
    double s = 0;
    for (long j = 0; j < cols; j++) s += row[j];
    out[i] = (float)s;
  }
}

static inline double scaled(const float *g, long i, double scale) { return (float)((double)g[i] * scale); }

CR_CLONES static void sgd_loop(float *p, const float *g, long n, double scale, double lr, double wd) {
  for (long i = 0; i < n; i++) {
    double pi = p[i];
    p[i] = (float)(pi - lr * (scaled(g, i, scale) + wd * pi));
  }
}

CR_CLONES static void momentum_loop(float *p, const float *g, float *b, long n, double scale, double lr, double mu,
                 double dampening, double wd, int nesterov, int fresh) {
  const double keep = 1 - dampening;
  for (long i = 0; i < n; i++) {
    double pi = p[i];
    double gi = scaled(g, i, scale) + wd * pi;
    double bi = fresh ? gi : mu * (double)b[i] + keep * gi;
    b[i] = (float)bi;
    p[i] = (float)(pi - lr * (nesterov ? gi + mu * bi : bi));
  }
}

CR_CLONES static void adam_loop(float *p, const float *g, float *m, float *v, float *vmax, long n, double scale,
             double step_size, double sqrt_bc2, double shrink, double l2, double b1, double b2, double eps) {
  const double k1 = 1 - b1, k2 = 1 - b2;
  for (long i = 0; i < n; i++) {
    double p0 = p[i];
    double pi = p0 * shrink;
    double gi = scaled(g, i, scale) + l2 * p0;
    double mi = b1 * (double)m[i] + k1 * gi;
    double vi = b2 * (double)v[i] + k2 * gi * gi;
    m[i] = (float)mi;
    v[i] = (float)vi;
    if (vmax) { /* Math.max: NaN wins */
      double vm = vmax[i];
      vi = isnan(vm) || isnan(vi) ? NAN : (vm > vi ? vm : vi);
      vmax[i] = (float)vi;
    }
    p[i] = (float)(pi - step_size * mi / (sqrt(vi) / sqrt_bc2 + eps));
  }
}

/*
 * The optimizer updates, split among kernel threads for large parameters: each element's
 * update depends on that element alone, so any split gives the same bits. (Memory-bound: two
 * cores stream more than one.)
 */
typedef struct {
  int kind;
  float *p, *b, *m, *v, *vmax;
  const float *g;
  long n;
  double x[9];
  int i[2];
} update_job;

enum { UPDATE_SGD, UPDATE_MOMENTUM, UPDATE_ADAM };

/* Below this many parameters an update is not worth a helper's wake-up. */
#define SPLIT_UPDATE (1L << 18)

static void update_part(void *arg, int part, int parts) {
  const update_job *j = arg;
  /* Parts start on 64-byte lines, so no two threads write one. */
  long lo = j->n * part / parts / 16 * 16, hi = part + 1 == parts ? j->n : j->n * (part + 1) / parts / 16 * 16;
  long len = hi - lo;
  if (len <= 0) return;
  const double *x = j->x;
  switch (j->kind) {
    case UPDATE_SGD: sgd_loop(j->p + lo, j->g + lo, len, x[0], x[1], x[2]); break;
    case UPDATE_MOMENTUM: momentum_loop(j->p + lo, j->g + lo, j->b + lo, len, x[0], x[1], x[2], x[3], x[4], j->i[0], j->i[1]); break;
    default: adam_loop(j->p + lo, j->g + lo, j->m + lo, j->v + lo, j->vmax ? j->vmax + lo : NULL, len, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]); break;
  }
}

static void run_update(update_job *j) {
  int t = cr_threads();
  cr_run_parts(update_part, j, t > 1 && j->n >= SPLIT_UPDATE ? t : 1);
}

void cr_sgd(float *p, const float *g, long n, double scale, double lr, double wd) {
  update_job j = { UPDATE_SGD, p, NULL, NULL, NULL, NULL, g, n, { scale, lr, wd }, { 0, 0 } };
  run_update(&j);
}

void cr_momentum(float *p, const float *g, float *b, long n, double scale, double lr, double mu,
                 double dampening, double wd, int nesterov, int fresh) {
  update_job j = { UPDATE_MOMENTUM, p, b, NULL, NULL, NULL, g, n, { scale, lr, mu, dampening, wd }, { nesterov, fresh } };
  run_update(&j);
}

void cr_adam(float *p, const float *g, float *m, float *v, float *vmax, long n, double scale,
             double step_size, double sqrt_bc2, double shrink, double l2, double b1, double b2, double eps) {
  update_job j = { UPDATE_ADAM, p, NULL, m, v, vmax, g, n, { scale, step_size, sqrt_bc2, shrink, l2, b1, b2, eps }, { 0, 0 } };
  run_update(&j);
}
