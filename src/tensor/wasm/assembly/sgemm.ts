// AssemblyScript: float32 sgemm with WebAssembly SIMD128, GotoBLAS style.
//
// c (m×n) = op(a)·op(b) (+ c when accumulate), every matrix row-major and contiguous.
// Both operands are packed into panels before the microkernel runs, so the
// transposed cases only change the packing routine and run as fast as the plain one.
//
// Loop nest (jc, pc, ic, jr, ir): a kc×nc block of op(b) is packed into NR-wide
// panels (L3/L2), an mc×kc block of op(a) into MR-tall panels (L2), and the
// MR×NR microkernel streams one panel of each (the b panel, kc·NR·4 = 8 KiB, stays in L1).
//
// The caller (src/tensor/wasm/index.ts) owns linear memory: it copies a, b (and c when
// accumulating) in, passes byte addresses, and gives `work` bytes of scratch sized by
// `workBytes`. No allocation happens in here (runtime stub).

// NOTE: 4×8 keeps 8 accumulators + 2 b vectors + 1 broadcast + 1 product in registers:
// Node 20 has no relaxed-SIMD FMA, and x64 V8 has 15 usable xmm registers, so a taller
// tile spills.
// @ts-ignore: decorator
@inline const MR: i32 = 4;
// @ts-ignore: decorator
@inline const NR: i32 = 8;
// @ts-ignore: decorator
@inline const KC: i32 = 256;
// @ts-ignore: decorator
@inline const MC: i32 = 128;
// @ts-ignore: decorator
@inline const NC: i32 = 2048;

// @ts-ignore: decorator
@inline function roundUp(x: i32, q: i32): i32 { return (x + q - 1) / q * q; }

/** The k-block: at most KC, split evenly so that k = 784 gives 4×196, not 3×256 + 16. */
function kcOf(k: i32): i32 {
  const blocks = (k + KC - 1) / KC;
  return roundUp((k + blocks - 1) / blocks, 4);
}

/** First free byte after the module's static data. */
export function heapBase(): usize { return __heap_base; }

/** Bytes of scratch `sgemm` needs for these sizes (packed panels and one edge tile). */
export function workBytes(m: i32, n: i32, k: i32): i32 {
  const kc = min(k, kcOf(k));
  const mc = roundUp(min(m, MC), MR);
  const nc = roundUp(min(n, NC), NR);
  return (mc * kc + kc * nc + MR * NR) * 4;
}

// ---- packing ------------------------------------------------------------------

// 4×4 transpose of rows r0..r3 stored as columns at d, d+16, d+32, d+48 (row-stride `ds` bytes).
// @ts-ignore: decorator
@inline function transpose4(r0: v128, r1: v128, r2: v128, r3: v128, d: usize, ds: usize): void {
  const t0 = v128.shuffle<f32>(r0, r1, 0, 4, 1, 5);
  const t1 = v128.shuffle<f32>(r0, r1, 2, 6, 3, 7);
  const t2 = v128.shuffle<f32>(r2, r3, 0, 4, 1, 5);
  const t3 = v128.shuffle<f32>(r2, r3, 2, 6, 3, 7);
  v128.store(d, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
  v128.store(d + ds, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7));
  v128.store(d + 2 * ds, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5));
  v128.store(d + 3 * ds, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7));
}

/** op(a) = a (m×k): rows ic.., columns pc.. into MR-tall panels, p-major, zero-padded. */
function packA(a: usize, m: i32, k: i32, ic: i32, pc: i32, mc: i32, kc: i32, dst: usize): void {
  const lda = <usize>k << 2;
  for (let ir = 0; ir < mc; ir += MR) {
    const rows = min(MR, mc - ir);
    let d = dst + (<usize>(ir * kc) << 2);
    const s0 = a + (<usize>((ic + ir) * k + pc) << 2);
    if (rows == MR) {
      const s1 = s0 + lda, s2 = s1 + lda, s3 = s2 + lda;
      let p = 0;
      for (; p + 4 <= kc; p += 4) {
        const o = <usize>p << 2;
        transpose4(v128.load(s0 + o), v128.load(s1 + o), v128.load(s2 + o), v128.load(s3 + o), d, 16);
        d += 64;
      }
      for (; p < kc; p++) {
        const o = <usize>p << 2;
        store<f32>(d, load<f32>(s0 + o));
        store<f32>(d, load<f32>(s1 + o), 4);
        store<f32>(d, load<f32>(s2 + o), 8);
        store<f32>(d, load<f32>(s3 + o), 12);
        d += 16;
      }
    } else {
      for (let p = 0; p < kc; p++) {
        for (let r = 0; r < MR; r++) {
          store<f32>(d + (<usize>r << 2), r < rows ? load<f32>(s0 + (<usize>r) * lda + (<usize>p << 2)) : 0);
        }
        d += 16;
      }
    }
  }
}

/** op(a) = aᵀ, a stored k×m: each packed column of MR values is a contiguous run of a. */
function packAT(a: usize, m: i32, k: i32, ic: i32, pc: i32, mc: i32, kc: i32, dst: usize): void {
  const lda = <usize>m << 2;
  for (let ir = 0; ir < mc; ir += MR) {
    const rows = min(MR, mc - ir);
    let d = dst + (<usize>(ir * kc) << 2);
    let s = a + (<usize>(pc * m + ic + ir) << 2);
    if (rows == MR) {
      for (let p = 0; p < kc; p++) { v128.store(d, v128.load(s)); d += 16; s += lda; }
    } else {
      for (let p = 0; p < kc; p++) {
        for (let r = 0; r < MR; r++) store<f32>(d + (<usize>r << 2), r < rows ? load<f32>(s + (<usize>r << 2)) : 0);
        d += 16; s += lda;
      }
    }
  }
}

/** op(b) = b (k×n): rows pc.., columns jc.. into NR-wide panels, p-major, zero-padded. */
function packB(b: usize, n: i32, k: i32, jc: i32, pc: i32, nc: i32, kc: i32, dst: usize): void {
  const ldb = <usize>n << 2;
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = min(NR, nc - jr);
    let d = dst + (<usize>(jr * kc) << 2);
    let s = b + (<usize>(pc * n + jc + jr) << 2);
    if (cols == NR) {
      for (let p = 0; p < kc; p++) {
        v128.store(d, v128.load(s));
        v128.store(d, v128.load(s, 16), 16);
        d += 32; s += ldb;
      }
    } else {
      for (let p = 0; p < kc; p++) {
        for (let j = 0; j < NR; j++) store<f32>(d + (<usize>j << 2), j < cols ? load<f32>(s + (<usize>j << 2)) : 0);
        d += 32; s += ldb;
      }
    }
  }
}

/** op(b) = bᵀ, b stored n×k: 8 rows of b become one panel through two 4×4 transposes per 4 p's. */
function packBT(b: usize, n: i32, k: i32, jc: i32, pc: i32, nc: i32, kc: i32, dst: usize): void {
  const ldb = <usize>k << 2;
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = min(NR, nc - jr);
    let d = dst + (<usize>(jr * kc) << 2);
    const s0 = b + (<usize>((jc + jr) * k + pc) << 2);
    if (cols == NR) {
      const s1 = s0 + ldb, s2 = s1 + ldb, s3 = s2 + ldb;
      const s4 = s3 + ldb, s5 = s4 + ldb, s6 = s5 + ldb, s7 = s6 + ldb;
      let p = 0;
      for (; p + 4 <= kc; p += 4) {
        const o = <usize>p << 2;
        transpose4(v128.load(s0 + o), v128.load(s1 + o), v128.load(s2 + o), v128.load(s3 + o), d, 32);
        transpose4(v128.load(s4 + o), v128.load(s5 + o), v128.load(s6 + o), v128.load(s7 + o), d + 16, 32);
        d += 128;
      }
      for (; p < kc; p++) {
        const o = <usize>p << 2;
        for (let j = 0; j < NR; j++) store<f32>(d + (<usize>j << 2), load<f32>(s0 + (<usize>j) * ldb + o));
        d += 32;
      }
    } else {
      for (let p = 0; p < kc; p++) {
        const o = <usize>p << 2;
        for (let j = 0; j < NR; j++) store<f32>(d + (<usize>j << 2), j < cols ? load<f32>(s0 + (<usize>j) * ldb + o) : 0);
        d += 32;
      }
    }
  }
}

// ---- microkernel ----------------------------------------------------------------

// @ts-ignore: decorator
@inline function put(c: usize, v: v128, overwrite: bool): void {
  v128.store(c, overwrite ? v : f32x4.add(v128.load(c), v));
}

/** c (MR×NR at c, row stride ldc bytes) (+)= packed a panel · packed b panel over kc. */
function kernel(kc: i32, pa: usize, pb: usize, c: usize, ldc: usize, overwrite: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let p = 0; p < kc; p++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    let x = v128.load32_splat(pa);
    c00 = f32x4.add(c00, f32x4.mul(x, b0));
    c01 = f32x4.add(c01, f32x4.mul(x, b1));
    x = v128.load32_splat(pa, 4);
    c10 = f32x4.add(c10, f32x4.mul(x, b0));
    c11 = f32x4.add(c11, f32x4.mul(x, b1));
    x = v128.load32_splat(pa, 8);
    c20 = f32x4.add(c20, f32x4.mul(x, b0));
    c21 = f32x4.add(c21, f32x4.mul(x, b1));
    x = v128.load32_splat(pa, 12);
    c30 = f32x4.add(c30, f32x4.mul(x, b0));
    c31 = f32x4.add(c31, f32x4.mul(x, b1));
    pa += 16;
    pb += 32;
  }
  put(c, c00, overwrite); put(c + 16, c01, overwrite); c += ldc;
  put(c, c10, overwrite); put(c + 16, c11, overwrite); c += ldc;
  put(c, c20, overwrite); put(c + 16, c21, overwrite); c += ldc;
  put(c, c30, overwrite); put(c + 16, c31, overwrite);
}

/** Adds (or stores) the valid mr×nr corner of an MR×NR tile into c. */
function putTile(tile: usize, c: usize, ldc: usize, mr: i32, nr: i32, overwrite: bool): void {
  for (let r = 0; r < mr; r++) {
    const t = tile + (<usize>(r * NR) << 2);
    const cr = c + (<usize>r) * ldc;
    for (let j = 0; j < nr; j++) {
      const o = <usize>j << 2;
      const v = load<f32>(t + o);
      store<f32>(cr + o, overwrite ? v : load<f32>(cr + o) + v);
    }
  }
}

// ---- entry ------------------------------------------------------------------------

/**
 * c (m×n) = op(a)·op(b) (+ c when accumulate != 0). a is m×k (k×m when transA),
 * b is k×n (n×k when transB). a, b, c, work are byte addresses; work holds workBytes(m, n, k).
 * The caller handles m, n or k = 0.
 */
export function sgemm(m: i32, n: i32, k: i32, a: usize, b: usize, c: usize,
                      transA: i32, transB: i32, accumulate: i32, work: usize): void {
  const kcStep = kcOf(k);
  const kcMax = min(k, kcStep);
  const ap = work;
  const bp = ap + (<usize>(roundUp(min(m, MC), MR) * kcMax) << 2);
  const tile = bp + (<usize>(kcMax * roundUp(min(n, NC), NR)) << 2);
  const ldc = <usize>n << 2;
  for (let jc = 0; jc < n; jc += NC) {
    const nc = min(NC, n - jc);
    for (let pc = 0; pc < k; pc += kcStep) {
      const kc = min(kcStep, k - pc);
      const overwrite = pc == 0 && accumulate == 0;
      if (transB) packBT(b, n, k, jc, pc, nc, kc, bp);
      else packB(b, n, k, jc, pc, nc, kc, bp);
      for (let ic = 0; ic < m; ic += MC) {
        const mc = min(MC, m - ic);
        if (transA) packAT(a, m, k, ic, pc, mc, kc, ap);
        else packA(a, m, k, ic, pc, mc, kc, ap);
        for (let jr = 0; jr < nc; jr += NR) {
          const nr = min(NR, nc - jr);
          const pb = bp + (<usize>(jr * kc) << 2);
          for (let ir = 0; ir < mc; ir += MR) {
            const mr = min(MR, mc - ir);
            const pa = ap + (<usize>(ir * kc) << 2);
            const cp = c + (<usize>(ic + ir)) * ldc + (<usize>(jc + jr) << 2);
            if (mr == MR && nr == NR) {
              kernel(kc, pa, pb, cp, ldc, overwrite);
            } else {
              kernel(kc, pa, pb, tile, NR << 2, true);
              putTile(tile, cp, ldc, mr, nr, overwrite);
            }
          }
        }
      }
    }
  }
}

// ---- Fused optimizer updates (src/optim, PyTorch's formulas). The same f64 arithmetic in
// the same order as the TypeScript loops, and WebAssembly never fuses a multiply-add, so
// the results are the loops' bits. `p`, `g` and the slots are float32 arrays at byte
// addresses the caller copied in; the gradient is scaled and rounded to f32 first.

// @ts-ignore: decorator
@inline function ld(p: usize, i: i32): f64 { return <f64>load<f32>(p + (<usize>i << 2)); }
// @ts-ignore: decorator
@inline function st(p: usize, i: i32, v: f64): void { store<f32>(p + (<usize>i << 2), <f32>v); }
// @ts-ignore: decorator
@inline function scaledGrad(g: usize, i: i32, scale: f64): f64 { return <f64><f32>(ld(g, i) * scale); }

export function sgd(p: usize, g: usize, n: i32, scale: f64, lr: f64, wd: f64): void {
  for (let i = 0; i < n; i++) {
    const pi = ld(p, i);
    st(p, i, pi - lr * (scaledGrad(g, i, scale) + wd * pi));
  }
}

export function momentum(p: usize, g: usize, b: usize, n: i32, scale: f64, lr: f64, mu: f64,
  dampening: f64, wd: f64, nesterov: i32, fresh: i32): void {
  const keep = 1 - dampening;
  for (let i = 0; i < n; i++) {
    const pi = ld(p, i);
    const gi = scaledGrad(g, i, scale) + wd * pi;
    const bi = fresh ? gi : mu * ld(b, i) + keep * gi;
    st(b, i, bi);
    st(p, i, pi - lr * (nesterov ? gi + mu * bi : bi));
  }
}

/** vmax = 0: no AMSGrad buffer. */
export function adam(p: usize, g: usize, m: usize, v: usize, vmax: usize, n: i32, scale: f64,
  stepSize: f64, sqrtBc2: f64, shrink: f64, l2: f64, b1: f64, b2: f64, eps: f64): void {
  const k1 = 1 - b1;
  const k2 = 1 - b2;
  for (let i = 0; i < n; i++) {
    const p0 = ld(p, i);
    const pi = p0 * shrink;
    const gi = scaledGrad(g, i, scale) + l2 * p0;
    const mi = b1 * ld(m, i) + k1 * gi;
    let vi = b2 * ld(v, i) + k2 * gi * gi;
    st(m, i, mi);
    st(v, i, vi);
    if (vmax != 0) {
      const vm = ld(vmax, i);
      vi = isNaN(vm) || isNaN(vi) ? NaN : (vm > vi ? vm : vi); // Math.max: NaN wins
      st(vmax, i, vi);
    }
    st(p, i, pi - stepSize * mi / (Math.sqrt(vi) / sqrtBc2 + eps));
  }
}
