/*
 * N-API bindings of the native kernels. Every array argument is a Float32Array read and
 * written in place (no copy); lengths are checked here too, so a wrong call throws a
 * RangeError naming the function instead of touching memory it does not own.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "kernels.h"

#define MAX_ARGS 16

typedef struct { napi_env env; napi_value argv[MAX_ARGS]; size_t argc; const char *fn; int failed; } call_t;

static int fail(call_t *c, const char *what) {
  if (!c->failed) {
    char msg[256];
    snprintf(msg, sizeof msg, "native %s: %s", c->fn, what);
    napi_throw_range_error(c->env, "ERR_CHAINRULE_NATIVE", msg);
  }
  c->failed = 1;
  return 0;
}

static int start(call_t *c, napi_env env, napi_callback_info info, const char *fn, size_t want) {
  c->env = env;
  c->fn = fn;
  c->failed = 0;
  c->argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &c->argc, c->argv, NULL, NULL) != napi_ok) return fail(c, "cannot read the arguments");
  if (c->argc < want) return fail(c, "too few arguments");
  return 1;
}

/*
 * Argument i as a typed array of type `want` with at least `need` elements, its length in
 * *len when len is not NULL. NULL without an error when `nullable` and null or undefined was
 * given. (napi_get_typedarray_info itself refuses a value that is not a typed array.)
 */
static void *typed(call_t *c, size_t i, napi_typedarray_type want, const char *what, size_t need, int nullable, size_t *len) {
  if (c->failed) return NULL;
  if (nullable) {
    napi_valuetype t;
    napi_typeof(c->env, c->argv[i], &t);
    if (t == napi_null || t == napi_undefined) return NULL;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(c->env, c->argv[i], &type, &length, &data, NULL, NULL) != napi_ok || type != want) {
    char msg[96];
    snprintf(msg, sizeof msg, "argument %zu must be a%s %s", i, what[0] == 'I' ? "n" : "", what);
    fail(c, msg);
    return NULL;
  }
  if (length < need) {
    char msg[128];
    snprintf(msg, sizeof msg, "argument %zu has %zu elements, needs at least %zu", i, length, need);
    fail(c, msg);
    return NULL;
  }
  if (len) *len = length;
  return data;
}

static float *f32(call_t *c, size_t i, size_t need, int nullable) {
  return (float *)typed(c, i, napi_float32_array, "Float32Array", need, nullable, NULL);
}

static int *i32(call_t *c, size_t i, size_t need, size_t *len) {
  return (int *)typed(c, i, napi_int32_array, "Int32Array", need, 0, len);
}

static double num(call_t *c, size_t i) {
  double v = 0;
  if (c->failed) return 0;
  if (napi_get_value_double(c->env, c->argv[i], &v) != napi_ok) {
    char msg[64];
    snprintf(msg, sizeof msg, "argument %zu must be a number", i);
    fail(c, msg);
  }
  return v;
}

static long count(call_t *c, size_t i) {
  double v = num(c, i);
  if (!c->failed && !(v >= 0 && v <= 9007199254740991.0 && v == (double)(long)v)) {
    char msg[80];
    snprintf(msg, sizeof msg, "argument %zu must be a non-negative integer, got %g", i, v);
    fail(c, msg);
  }
  return (long)v;
}

/* sgemm(a, b, c, m, n, k, transA, transB, accumulate) */
static napi_value js_sgemm(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "sgemm", 9)) return NULL;
  long m = count(&c, 3), n = count(&c, 4), k = count(&c, 5);
  int ta = num(&c, 6) != 0, tb = num(&c, 7) != 0, acc = num(&c, 8) != 0;
  const float *a = f32(&c, 0, (size_t)m * k, 0);
  const float *b = f32(&c, 1, (size_t)k * n, 0);
  float *out = f32(&c, 2, (size_t)m * n, 0);
  if (c.failed) return NULL;
  cr_sgemm(m, n, k, a, b, out, ta, tb, acc);
  return NULL;
}

/*
 * A packed op(b) travels to JavaScript as an external tagged with this (so no other
 * external is ever taken for one); the garbage collector frees it, and is told its size.
 */
static const napi_type_tag packed_tag = { 0x63686169726c7275ULL, 0x7061636b65646231ULL };

static void packed_finalize(napi_env env, void *data, void *hint) {
  int64_t adjusted;
  napi_adjust_external_memory(env, -(int64_t)cr_sgemm_packed_bytes((cr_packed_b *)data), &adjusted);
  cr_sgemm_packed_free((cr_packed_b *)data);
}

static cr_packed_b *packed_arg(call_t *c, size_t i, int nullable) {
  if (c->failed) return NULL;
  napi_valuetype t;
  napi_typeof(c->env, c->argv[i], &t);
  if (nullable && (t == napi_null || t == napi_undefined)) return NULL;
  bool ok = false;
  void *p = NULL;
  if (t != napi_external || napi_check_object_type_tag(c->env, c->argv[i], &packed_tag, &ok) != napi_ok || !ok ||
      napi_get_value_external(c->env, c->argv[i], &p) != napi_ok || !p) {
    char msg[80];
    snprintf(msg, sizeof msg, "argument %zu must be a pack from sgemmPacking", i);
    fail(c, msg);
    return NULL;
  }
  return (cr_packed_b *)p;
}

/* sgemmPacking(a, b, c, m, n, k, transA, transB, accumulate, into|null) → the pack of op(b); `into` (an earlier pack) is packed over in place and returned. */
static napi_value js_sgemm_packing(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "sgemmPacking", 10)) return NULL;
  long m = count(&c, 3), n = count(&c, 4), k = count(&c, 5);
  int ta = num(&c, 6) != 0, tb = num(&c, 7) != 0, acc = num(&c, 8) != 0;
  const float *a = f32(&c, 0, (size_t)m * k, 0);
  const float *b = f32(&c, 1, (size_t)k * n, 0);
  float *out = f32(&c, 2, (size_t)m * n, 0);
  cr_packed_b *into = packed_arg(&c, 9, 1);
  if (c.failed) return NULL;
  size_t before = cr_sgemm_packed_bytes(into);
  cr_packed_b *p = cr_sgemm_packing(m, n, k, a, b, out, ta, tb, acc, into);
  if (!p) { fail(&c, "out of memory"); return NULL; }
  int64_t adjusted;
  napi_adjust_external_memory(env, (int64_t)cr_sgemm_packed_bytes(p) - (int64_t)before, &adjusted);
  if (into) return c.argv[9];
  napi_value r;
  if (napi_create_external(env, p, packed_finalize, NULL, &r) != napi_ok || napi_type_tag_object(env, r, &packed_tag) != napi_ok) {
    packed_finalize(env, p, NULL);
    fail(&c, "cannot wrap the packed matrix");
    return NULL;
  }
  return r;
}

/* sgemmPacked(a, packed, c, m, transA, accumulate): c (m×n) (+)= op(a)·op(b), op(b) k×n from sgemmPacking. */
static napi_value js_sgemm_packed(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "sgemmPacked", 6)) return NULL;
  cr_packed_b *b = packed_arg(&c, 1, 0);
  long m = count(&c, 3);
  int ta = num(&c, 4) != 0, acc = num(&c, 5) != 0;
  if (c.failed) return NULL;
  long n = cr_sgemm_packed_n(b), k = cr_sgemm_packed_k(b);
  const float *a = f32(&c, 0, (size_t)m * k, 0);
  float *out = f32(&c, 2, (size_t)m * n, 0);
  if (c.failed) return NULL;
  cr_sgemm_packed(m, a, ta, b, out, acc);
  return NULL;
}

/* packedKernel(packed) → the microkernel whose layout it holds */
static napi_value js_packed_kernel(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "packedKernel", 1)) return NULL;
  cr_packed_b *b = packed_arg(&c, 0, 0);
  if (c.failed) return NULL;
  napi_value r;
  napi_create_string_utf8(env, cr_sgemm_packed_kernel(b), NAPI_AUTO_LENGTH, &r);
  return r;
}

static size_t operand_len(int mode, long n, long inner) { return mode == CR_FULL ? (size_t)n : mode == CR_SCALAR ? 1 : (size_t)inner; }

/* binary(kind, a, aMode, b, bMode, out, n, inner) */
static napi_value js_binary(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "binary", 8)) return NULL;
  int kind = (int)num(&c, 0), am = (int)num(&c, 2), bm = (int)num(&c, 4);
  long n = count(&c, 6), inner = count(&c, 7);
  if (c.failed) return NULL;
  if (kind < CR_ADD || kind > CR_RELU_GRAD || am < CR_FULL || am > CR_ROW || bm < CR_FULL || bm > CR_ROW) { fail(&c, "unknown kind or mode"); return NULL; }
  if ((am == CR_ROW || bm == CR_ROW) && (inner <= 0 || n % inner != 0)) { fail(&c, "row broadcast needs inner > 0 dividing n"); return NULL; }
  const float *a = f32(&c, 1, operand_len(am, n, inner), 0);
  const float *b = f32(&c, 3, operand_len(bm, n, inner), 0);
  float *out = f32(&c, 5, (size_t)n, 0);
  if (c.failed) return NULL;
  cr_binary(kind, a, am, b, bm, out, n, inner);
  return NULL;
}

/* unary(kind, x, out, n) */
static napi_value js_unary(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "unary", 4)) return NULL;
  int kind = (int)num(&c, 0);
  long n = count(&c, 3);
  const float *x = f32(&c, 1, (size_t)n, 0);
  float *out = f32(&c, 2, (size_t)n, 0);
  if (c.failed) return NULL;
  if (kind < CR_NEG || kind > CR_SOFTPLUS) { fail(&c, "unknown kind"); return NULL; }
  cr_unary(kind, x, out, n);
  return NULL;
}

/* sumRows(x, rows, cols, out): out[j] = Σ_i x[i][j]; sumCols: out[i] = Σ_j x[i][j]; sumAll(x, n) → number */
static napi_value js_sum_rows(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "sumRows", 4)) return NULL;
  long rows = count(&c, 1), cols = count(&c, 2);
  const float *x = f32(&c, 0, (size_t)rows * cols, 0);
  float *out = f32(&c, 3, (size_t)cols, 0);
  if (c.failed) return NULL;
  cr_sum_rows(x, rows, cols, out);
  return NULL;
}

static napi_value js_sum_cols(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "sumCols", 4)) return NULL;
  long rows = count(&c, 1), cols = count(&c, 2);
  const float *x = f32(&c, 0, (size_t)rows * cols, 0);
  float *out = f32(&c, 3, (size_t)rows, 0);
  if (c.failed) return NULL;
  cr_sum_cols(x, rows, cols, out);
  return NULL;
}

static napi_value js_all_finite(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "allFinite", 2)) return NULL;
  long n = count(&c, 1);
  const float *x = f32(&c, 0, (size_t)n, 0);
  if (c.failed) return NULL;
  napi_value r;
  napi_get_boolean(env, cr_all_finite(x, n) != 0, &r);
  return r;
}

static napi_value js_sum_all(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "sumAll", 2)) return NULL;
  long n = count(&c, 1);
  const float *x = f32(&c, 0, (size_t)n, 0);
  if (c.failed) return NULL;
  napi_value r;
  napi_create_double(env, cr_sum_all(x, n), &r);
  return r;
}

/* sgd(p, g, scale, lr, weightDecay) */
static napi_value js_sgd(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "sgd", 5)) return NULL;
  size_t n = 0;
  float *p = (float *)typed(&c, 0, napi_float32_array, "Float32Array", 0, 0, &n);
  const float *g = f32(&c, 1, n, 0);
  double scale = num(&c, 2), lr = num(&c, 3), wd = num(&c, 4);
  if (c.failed) return NULL;
  cr_sgd(p, g, (long)n, scale, lr, wd);
  return NULL;
}

/* momentum(p, g, b, scale, lr, mu, dampening, weightDecay, nesterov, fresh) */
static napi_value js_momentum(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "momentum", 10)) return NULL;
  size_t n = 0;
  float *p = (float *)typed(&c, 0, napi_float32_array, "Float32Array", 0, 0, &n);
  const float *g = f32(&c, 1, n, 0);
  float *b = f32(&c, 2, n, 0);
  double scale = num(&c, 3), lr = num(&c, 4), mu = num(&c, 5), damp = num(&c, 6), wd = num(&c, 7);
  int nesterov = num(&c, 8) != 0, fresh = num(&c, 9) != 0;
  if (c.failed) return NULL;
  cr_momentum(p, g, b, (long)n, scale, lr, mu, damp, wd, nesterov, fresh);
  return NULL;
}

/* adam(p, g, m, v, vmax|null, scale, stepSize, sqrtBc2, shrink, l2, beta1, beta2, eps) */
static napi_value js_adam(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "adam", 13)) return NULL;
  size_t n = 0;
  float *p = (float *)typed(&c, 0, napi_float32_array, "Float32Array", 0, 0, &n);
  const float *g = f32(&c, 1, n, 0);
  float *m = f32(&c, 2, n, 0);
  float *v = f32(&c, 3, n, 0);
  float *vmax = f32(&c, 4, n, 1);
  double scale = num(&c, 5), step = num(&c, 6), sbc2 = num(&c, 7), shrink = num(&c, 8), l2 = num(&c, 9);
  double b1 = num(&c, 10), b2 = num(&c, 11), eps = num(&c, 12);
  if (c.failed) return NULL;
  cr_adam(p, g, m, v, vmax, (long)n, scale, step, sbc2, shrink, l2, b1, b2, eps);
  return NULL;
}

/* kernel() → the sgemm microkernel in use; kernels() → those this CPU runs, fastest first */
static napi_value js_kernel(napi_env env, napi_callback_info info) {
  napi_value r;
  napi_create_string_utf8(env, cr_sgemm_kernel(), NAPI_AUTO_LENGTH, &r);
  return r;
}

static napi_value js_kernels(napi_env env, napi_callback_info info) {
  const char *names[8];
  int n = cr_sgemm_kernel_names(names, 8);
  napi_value arr;
  napi_create_array_with_length(env, (size_t)n, &arr);
  for (int i = 0; i < n; i++) {
    napi_value s;
    napi_create_string_utf8(env, names[i], NAPI_AUTO_LENGTH, &s);
    napi_set_element(env, arr, (uint32_t)i, s);
  }
  return arr;
}

/* useKernel(name): for tests and benchmarks; throws when this CPU cannot run it. */
static napi_value js_use_kernel(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "useKernel", 1)) return NULL;
  char name[32];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, c.argv[0], name, sizeof name, &len) != napi_ok) { fail(&c, "argument 0 must be a kernel name"); return NULL; }
  if (!cr_sgemm_use_kernel(name)) {
    char msg[96];
    snprintf(msg, sizeof msg, "kernel '%s' is unknown or this CPU cannot run it", name);
    fail(&c, msg);
  }
  return NULL;
}

/* setThreads(n): this JS thread's products above a size are split among n kernel threads; threads() → n */
static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "setThreads", 1)) return NULL;
  long n = count(&c, 0);
  if (c.failed) return NULL;
  if (n < 1 || n > 64) { fail(&c, "argument 0 must be a thread count from 1 to 64"); return NULL; }
  cr_set_threads((int)n);
  return NULL;
}

static napi_value js_threads(napi_env env, napi_callback_info info) {
  napi_value r;
  napi_create_int32(env, cr_threads(), &r);
  return r;
}

/* splitProducts() → how many products the process has split among kernel threads so far */
static napi_value js_split_products(napi_env env, napi_callback_info info) {
  napi_value r;
  napi_create_double(env, (double)cr_split_products(), &r);
  return r;
}

/* Argument i as a geometry: an Int32Array of 14 (n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw). */
static int geometry(call_t *c, size_t i, cr_geometry *g) {
  size_t length = 0;
  const int *v = i32(c, i, 14, &length);
  if (!v) return 0;
  if (length != 14) return fail(c, "the geometry must be an Int32Array of 14");
  long *f[14] = { &g->n, &g->c, &g->h, &g->w, &g->kh, &g->kw, &g->oh, &g->ow, &g->sh, &g->sw, &g->ph, &g->pw, &g->dh, &g->dw };
  for (int j = 0; j < 14; j++) {
    /* Only the batch (n) and the padding (ph, pw) may be 0. */
    if (v[j] < 0 || (v[j] == 0 && j != 0 && j != 10 && j != 11)) return fail(c, "the geometry holds a negative or zero size");
    *f[j] = v[j];
  }
  return 1;
}

/* im2colT(x, b, geometry, colT) and col2imT(colT, b, geometry, x) */
static napi_value js_im2col(napi_env env, napi_callback_info info) {
  call_t c;
  cr_geometry g;
  if (!start(&c, env, info, "im2colT", 4) || !geometry(&c, 2, &g)) return NULL;
  long b = count(&c, 1);
  if (!c.failed && b >= g.n) { fail(&c, "sample index out of range"); return NULL; }
  const float *x = f32(&c, 0, (size_t)(g.n * g.c * g.h * g.w), 0);
  float *col = f32(&c, 3, (size_t)(g.oh * g.ow * g.c * g.kh * g.kw), 0);
  if (c.failed) return NULL;
  cr_im2col_t(x, b, &g, col);
  return NULL;
}

static napi_value js_col2im(napi_env env, napi_callback_info info) {
  call_t c;
  cr_geometry g;
  if (!start(&c, env, info, "col2imT", 4) || !geometry(&c, 2, &g)) return NULL;
  long b = count(&c, 1);
  if (!c.failed && b >= g.n) { fail(&c, "sample index out of range"); return NULL; }
  const float *col = f32(&c, 0, (size_t)(g.oh * g.ow * g.c * g.kh * g.kw), 0);
  float *x = f32(&c, 3, (size_t)(g.n * g.c * g.h * g.w), 0);
  if (c.failed) return NULL;
  cr_col2im_t(col, b, &g, x);
  return NULL;
}

/*
 * A convolution's products over the batch (cr_conv_*), o output channels:
 * convForward(x, w, out, col, geometry, o); convInputGrad(gy, w, dx, geometry, o); convWeightGrad(gy, col, dw, geometry, o).
 */
static int conv_sizes(call_t *c, size_t at, cr_geometry *g, size_t *xs, size_t *ws, size_t *ys, size_t *cols, long *o) {
  if (!geometry(c, at, g)) return 0;
  *o = count(c, at + 1);
  if (c->failed) return 0;
  if (*o < 1) return fail(c, "the output channels must be positive");
  const size_t P = (size_t)(g->oh * g->ow), K = (size_t)(g->c * g->kh * g->kw);
  *xs = (size_t)(g->n * g->c * g->h * g->w);
  *ws = (size_t)*o * K;
  *ys = (size_t)g->n * (size_t)*o * P;
  *cols = (size_t)g->n * P * K;
  return 1;
}

static napi_value js_conv_forward(napi_env env, napi_callback_info info) {
  call_t c;
  cr_geometry g;
  size_t xs, ws, ys, cols;
  long o;
  if (!start(&c, env, info, "convForward", 6) || !conv_sizes(&c, 4, &g, &xs, &ws, &ys, &cols, &o)) return NULL;
  const float *x = f32(&c, 0, xs, 0), *w = f32(&c, 1, ws, 0);
  float *out = f32(&c, 2, ys, 0), *col = f32(&c, 3, cols, 0);
  if (c.failed) return NULL;
  cr_conv_forward(x, w, out, col, &g, o);
  return NULL;
}

static napi_value js_conv_input_grad(napi_env env, napi_callback_info info) {
  call_t c;
  cr_geometry g;
  size_t xs, ws, ys, cols;
  long o;
  if (!start(&c, env, info, "convInputGrad", 5) || !conv_sizes(&c, 3, &g, &xs, &ws, &ys, &cols, &o)) return NULL;
  const float *gy = f32(&c, 0, ys, 0), *w = f32(&c, 1, ws, 0);
  float *dx = f32(&c, 2, xs, 0);
  if (c.failed) return NULL;
  if (!cr_conv_input_grad(gy, w, dx, &g, o)) fail(&c, "out of memory for the input gradient's scratch");
  return NULL;
}

static napi_value js_conv_weight_grad(napi_env env, napi_callback_info info) {
  call_t c;
  cr_geometry g;
  size_t xs, ws, ys, cols;
  long o;
  if (!start(&c, env, info, "convWeightGrad", 5) || !conv_sizes(&c, 3, &g, &xs, &ws, &ys, &cols, &o)) return NULL;
  const float *gy = f32(&c, 0, ys, 0), *col = f32(&c, 1, cols, 0);
  float *dw = f32(&c, 2, ws, 0);
  if (c.failed) return NULL;
  if (!cr_conv_weight_grad(gy, col, dw, &g, o)) fail(&c, "out of memory for the weight gradient's scratch");
  return NULL;
}

/* maxPool(x, geometry, out, argmax) */
static napi_value js_max_pool(napi_env env, napi_callback_info info) {
  call_t c;
  cr_geometry g;
  if (!start(&c, env, info, "maxPool", 4) || !geometry(&c, 1, &g)) return NULL;
  if ((g.oh - 1) * g.sh + g.kh > g.h || (g.ow - 1) * g.sw + g.kw > g.w) { fail(&c, "the pooling windows leave the input"); return NULL; }
  const float *x = f32(&c, 0, (size_t)(g.n * g.c * g.h * g.w), 0);
  float *out = f32(&c, 2, (size_t)(g.n * g.c * g.oh * g.ow), 0);
  int *argmax = i32(&c, 3, (size_t)(g.n * g.c * g.oh * g.ow), NULL);
  if (c.failed) return NULL;
  cr_max_pool(x, &g, out, argmax);
  return NULL;
}

/* channelBias(out, bias, n, c, plane) and channelBiasGrad(g, n, c, plane, db) */
static napi_value js_channel_bias(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "channelBias", 5)) return NULL;
  long n = count(&c, 2), ch = count(&c, 3), plane = count(&c, 4);
  float *out = f32(&c, 0, (size_t)(n * ch * plane), 0);
  const float *bias = f32(&c, 1, (size_t)ch, 0);
  if (c.failed) return NULL;
  cr_channel_bias(out, bias, n, ch, plane);
  return NULL;
}

static napi_value js_channel_bias_grad(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "channelBiasGrad", 5)) return NULL;
  long n = count(&c, 1), ch = count(&c, 2), plane = count(&c, 3);
  const float *g = f32(&c, 0, (size_t)(n * ch * plane), 0);
  float *db = f32(&c, 4, (size_t)ch, 0);
  if (c.failed) return NULL;
  cr_channel_bias_grad(g, n, ch, plane, db);
  return NULL;
}

/* maxPoolGrad(g, argmax, gx): gx[argmax[k]] += g[k]; every index is checked against gx. */
static napi_value js_max_pool_grad(napi_env env, napi_callback_info info) {
  call_t c;
  if (!start(&c, env, info, "maxPoolGrad", 3)) return NULL;
  size_t n = 0, m = 0;
  const int *a = i32(&c, 1, 0, &n);
  const float *g = f32(&c, 0, n, 0);
  float *gx = (float *)typed(&c, 2, napi_float32_array, "Float32Array", 0, 0, &m);
  if (c.failed) return NULL;
  for (size_t k = 0; k < n; k++) if (a[k] < 0 || (size_t)a[k] >= m) { fail(&c, "an argmax index is outside the gradient"); return NULL; }
  cr_max_pool_grad(g, a, (long)n, gx);
  return NULL;
}

static void release(void *arg) {
  (void)arg;
  cr_sgemm_release();
  cr_threads_release();
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    { "sgemm", NULL, js_sgemm, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sgemmPacking", NULL, js_sgemm_packing, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sgemmPacked", NULL, js_sgemm_packed, NULL, NULL, NULL, napi_enumerable, NULL },
    { "packedKernel", NULL, js_packed_kernel, NULL, NULL, NULL, napi_enumerable, NULL },
    { "binary", NULL, js_binary, NULL, NULL, NULL, napi_enumerable, NULL },
    { "unary", NULL, js_unary, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sumAll", NULL, js_sum_all, NULL, NULL, NULL, napi_enumerable, NULL },
    { "allFinite", NULL, js_all_finite, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sumRows", NULL, js_sum_rows, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sumCols", NULL, js_sum_cols, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sgd", NULL, js_sgd, NULL, NULL, NULL, napi_enumerable, NULL },
    { "momentum", NULL, js_momentum, NULL, NULL, NULL, napi_enumerable, NULL },
    { "adam", NULL, js_adam, NULL, NULL, NULL, napi_enumerable, NULL },
    { "im2colT", NULL, js_im2col, NULL, NULL, NULL, napi_enumerable, NULL },
    { "col2imT", NULL, js_col2im, NULL, NULL, NULL, napi_enumerable, NULL },
    { "convForward", NULL, js_conv_forward, NULL, NULL, NULL, napi_enumerable, NULL },
    { "convInputGrad", NULL, js_conv_input_grad, NULL, NULL, NULL, napi_enumerable, NULL },
    { "convWeightGrad", NULL, js_conv_weight_grad, NULL, NULL, NULL, napi_enumerable, NULL },
    { "maxPool", NULL, js_max_pool, NULL, NULL, NULL, napi_enumerable, NULL },
    { "maxPoolGrad", NULL, js_max_pool_grad, NULL, NULL, NULL, napi_enumerable, NULL },
    { "channelBias", NULL, js_channel_bias, NULL, NULL, NULL, napi_enumerable, NULL },
    { "channelBiasGrad", NULL, js_channel_bias_grad, NULL, NULL, NULL, napi_enumerable, NULL },
    { "kernel", NULL, js_kernel, NULL, NULL, NULL, napi_enumerable, NULL },
    { "kernels", NULL, js_kernels, NULL, NULL, NULL, napi_enumerable, NULL },
    { "useKernel", NULL, js_use_kernel, NULL, NULL, NULL, napi_enumerable, NULL },
    { "setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_enumerable, NULL },
    { "threads", NULL, js_threads, NULL, NULL, NULL, napi_enumerable, NULL },
    { "splitProducts", NULL, js_split_products, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  /* Each worker thread has its own packing buffers: free them when its environment ends. */
  napi_add_env_cleanup_hook(env, release, NULL);
  return exports;
}
