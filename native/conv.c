/*
 * The data movement around convolution and pooling (src/autograd/ops/conv.ts): the same
 * loops in the same order, so the results are the reference's bits (col2im adds in float32
 * in the reference's order; the others only copy and compare).
 */
#include "kernels.h"
#include <stdlib.h>

/* Written one output row (pixel) at a time, so the stores are contiguous; a pure copy, so the
 * order does not change the bits. */
void cr_im2col_t(const float *x, long b, const cr_geometry *g, float *col_t) {
  float *o = col_t;
  for (long oy = 0; oy < g->oh; oy++) {
    for (long ox = 0; ox < g->ow; ox++) {
      for (long ci = 0; ci < g->c; ci++) {
        const float *plane = x + (b * g->c + ci) * g->h * g->w;
        for (long ki = 0; ki < g->kh; ki++) {
          const long iy = oy * g->sh + ki * g->dh - g->ph;
          if (iy < 0 || iy >= g->h) {
            for (long kj = 0; kj < g->kw; kj++) *o++ = 0.0f;
            continue;
          }
          const float *row = plane + iy * g->w;
          for (long kj = 0; kj < g->kw; kj++) {
            const long ix = ox * g->sw + kj * g->dw - g->pw;
            *o++ = ix >= 0 && ix < g->w ? row[ix] : 0.0f;
          }
        }
      }
    }
  }
}

void cr_col2im_t(const float *col_t, long b, const cr_geometry *g, float *x) {
  const long K = g->c * g->kh * g->kw;
  long r = 0;
  for (long ci = 0; ci < g->c; ci++) {
    float *plane = x + (b * g->c + ci) * g->h * g->w;
    for (long ki = 0; ki < g->kh; ki++) {
      for (long kj = 0; kj < g->kw; kj++, r++) {
        const long dx = kj * g->dw - g->pw;
        for (long oy = 0; oy < g->oh; oy++) {
          const long iy = oy * g->sh + ki * g->dh - g->ph;
          if (iy < 0 || iy >= g->h) continue;
          float *row = plane + iy * g->w;
          const float *o = col_t + oy * g->ow * K + r;
          for (long ox = 0; ox < g->ow; ox++, o += K) {
            const long ix = ox * g->sw + dx;
            if (ix >= 0 && ix < g->w) row[ix] += *o;
          }
        }
      }
    }
  }
}

void cr_max_pool(const float *x, const cr_geometry *g, float *out, int *argmax) {
  long k = 0;
  for (long plane = 0; plane < g->n * g->c; plane++) {
    const long base = plane * g->h * g->w;
    for (long oy = 0; oy < g->oh; oy++) {
      for (long ox = 0; ox < g->ow; ox++, k++) {
        long best = base + oy * g->sh * g->w + ox * g->sw;
        float m = x[best];
        for (long i = 0; i < g->kh; i++) {
          const long row = base + (oy * g->sh + i) * g->w + ox * g->sw;
          for (long j = 0; j < g->kw; j++) {
            const float v = x[row + j];
            if (v > m) { m = v; best = row + j; } /* strict: a tie keeps the first */
          }
        }
        out[k] = m;
        argmax[k] = (int)best;
      }
    }
  }
}

void cr_channel_bias(float *out, const float *bias, long n, long c, long plane) {
  for (long b = 0; b < n; b++)
    for (long oc = 0; oc < c; oc++) {
      const float v = bias[oc];
      float *o = out + (b * c + oc) * plane;
      for (long i = 0; i < plane; i++) o[i] += v;
    }
}

void cr_channel_bias_grad(const float *g, long n, long c, long plane, float *db) {
  for (long b = 0; b < n; b++)
    for (long oc = 0; oc < c; oc++) {
      const float *x = g + (b * c + oc) * plane;
      double s = 0;
      for (long i = 0; i < plane; i++) s += x[i];
      db[oc] = (float)((double)db[oc] + s);
    }
}

void cr_max_pool_grad(const float *g, const int *argmax, long n, float *gx) {
  for (long k = 0; k < n; k++) gx[argmax[k]] += g[k];
}

/*
 * The whole batch of a convolution's products, the same kernels in the same order as
 * conv.ts's per-sample loops (so the same bits), in one call; with kernel threads
 * (threads.c), split among them: the forward and the input gradient by samples (each
 * sample's are its own), the weight gradient by rows of dW on the microkernel's tiles (each
 * thread sums its rows over every sample in order, as one thread would).
 */
typedef struct {
  const cr_geometry *g;
  long o;
  const float *x, *w, *gy, *col;
  float *out, *dx, *dw;
  /* What a pass writes besides its result: the forward's col, the input gradient's dcolT per
   * part, the weight gradient's dWᵀ (NULL: dW is written directly). */
  float *work;
} conv_batch;

#define P_OF(g) ((g)->oh * (g)->ow)
#define K_OF(g) ((g)->c * (g)->kh * (g)->kw)

/* Parts worth splitting n items (samples, row tiles) into, for a batch of `macs` multiply-adds. */
static int batch_parts(long items, double macs) {
  int t = cr_threads();
  if (t <= 1 || macs < (double)(2L << 20)) return 1;
  return items < t ? (int)items : t;
}

static void forward_part(void *arg, int part, int parts) {
  const conv_batch *j = arg;
  const cr_geometry *g = j->g;
  const long P = P_OF(g), K = K_OF(g);
  for (long b = g->n * part / parts; b < g->n * (part + 1) / parts; b++) {
    float *cb = j->work + b * P * K;
    cr_im2col_t(j->x, b, g, cb);
    cr_sgemm(j->o, P, K, j->w, cb, j->out + b * j->o * P, 0, 1, 0);
  }
}

void cr_conv_forward(const float *x, const float *w, float *out, float *col, const cr_geometry *g, long o) {
  conv_batch j = { .g = g, .o = o, .x = x, .w = w, .out = out, .work = col };
  cr_run_parts(forward_part, &j, batch_parts(g->n, (double)g->n * o * P_OF(g) * K_OF(g)));
}

static void input_grad_part(void *arg, int part, int parts) {
  const conv_batch *j = arg;
  const cr_geometry *g = j->g;
  const long P = P_OF(g), K = K_OF(g);
  /* Each part's own dcolT (one per part in work), as conv.ts uses one for its loop. */
  float *dcol_t = j->work + part * P * K;
  for (long b = g->n * part / parts; b < g->n * (part + 1) / parts; b++) {
    cr_sgemm(P, K, j->o, j->gy + b * j->o * P, j->w, dcol_t, 1, 0, 0);
    cr_col2im_t(dcol_t, b, g, j->dx);
  }
}

int cr_conv_input_grad(const float *gy, const float *w, float *dx, const cr_geometry *g, long o) {
  const int parts = batch_parts(g->n, (double)g->n * o * P_OF(g) * K_OF(g));
  /* The scratch of every part, taken before any starts: nothing fails half way. */
  float *scratch = malloc((size_t)parts * (size_t)(P_OF(g) * K_OF(g) > 0 ? P_OF(g) * K_OF(g) : 1) * sizeof(float));
  if (!scratch) return 0;
  conv_batch j = { .g = g, .o = o, .w = w, .gy = gy, .dx = dx, .work = scratch };
  /* (The pool may be busy: then part 0 of 1 runs everything, with the first scratch.) */
  cr_run_parts(input_grad_part, &j, parts);
  free(scratch);
  return 1;
}

/*
 * dW [o, K] = Σ_b dY_b [o, P] · colT_b [P, K], or its transpose dWᵀ [K, o] = Σ_b colT_bᵀ · dY_bᵀ
 * when K has more row tiles to share than o (into work, transposed back after): each
 * element is the same chain of multiply-adds over p either way (a·b = b·a exactly), so the
 * bits are the same. `dw` here is where the parts write (dW, or dWᵀ).
 */
static void weight_grad_part(void *arg, int part, int parts) {
  const conv_batch *j = arg;
  const cr_geometry *g = j->g;
  const long P = P_OF(g), K = K_OF(g), MR = cr_sgemm_row_tile();
  const int transposed = j->work != NULL;
  const long rows = transposed ? K : j->o;
  const long share = ((rows + MR - 1) / MR + parts - 1) / parts * MR;
  const long r0 = part * share, r1 = r0 + share < rows ? r0 + share : rows;
  for (long b = 0; b < g->n; b++) {
    const float *gyb = j->gy + b * j->o * P, *colb = j->col + b * P * K;
    if (transposed) cr_sgemm_block(K, j->o, P, colb, gyb, j->work, 1, 1, b > 0, r0, r1);
    else cr_sgemm_block(j->o, K, P, gyb, colb, j->dw, 0, 0, b > 0, r0, r1);
  }
}

int cr_conv_weight_grad(const float *gy, const float *col, float *dw, const cr_geometry *g, long o) {
  const long MR = cr_sgemm_row_tile(), K = K_OF(g);
  const int parts = batch_parts(o > K ? (o + MR - 1) / MR : (K + MR - 1) / MR, (double)g->n * o * P_OF(g) * K);
  const int transposed = parts > 1 && (K + MR - 1) / MR > (o + MR - 1) / MR;
  float *dw_t = transposed ? malloc((size_t)K * (size_t)o * sizeof(float)) : NULL;
  if (transposed && !dw_t) return 0;
  conv_batch j = { .g = g, .o = o, .gy = gy, .col = col, .dw = dw, .work = dw_t };
  /* (With the pool busy, part 0 of 1 computes all of it: the same rows in one part.) */
  cr_run_parts(weight_grad_part, &j, parts);
  if (transposed) {
    for (long i = 0; i < o; i++)
      for (long k = 0; k < K; k++) dw[i * K + k] = dw_t[k * o + i];
    free(dw_t);
  }
  return 1;
}
