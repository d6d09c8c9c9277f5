/*
 * chainrule's native kernels (float32 data). The N-API glue is in addon.c.
 *
 * Arithmetic outside sgemm follows the TypeScript reference kernels operation by operation
 * (in double where JavaScript computes in double, rounded to float32 where it stores), and
 * the build disables FMA contraction, so those kernels give the same bits as the reference.
 */
#ifndef CHAINRULE_KERNELS_H
#define CHAINRULE_KERNELS_H
#include <stddef.h>

/* c (m×n) = op(a)·op(b) (+ c when accumulate); op(a) m×k, op(b) k×n; see backend.ts. */
void cr_sgemm(long m, long n, long k, const float *a, const float *b, float *c,
              int trans_a, int trans_b, int accumulate);

/* cr_sgemm, keeping op(b) (k×n) packed in the current microkernel's layout for more products
 * against it (a weight over a step's micro-batches): `into` (or NULL) is an earlier pack whose
 * memory is reused. Returns the pack, NULL when out of memory. cr_sgemm_packed multiplies by a
 * pack with the kernel that made it; both give cr_sgemm's bits. */
typedef struct cr_packed_b cr_packed_b;
cr_packed_b *cr_sgemm_packing(long m, long n, long k, const float *a, const float *b, float *c,
                              int trans_a, int trans_b, int accumulate, cr_packed_b *into);
void cr_sgemm_packed(long m, const float *a, int trans_a, const cr_packed_b *b, float *c, int accumulate);
void cr_sgemm_packed_free(cr_packed_b *p);
size_t cr_sgemm_packed_bytes(const cr_packed_b *p);
long cr_sgemm_packed_n(const cr_packed_b *p);
long cr_sgemm_packed_k(const cr_packed_b *p);
const char *cr_sgemm_packed_kernel(const cr_packed_b *p);

/* The microkernel in use ("avx512", "avx2+fma" or "generic"), the ones this CPU runs (fastest
 * first), and a way to choose one (returns 0 when the CPU cannot run it): for tests and benchmarks. */
const char *cr_sgemm_kernel(void);
int cr_sgemm_kernel_names(const char **names, int max);
int cr_sgemm_use_kernel(const char *name);

/* Kernel threads (threads.c): products of the calling thread above a size are split among n
 * threads (1: not split); cr_run_parts runs fn(arg, part, parts) for every part, part 0 on the
 * caller, and returns the parts it used (1 inside another's parts). */
void cr_set_threads(int n);
int cr_threads(void);
typedef void (*cr_part_fn)(void *arg, int part, int parts);
int cr_run_parts(cr_part_fn fn, void *arg, int parts);
/* How many calls of cr_run_parts (in the whole process) ran on more than one thread. */
unsigned long cr_split_products(void);
/* Ends and frees the calling thread's helpers (when its JS environment ends). */
void cr_threads_release(void);

/* Frees this thread's packing buffers. */
void cr_sgemm_release(void);

enum cr_binary { CR_ADD, CR_SUB, CR_MUL, CR_DIV, CR_MAX, CR_MIN, CR_RELU_GRAD };
/* How an operand is indexed by the output's flat index i: full (i), scalar (0), row (i % inner). */
enum cr_mode { CR_FULL, CR_SCALAR, CR_ROW };
void cr_binary(int kind, const float *a, int a_mode, const float *b, int b_mode, float *out, long n, long inner);

/* neg, abs, relu and sqrt give the reference's bits; exp, log, sigmoid, tanh and softplus use the
 * same double formulas with the C library's exp/log/log1p/tanh, which can differ from V8's in the
 * last bit of the double (so, rarely, by one float32 ulp). */
enum cr_unary { CR_NEG, CR_ABS, CR_RELU, CR_SQRT, CR_EXP, CR_LOG, CR_SIGMOID, CR_TANH, CR_SOFTPLUS };
void cr_unary(int kind, const float *x, float *out, long n);

/* Sum of all of x (double accumulator, as the reference). */
float cr_sum_all(const float *x, long n);
/* out[j] = Σ_i x[i·cols + j] (float accumulation in row order, as the reference). */
void cr_sum_rows(const float *x, long rows, long cols, float *out);
/* out[i] = Σ_j x[i·cols + j] (double accumulator, as the reference). */
void cr_sum_cols(const float *x, long rows, long cols, float *out);
/* 1 when no element of x is NaN or ±Infinity, else 0. */
int cr_all_finite(const float *x, long n);

/* Optimizer updates, PyTorch's formulas as in src/optim; g is scaled by `scale` (rounded to float32) first. */
void cr_sgd(float *p, const float *g, long n, double scale, double lr, double wd);
void cr_momentum(float *p, const float *g, float *b, long n, double scale, double lr, double mu,
                 double dampening, double wd, int nesterov, int fresh);
void cr_adam(float *p, const float *g, float *m, float *v, float *vmax, long n, double scale,
             double step_size, double sqrt_bc2, double shrink, double l2, double b1, double b2, double eps);
/* Convolution geometry, in this order: n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw. */
typedef struct { long n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw; } cr_geometry;
/* Sample b of x [n, c, h, w] unfolded into colT [oh·ow, c·kh·kw]; padding reads as zero. */
void cr_im2col_t(const float *x, long b, const cr_geometry *g, float *col_t);
/* The adjoint: adds colT back into sample b of x, in the reference's order. */
void cr_col2im_t(const float *col_t, long b, const cr_geometry *g, float *x);
/* out[b][c][p] += bias[c] over [n, c, plane] (float adds), and its gradient:
 * db[c] += Σ_p g[b][c][p] summed in double per (b, c), samples in order, as the reference. */
void cr_channel_bias(float *out, const float *bias, long n, long c, long plane);
void cr_channel_bias_grad(const float *g, long n, long c, long plane, float *db);
/* gx[argmax[k]] += g[k] for k in order (max pooling's backward). */
void cr_max_pool_grad(const float *g, const int *argmax, long n, float *gx);
/* A convolution's products over the whole batch (o output channels; conv.ts's loops, split
 * among kernel threads): out [n, o, P] = W·colT_bᵀ per sample, with col [n, P, K] filled;
 * dx (zeroed) += the input gradient; dw [o, K] = Σ_b dY_b·colT_b (both: 0 when out of memory). */
void cr_conv_forward(const float *x, const float *w, float *out, float *col, const cr_geometry *g, long o);
int cr_conv_input_grad(const float *gy, const float *w, float *dx, const cr_geometry *g, long o);
int cr_conv_weight_grad(const float *gy, const float *col, float *dw, const cr_geometry *g, long o);
/* Rows of the microkernel's tile (a split of c's rows on multiples of it keeps sgemm's bits). */
long cr_sgemm_row_tile(void);
/* Rows r0 .. r1 of cr_sgemm's c only (r0 a multiple of cr_sgemm_row_tile()), on the calling thread. */
void cr_sgemm_block(long m, long n, long k, const float *a, const float *b, float *c,
                    int trans_a, int trans_b, int accumulate, long r0, long r1);
/* Max pooling (padding 0): out [n, c, oh, ow] and the flat index of each maximum (the first at ties). */
void cr_max_pool(const float *x, const cr_geometry *g, float *out, int *argmax);
#endif
