/*
 * The data movement around convolution and pooling (src/autograd/ops/conv.ts): the same
 * loops in the same order, so the results are the reference's bits (col2im adds in float32
 * in the reference's order; the others only copy and compare).
 */
#include "kernels.h"

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
