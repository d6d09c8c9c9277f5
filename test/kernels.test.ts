// Every kernel backend against a float64 triple loop, plus the wasm build's freshness
// and the backend selection.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { backend, jsBackend, setBackend, type Backend } from '../src/tensor/backend.js';
import { Rng } from '../src/tensor/rng.js';
import { defaultBackendName, selectBackend } from '../src/tensor/select.js';
import { createNativeBackend, nativeAvailable, nativeKernel, nativeKernels } from '../src/tensor/native/index.js';
import { createWasmBackend } from '../src/tensor/wasm/index.js';
import { sourceSha256, wasmBase64, wasmSha256 } from '../src/tensor/wasm/sgemm-binary.js';

// The native addon is optional (built at install when a compiler is present): test/native.test.ts
// checks that it was built wherever it can be.
// Each microkernel this CPU runs (AVX-512, AVX2/FMA, portable C) is tested on its own.
const backends: Backend[] = [jsBackend, createWasmBackend(), ...nativeKernels().map((k) => ({ ...createNativeBackend(k), name: `native ${k}` }))];

/** c = op(a)·op(b) (+ c0), in float64, with Σ|op(a)||op(b)| per entry for the tolerance. */
function naive(a: ArrayLike<number>, b: ArrayLike<number>, c0: ArrayLike<number>, m: number, n: number, k: number,
  transA: boolean, transB: boolean, accumulate: boolean): { c: Float64Array; scale: Float64Array } {
  const c = new Float64Array(m * n);
  const scale = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = accumulate ? c0[i * n + j]! : 0;
      let t = accumulate ? Math.abs(c0[i * n + j]!) : 0;
      for (let p = 0; p < k; p++) {
        const x = transA ? a[p * m + i]! : a[i * k + p]!;
        const y = transB ? b[j * k + p]! : b[p * n + j]!;
        s += x * y;
        t += Math.abs(x * y);
      }
      c[i * n + j] = s;
      scale[i * n + j] = t;
    }
  }
  return { c, scale };
}

function randomData(rng: Rng, len: number, dtype: 'float32' | 'float64'): Float32Array | Float64Array {
  const x = dtype === 'float32' ? new Float32Array(len) : new Float64Array(len);
  for (let i = 0; i < len; i++) x[i] = rng.float() * 2 - 1;
  return x;
}

function check(be: Backend, m: number, n: number, k: number, transA: boolean, transB: boolean,
  accumulate: boolean, seed: number, dtype: 'float32' | 'float64' = 'float32'): void {
  const rng = new Rng(seed);
  const a = randomData(rng, m * k, dtype);
  const b = randomData(rng, k * n, dtype);
  const c = randomData(rng, m * n, dtype);
  const want = naive(a, b, c, m, n, k, transA, transB, accumulate);
  be.matmul(a, b, c, m, n, k, transA, transB, accumulate);
  const tol = dtype === 'float32' ? 1e-4 : 1e-12;
  let worst = 0;
  let at = -1;
  for (let i = 0; i < m * n; i++) {
    const err = Math.abs(c[i]! - want.c[i]!) / (want.scale[i]! + 1e-30);
    if (err > worst) { worst = err; at = i; }
  }
  const what = `${be.name} ${dtype} ${m}×${k}·${k}×${n} transA=${transA} transB=${transB} accumulate=${accumulate}`;
  expect(worst, `${what}: worst relative error ${worst} at ${at} (got ${c[at]}, want ${want.c[at]})`).toBeLessThanOrEqual(tol);
}

const flags = [false, true];
const edgeShapes: Array<[number, number, number]> = [
  [1, 1, 1], [1, 1, 7], [7, 5, 1], [1, 9, 3], [9, 1, 3], [4, 8, 4], [4, 8, 256], [3, 7, 5], [5, 9, 17],
  [13, 17, 259], [33, 65, 129], [129, 10, 513], [6, 2049, 3], [2, 3, 1000],
  [150, 40, 20], [3, 3100, 5], // past one MC block of rows and one NC block of columns
];

describe.each(backends.map((b) => [b.name, b] as const))('%s matmul', (_name, be) => {
  for (const [m, n, k] of edgeShapes) {
    it(`${m}×${k}·${k}×${n}, every transpose and accumulate`, () => {
      let seed = m * 1_000_003 + n * 1009 + k;
      for (const tA of flags) for (const tB of flags) for (const acc of flags) check(be, m, n, k, tA, tB, acc, seed++);
    });
  }

  it('random shapes', () => {
    const rng = new Rng(20240611);
    for (let t = 0; t < 24; t++) {
      const m = 1 + rng.int(70);
      const n = 1 + rng.int(70);
      const k = 1 + rng.int(300);
      check(be, m, n, k, rng.float() < 0.5, rng.float() < 0.5, rng.float() < 0.5, 100 + t);
    }
  });

  it('the MLP shapes: forward and both gradients', () => {
    check(be, 64, 256, 784, false, false, false, 1);
    check(be, 784, 256, 64, true, false, true, 2); // dW += Xᵀ·dY
    check(be, 64, 784, 256, false, true, false, 3); // dX = dY·Wᵀ
  });

  it('float64 stays exact to float64 rounding', () => {
    for (const tA of flags) for (const tB of flags) check(be, 11, 13, 17, tA, tB, tA !== tB, 7, 'float64');
  });

  it('m, n or k = 0', () => {
    for (const [m, n, k] of [[0, 5, 3], [5, 0, 3], [0, 0, 0]] as const) {
      for (const acc of flags) {
        const c = new Float32Array(m * n);
        be.matmul(new Float32Array(m * k), new Float32Array(k * n), c, m, n, k, false, false, acc);
        expect(c.length).toBe(0);
      }
    }
    const c = Float32Array.of(1, 2, 3, 4, 5, 6);
    be.matmul(new Float32Array(0), new Float32Array(0), c, 2, 3, 0, true, true, true);
    expect(Array.from(c)).toEqual([1, 2, 3, 4, 5, 6]);
    be.matmul(new Float32Array(0), new Float32Array(0), c, 2, 3, 0, false, false, false);
    expect(Array.from(c)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('reads operands through subarray views and leaves the rest of c alone', () => {
    const rng = new Rng(9);
    const big = randomData(rng, 100, 'float32') as Float32Array;
    const a = big.subarray(3, 3 + 6); // 2×3
    const b = big.subarray(41, 41 + 12); // 3×4
    const out = new Float32Array(10).fill(7);
    const c = out.subarray(1, 9); // 2×4
    be.matmul(a, b, c, 2, 4, 3, false, false, false);
    const want = naive(a, b, c, 2, 4, 3, false, false, false).c;
    for (let i = 0; i < 8; i++) expect(c[i]).toBeCloseTo(want[i]!, 5);
    expect(out[0]).toBe(7);
    expect(out[9]).toBe(7);
  });
});

// Products against a kept pack must give matmul's bits, whatever reuses the pack.
describe.each(backends.filter((b) => b.packed).map((b) => [b.name, b] as const))('%s packed matmul', (_name, be) => {
  const p = be.packed!;
  const bitsOf = (x: Float32Array): number[] => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));

  it('matmulPacking and matmulPacked give matmul\'s bits on the edge shapes, every transpose and accumulate', () => {
    let pack = null;
    for (const [m, n, k] of [...edgeShapes, [32, 1024, 1024] as [number, number, number], [257, 70, 600] as [number, number, number]]) {
      const rng = new Rng(m * 7 + n * 13 + k);
      for (const tA of flags) for (const tB of flags) for (const acc of flags) {
        const a = randomData(rng, m * k, 'float32') as Float32Array;
        const b = randomData(rng, k * n, 'float32') as Float32Array;
        const c0 = randomData(rng, m * n, 'float32') as Float32Array;
        const want = Float32Array.from(c0);
        be.matmul(a, b, want, m, n, k, tA, tB, acc);
        const first = Float32Array.from(c0);
        pack = p.matmulPacking(a, b, first, m, n, k, tA, tB, acc, pack); // one pack reused across shapes
        expect(bitsOf(first), `packing ${m}×${k}·${k}×${n} ${tA} ${tB} ${acc}`).toEqual(bitsOf(want));
        expect([pack.n, pack.k, pack.transB]).toEqual([n, k, tB]);
        const again = Float32Array.from(c0);
        p.matmulPacked(a, pack, again, m, tA, acc);
        expect(bitsOf(again), `packed ${m}×${k}·${k}×${n} ${tA} ${tB} ${acc}`).toEqual(bitsOf(want));
      }
    }
  });

  it('a pack serves other left operands, of any row count', () => {
    const rng = new Rng(5);
    const b = randomData(rng, 300 * 200, 'float32') as Float32Array;
    const pack = p.matmulPacking(new Float32Array(0), b, new Float32Array(0), 0, 200, 300, false, true, false, null);
    for (const m of [1, 7, 12, 32, 145]) {
      const a = randomData(rng, m * 300, 'float32') as Float32Array;
      const want = new Float32Array(m * 200);
      be.matmul(a, b, want, m, 200, 300, false, true, false);
      const got = new Float32Array(m * 200);
      p.matmulPacked(a, pack, got, m, false, false);
      expect(bitsOf(got), `m=${m}`).toEqual(bitsOf(want));
    }
  });

  it('refuses a pack it did not make, and operands too short for the pack', () => {
    expect(() => p.matmulPacked(new Float32Array(4), { n: 2, k: 2, transB: false }, new Float32Array(4), 2, false, false)).toThrow(/pack/);
    const pack = p.matmulPacking(new Float32Array(6), new Float32Array(12), new Float32Array(8), 2, 4, 3, false, false, false, null);
    expect(() => p.matmulPacked(new Float32Array(5), pack, new Float32Array(8), 2, false, false)).toThrow(/argument 0 has 5 elements/);
    expect(() => p.matmulPacked(new Float32Array(6), pack, new Float32Array(7), 2, false, false)).toThrow(/argument 2 has 7 elements/);
  });
});

describe('wasm backend', () => {
  it('reuses its memory across growing and shrinking calls', () => {
    const be = createWasmBackend();
    for (const [m, n, k] of [[300, 300, 300], [3, 5, 7], [500, 40, 600], [2, 2, 2]] as const) check(be, m, n, k, true, false, true, m + n + k);
  });

  it('the checked-in build is current', () => {
    const src = readFileSync(fileURLToPath(new URL('../src/tensor/wasm/assembly/sgemm.ts', import.meta.url)));
    const hash = createHash('sha256').update(src).digest('hex');
    expect(hash, 'assembly/sgemm.ts changed since the last build: run `npm run build:wasm`').toBe(sourceSha256);
    const wasm = readFileSync(fileURLToPath(new URL('../src/tensor/wasm/sgemm.wasm', import.meta.url)));
    expect(createHash('sha256').update(wasm).digest('hex'), 'sgemm.wasm and sgemm-binary.ts disagree: run `npm run build:wasm`').toBe(wasmSha256);
    expect(Buffer.from(wasmBase64, 'base64').equals(wasm)).toBe(true);
  });
});

describe('selectBackend', () => {
  const saved = process.env['CHAINRULE_BACKEND'];
  const before = backend();
  afterEach(() => {
    if (saved === undefined) delete process.env['CHAINRULE_BACKEND'];
    else process.env['CHAINRULE_BACKEND'] = saved;
    setBackend(before);
  });

  it('names the bad value and the choices', () => {
    expect(() => selectBackend('cuda')).toThrow(/unknown backend 'cuda'; choose one of 'js', 'wasm', 'native'/);
    process.env['CHAINRULE_BACKEND'] = 'numpy';
    expect(() => selectBackend()).toThrow(/CHAINRULE_BACKEND: unknown backend 'numpy'/);
  });

  it('installs the chosen backend; the argument beats the environment; the fastest by default', () => {
    process.env['CHAINRULE_BACKEND'] = 'wasm';
    expect(selectBackend('js')).toBe(jsBackend);
    expect(backend()).toBe(jsBackend);
    expect(selectBackend().name).toBe('wasm');
    expect(backend().name).toBe('wasm');
    delete process.env['CHAINRULE_BACKEND'];
    expect(selectBackend().name).toBe(defaultBackendName());
    // native when its addon is built and the CPU has AVX2 + FMA or AVX-512, else wasm (Node 20 has SIMD)
    expect(defaultBackendName()).toBe(nativeAvailable() && nativeKernel() !== 'generic' ? 'native' : 'wasm');
  });
});
