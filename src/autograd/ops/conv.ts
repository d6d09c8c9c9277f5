/**
 * Convolution and pooling over NCHW batches.
 *
 * conv2d is lowered onto the backend's matmul (im2col). Each sample's receptive fields are
 * unfolded into one contiguous block colT_b [oh·ow, c·kh·kw] (kept for the backward), and
 *   forward  Y_bᵀ  [oh·ow, o]      = colT_b · Wᵀ        (transB; W is [o, c·kh·kw])
 *   dW       Σ_b dY_b · colT_b      [o, c·kh·kw]        (accumulated in sample order)
 *   dX       dcolT_b = dY_bᵀ · W    (transA), folded back into dX_b by col2im
 * The operand likely to hold zeros (ReLU'd patches, pooled gradients) is the left one,
 * whose zero entries the js kernel skips; measured on the built-in CNN this orientation
 * is ~1.8× faster with the js backend than W · col, and no slower with wasm.
 */
import { Tensor, allocate, allocateIndices, allocateOutput, fmtShape, type Data } from '../../tensor/tensor.js';
import { backend, jsBackend, type Backend, type ConvGeometry, type ConvKernels } from '../../tensor/backend.js';
import { ShapeError } from '../../tensor/functional.js';
import { defineOp } from '../registry.js';

/** [height, width] pair. */
export type Pair2d = [number, number];

export interface Conv2dAttrs { stride: Pair2d; padding: Pair2d; dilation: Pair2d }

export interface Conv2dOptions {
  stride?: number | Pair2d;
  padding?: number | Pair2d;
  dilation?: number | Pair2d;
}

export interface Pool2dAttrs { kernel: Pair2d; stride: Pair2d }

const pair = (v: number | Pair2d): Pair2d => (typeof v === 'number' ? [v, v] : [v[0], v[1]]);

const be = (t: Tensor): Backend => (t.dtype === 'float64' ? jsBackend : backend());

/** Output length along one axis: ⌊(in + 2p − d(k−1) − 1)/s⌋ + 1. */
export function convOutSize(size: number, kernel: number, stride: number, padding: number, dilation: number): number {
  return Math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1;
}

type Geometry = ConvGeometry;

/** The backend's conv kernels when the data is float32 (they must give these loops' bits). */
const convKernels = (t: Tensor): ConvKernels | null => (t.dtype === 'float32' ? backend().conv ?? null : null);

function geometry(op: string, x: Tensor, kh: number, kw: number, a: Conv2dAttrs): Geometry {
  if (x.rank !== 4) throw new ShapeError(`${op}: expected input [batch, channels, height, width], got ${fmtShape(x.shape)}`);
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [sh, sw] = a.stride;
  const [ph, pw] = a.padding;
  const [dh, dw] = a.dilation;
  const oh = convOutSize(h, kh, sh, ph, dh);
  const ow = convOutSize(w, kw, sw, pw, dw);
  if (oh <= 0 || ow <= 0) {
    throw new ShapeError(`${op}: a ${kh}×${kw} kernel (stride ${sh}×${sw}, padding ${ph}×${pw}, dilation ${dh}×${dw}) does not fit input ${fmtShape(x.shape)}`);
  }
  return { n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw };
}

/**
 * Unfolds sample b of x [n, c, h, w] into colT [oh·ow, c·kh·kw]: one row per output pixel
 * (oy, ox), holding its receptive field (ci, ki, kj); padding reads as zero.
 */
function im2colT(x: Data, b: number, g: Geometry, colT: Data): void {
  const { c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw } = g;
  const K = c * kh * kw;
  let r = 0;
  for (let ci = 0; ci < c; ci++) {
    const plane = (b * c + ci) * h * w;
    for (let ki = 0; ki < kh; ki++) {
      for (let kj = 0; kj < kw; kj++, r++) {
        const dx = kj * dw - pw;
        for (let oy = 0; oy < oh; oy++) {
          const iy = oy * sh + ki * dh - ph;
          let o = oy * ow * K + r;
          if (iy < 0 || iy >= h) { for (let ox = 0; ox < ow; ox++, o += K) colT[o] = 0; continue; }
          const row = plane + iy * w;
          for (let ox = 0; ox < ow; ox++, o += K) {
            const ix = ox * sw + dx;
            colT[o] = ix >= 0 && ix < w ? x[row + ix]! : 0;
          }
        }
      }
    }
  }
}

/** The adjoint of im2colT: adds every entry of colT [oh·ow, c·kh·kw] back into its pixel of sample b. */
function col2imT(colT: Data, b: number, g: Geometry, x: Data): void {
  const { c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw } = g;
  const K = c * kh * kw;
  let r = 0;
  for (let ci = 0; ci < c; ci++) {
    const plane = (b * c + ci) * h * w;
    for (let ki = 0; ki < kh; ki++) {
      for (let kj = 0; kj < kw; kj++, r++) {
        const dx = kj * dw - pw;
        for (let oy = 0; oy < oh; oy++) {
          const iy = oy * sh + ki * dh - ph;
          if (iy < 0 || iy >= h) continue;
          const row = plane + iy * w;
          let o = oy * ow * K + r;
          for (let ox = 0; ox < ow; ox++, o += K) {
            const ix = ox * sw + dx;
            if (ix >= 0 && ix < w) x[row + ix] = x[row + ix]! + colT[o]!;
          }
        }
      }
    }
  }
}

/** out[off + j·r + i] = a[i·c + j]: an r×c matrix written transposed. */
function transposeInto(a: Data, r: number, c: number, out: Data, off: number): void {
  for (let i = 0; i < r; i++) {
    const row = i * c;
    for (let j = 0; j < c; j++) out[off + j * r + i] = a[row + j]!;
  }
}

interface ConvSaved { col: Data; g: Geometry }

const conv2dOp = defineOp<Conv2dAttrs, ConvSaved>({
  name: 'conv2d',
  forward: ([x, w, bias], attrs) => {
    if (w!.rank !== 4) throw new ShapeError(`conv2d: weight must be [out, in, kh, kw], got ${fmtShape(w!.shape)}`);
    const [o, cw, kh, kw] = w!.shape as [number, number, number, number];
    const g = geometry('conv2d', x!, kh, kw, attrs);
    if (cw !== g.c) throw new ShapeError(`conv2d: input has ${g.c} channels but the weight ${fmtShape(w!.shape)} expects ${cw}`);
    if (bias && (bias.rank !== 1 || bias.shape[0] !== o)) throw new ShapeError(`conv2d: bias must be [${o}], got ${fmtShape(bias.shape)}`);
    if (x!.dtype !== w!.dtype || (bias && bias.dtype !== x!.dtype)) {
      throw new TypeError(`conv2d: dtypes differ (input ${x!.dtype}, weight ${w!.dtype}${bias ? `, bias ${bias.dtype}` : ''}); convert with .to()`);
    }
    const K = g.c * kh * kw;
    const P = g.oh * g.ow;
    const k = be(x!);
    const fast = convKernels(x!);
    // One contiguous [P, K] block per sample, kept for the weight gradient.
    const col = allocate(x!.dtype, g.n * P * K);
    // Written in full by the products below (K ≥ 1).
    const out = allocateOutput(x!.dtype, g.n * o * P);
    if (fast?.forward) {
      // The loop below in one call (split among kernel threads by samples).
      fast.forward(x!.data as Float32Array, w!.data as Float32Array, out as Float32Array, col as Float32Array, g, o);
      if (bias) fast.channelBias(out as Float32Array, bias.data as Float32Array, g.n, o, P);
      return { out: new Tensor(out, [g.n, o, g.oh, g.ow]), saved: { col, g } };
    }
    if (fast) {
      // Backends with conv kernels: Y_b [o, P] = W · colT_bᵀ straight into the output (no transpose).
      for (let b = 0; b < g.n; b++) {
        const cb = col.subarray(b * P * K, (b + 1) * P * K) as Float32Array;
        fast.im2colT(x!.data as Float32Array, b, g, cb);
        k.matmul(w!.data, cb, out.subarray(b * o * P, (b + 1) * o * P), o, P, K, false, true, false);
      }
      if (bias) fast.channelBias(out as Float32Array, bias.data as Float32Array, g.n, o, P);
      return { out: new Tensor(out, [g.n, o, g.oh, g.ow]), saved: { col, g } };
    }
    const yT = allocate(x!.dtype, P * o);
    for (let b = 0; b < g.n; b++) {
      const cb = col.subarray(b * P * K, (b + 1) * P * K);
      im2colT(x!.data, b, g, cb);
      // Y_bᵀ [P, o] = colT_b · Wᵀ: the patches (often zero after ReLU) lead.
      k.matmul(cb, w!.data, yT, P, o, K, false, true, false);
      transposeInto(yT, P, o, out, b * o * P);
    }
    if (bias) {
      const bd = bias.data;
      for (let b = 0; b < g.n; b++) {
        for (let oc = 0; oc < o; oc++) {
          const v = bd[oc]!;
          for (let i = (b * o + oc) * P, e = i + P; i < e; i++) out[i] = out[i]! + v;
        }
      }
    }
    return { out: new Tensor(out, [g.n, o, g.oh, g.ow]), saved: { col, g } };
  },
  backward: (gy, { inputs: [x, w, bias], saved: { col, g }, needsGrad }) => {
    const o = w!.shape[0]!;
    const K = g.c * g.kh * g.kw;
    const P = g.oh * g.ow;
    const k = be(gy);
    const fast = convKernels(gy);
    const gyd = gy.data;
    let gx: Tensor | null = null;
    if (needsGrad[0]) {
      // dcol_bᵀ [P, K] = dY_bᵀ · W, folded back into dX_b (after max pooling most of dY is zero).
      const dx = allocate(gy.dtype, x!.size);
      if (fast?.inputGrad) fast.inputGrad(gyd as Float32Array, w!.data as Float32Array, dx as Float32Array, g, o);
      else for (let b = 0, dcolT = allocate(gy.dtype, P * K); b < g.n; b++) {
        k.matmul(gyd.subarray(b * o * P, (b + 1) * o * P), w!.data, dcolT, P, K, o, true, false, false);
        if (fast) fast.col2imT(dcolT as Float32Array, b, g, dx as Float32Array);
        else col2imT(dcolT, b, g, dx);
      }
      gx = new Tensor(dx, x!.shape);
    }
    let gw: Tensor | null = null;
    if (needsGrad[1]) {
      // dW = Σ_b dY_b · colT_b, accumulated in sample order.
      const dw = allocate(gy.dtype, o * K);
      if (fast?.weightGrad) fast.weightGrad(gyd as Float32Array, col as Float32Array, dw as Float32Array, g, o);
      else for (let b = 0; b < g.n; b++) {
        k.matmul(gyd.subarray(b * o * P, (b + 1) * o * P), col.subarray(b * P * K, (b + 1) * P * K), dw, o, K, P, false, false, b > 0);
      }
      gw = new Tensor(dw, w!.shape);
    }
    let gb: Tensor | null = null;
    if (bias && needsGrad[2]) {
      const db = allocate(gy.dtype, o);
      if (fast) fast.channelBiasGrad(gyd as Float32Array, g.n, o, P, db as Float32Array);
      else for (let b = 0; b < g.n; b++) {
        for (let oc = 0; oc < o; oc++) {
          let s = 0;
          for (let i = (b * o + oc) * P, e = i + P; i < e; i++) s += gyd[i]!;
          db[oc] = db[oc]! + s;
        }
      }
      gb = new Tensor(db, bias.shape);
    }
    return bias ? [gx, gw, gb] : [gx, gw];
  },
}, [
  { label: 'single 3×3', shapes: [[1, 1, 4, 4], [1, 1, 3, 3]], attrs: { stride: [1, 1], padding: [0, 0], dilation: [1, 1] } },
  { label: 'batched, channels, bias', shapes: [[2, 3, 5, 4], [2, 3, 3, 2], [2]], attrs: { stride: [1, 1], padding: [0, 0], dilation: [1, 1] } },
  { label: 'stride 2', shapes: [[2, 2, 5, 5], [3, 2, 3, 3], [3]], attrs: { stride: [2, 2], padding: [0, 0], dilation: [1, 1] } },
  { label: 'padding 1', shapes: [[2, 2, 4, 4], [2, 2, 3, 3], [2]], attrs: { stride: [1, 1], padding: [1, 1], dilation: [1, 1] } },
  { label: 'dilation 2', shapes: [[1, 2, 6, 5], [2, 2, 2, 2]], attrs: { stride: [1, 1], padding: [0, 0], dilation: [2, 2] } },
  { label: 'mixed: stride 2×1, padding 1×2, dilation 1×2', shapes: [[2, 1, 5, 6], [2, 1, 3, 2], [2]], attrs: { stride: [2, 1], padding: [1, 2], dilation: [1, 2] } },
]);

function poolGeometry(op: string, x: Tensor, a: Pool2dAttrs): Geometry {
  return geometry(op, x, a.kernel[0], a.kernel[1], { stride: a.stride, padding: [0, 0], dilation: [1, 1] });
}

/** Max pooling of x into out, with the flat index of each window's maximum in argmax. */
function maxPoolLoop(d: Data, g: Geometry, out: Data, argmax: Int32Array): void {
  const { n, c, h, w, kh, kw, oh, ow, sh, sw } = g;
  let k = 0;
  for (let plane = 0; plane < n * c; plane++) {
    const base = plane * h * w;
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++, k++) {
        let best = base + oy * sh * w + ox * sw;
        let m = d[best]!;
        for (let i = 0; i < kh; i++) {
          const row = base + (oy * sh + i) * w + ox * sw;
          for (let j = 0; j < kw; j++) {
            const v = d[row + j]!;
            if (v > m) { m = v; best = row + j; } // strict: a tie keeps the first
          }
        }
        out[k] = m;
        argmax[k] = best;
      }
    }
  }
}

function maxPoolGradLoop(g: Data, argmax: Int32Array, gx: Data): void {
  for (let k = 0; k < argmax.length; k++) gx[argmax[k]!] = gx[argmax[k]!]! + g[k]!;
}

/** The TypeScript loops a backend's ConvKernels must match bit for bit (the native tests compare). */
export const convReferenceLoops = { im2colT, col2imT, maxPool: maxPoolLoop, maxPoolGrad: maxPoolGradLoop, geometry, poolGeometry };

/**
 * NOTE: at ties the FIRST maximum of the window in row-major order receives the whole
 * gradient (as PyTorch's max_pool2d); the others get none.
 */
const maxPool2dOp = defineOp<Pool2dAttrs, { argmax: Int32Array }>({
  name: 'maxPool2d',
  forward: ([x], attrs) => {
    const g = poolGeometry('maxPool2d', x!, attrs);
    const { n, c, oh, ow } = g;
    const out = allocate(x!.dtype, n * c * oh * ow);
    const argmax = allocateIndices(out.length);
    const fast = convKernels(x!);
    if (fast) fast.maxPool(x!.data as Float32Array, g, out as Float32Array, argmax);
    else maxPoolLoop(x!.data, g, out, argmax);
    return { out: new Tensor(out, [n, c, oh, ow]), saved: { argmax } };
  },
  backward: (gy, { inputs: [x], saved: { argmax } }) => {
    const gx = allocate(gy.dtype, x!.size);
    const fast = convKernels(gy);
    if (fast) fast.maxPoolGrad(gy.data as Float32Array, argmax, gx as Float32Array);
    else maxPoolGradLoop(gy.data, argmax, gx);
    return [new Tensor(gx, x!.shape)];
  },
}, [
  { label: '2×2', shapes: [[1, 1, 4, 4]], attrs: { kernel: [2, 2], stride: [2, 2] } },
  { label: 'batched channels, odd size', shapes: [[2, 3, 5, 5]], attrs: { kernel: [2, 2], stride: [2, 2] } },
  { label: 'overlapping 3×3 stride 2', shapes: [[2, 2, 5, 5]], attrs: { kernel: [3, 3], stride: [2, 2] } },
  { label: 'rectangular 2×3 stride 1×2', shapes: [[1, 2, 4, 7]], attrs: { kernel: [2, 3], stride: [1, 2] } },
]);

const avgPool2dOp = defineOp<Pool2dAttrs, null>({
  name: 'avgPool2d',
  forward: ([x], attrs) => {
    const { n, c, h, w, kh, kw, oh, ow, sh, sw } = poolGeometry('avgPool2d', x!, attrs);
    const out = allocate(x!.dtype, n * c * oh * ow);
    const d = x!.data;
    const scale = 1 / (kh * kw);
    let k = 0;
    for (let plane = 0; plane < n * c; plane++) {
      const base = plane * h * w;
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++, k++) {
          let s = 0;
          for (let i = 0; i < kh; i++) {
            const row = base + (oy * sh + i) * w + ox * sw;
            for (let j = 0; j < kw; j++) s += d[row + j]!;
          }
          out[k] = s * scale;
        }
      }
    }
    return { out: new Tensor(out, [n, c, oh, ow]), saved: null };
  },
  backward: (gy, { inputs: [x], attrs }) => {
    const { n, c, h, w, kh, kw, oh, ow, sh, sw } = poolGeometry('avgPool2d', x!, attrs);
    const gx = allocate(gy.dtype, x!.size);
    const g = gy.data;
    const scale = 1 / (kh * kw);
    let k = 0;
    for (let plane = 0; plane < n * c; plane++) {
      const base = plane * h * w;
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++, k++) {
          const v = g[k]! * scale;
          for (let i = 0; i < kh; i++) {
            const row = base + (oy * sh + i) * w + ox * sw;
            for (let j = 0; j < kw; j++) gx[row + j] = gx[row + j]! + v;
          }
        }
      }
    }
    return [new Tensor(gx, x!.shape)];
  },
}, [
  { label: '2×2', shapes: [[1, 1, 4, 4]], attrs: { kernel: [2, 2], stride: [2, 2] } },
  { label: 'batched, overlapping 3×3 stride 2', shapes: [[2, 3, 5, 5]], attrs: { kernel: [3, 3], stride: [2, 2] } },
  { label: 'rectangular 2×3 stride 1×2', shapes: [[1, 2, 4, 7]], attrs: { kernel: [2, 3], stride: [1, 2] } },
]);

/**
 * 2-D convolution (cross-correlation, as every framework) of x [n, c, h, w] with
 * w [o, c, kh, kw], plus bias [o] when given.
 * @example conv2d(x, w, b, { padding: 1 }) // 'same' size for a 3×3 kernel
 */
export function conv2d(x: Tensor, w: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const attrs: Conv2dAttrs = { stride: pair(opts.stride ?? 1), padding: pair(opts.padding ?? 0), dilation: pair(opts.dilation ?? 1) };
  return conv2dOp(bias ? [x, w, bias] : [x, w], attrs);
}

/** Max pooling over kernel windows; the stride defaults to the kernel. See the NOTE on ties. */
export function maxPool2d(x: Tensor, kernel: number | Pair2d, stride: number | Pair2d = kernel): Tensor {
  return maxPool2dOp([x], { kernel: pair(kernel), stride: pair(stride) });
}

/** Average pooling over kernel windows (no padding); the stride defaults to the kernel. */
export function avgPool2d(x: Tensor, kernel: number | Pair2d, stride: number | Pair2d = kernel): Tensor {
  return avgPool2dOp([x], { kernel: pair(kernel), stride: pair(stride) });
}
