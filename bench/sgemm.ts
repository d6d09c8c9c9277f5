/**
 * GFLOP/s of each backend's matmul on the MLP's shapes (784-256 layer, batch 64: the
 * forward product and both gradients, which use transA and transB) and on 1024³.
 *
 * @example
 * const rows = await benchSgemm(); // or: npx tsx bench/sgemm.ts
 */
import { pathToFileURL } from 'node:url';
import { jsBackend, type Backend } from '../src/tensor/backend.js';
import { Rng } from '../src/tensor/rng.js';
import { createNativeBackend, nativeKernels } from '../src/tensor/native/index.js';
import { createWasmBackend } from '../src/tensor/wasm/index.js';

interface Case { m: number; n: number; k: number; transA: boolean; transB: boolean; label: string; jsToo: boolean }

const cases: Case[] = [
  { m: 64, n: 256, k: 784, transA: false, transB: false, label: 'Y = X·W 64×784·784×256', jsToo: true },
  { m: 784, n: 256, k: 64, transA: true, transB: false, label: 'dW = Xᵀ·dY 784×64·64×256 (transA)', jsToo: true },
  { m: 64, n: 784, k: 256, transA: false, transB: true, label: 'dX = dY·Wᵀ 64×256·256×784 (transB)', jsToo: true },
  { m: 1024, n: 1024, k: 1024, transA: false, transB: false, label: '1024×1024·1024×1024', jsToo: true },
  { m: 1024, n: 1024, k: 1024, transA: true, transB: true, label: '1024³ (transA, transB)', jsToo: false },
];

/** Seconds of timed calls per measurement (after one warm-up call). */
const BUDGET_S = 0.6;

function measure(be: Backend, c: Case): number {
  const rng = new Rng(c.m * 31 + c.n * 7 + c.k);
  const fill = (len: number): Float32Array => {
    const x = new Float32Array(len);
    for (let i = 0; i < len; i++) x[i] = rng.float() - 0.5;
    return x;
  };
  const a = fill(c.m * c.k);
  const b = fill(c.k * c.n);
  const out = new Float32Array(c.m * c.n);
  const flops = 2 * c.m * c.n * c.k;
  const call = (): void => be.matmul(a, b, out, c.m, c.n, c.k, c.transA, c.transB, false);
  let t0 = performance.now();
  call();
  const first = (performance.now() - t0) / 1000;
  // A call longer than the budget (pure JS on 1024³) is measured by its one run.
  if (first > BUDGET_S / 2) return flops / first / 1e9;
  // The best of three windows: the machines are shared, and a neighbour's burst only slows.
  let best = 0;
  for (let w = 0; w < 3; w++) {
    let calls = 0;
    t0 = performance.now();
    let elapsed = 0;
    do {
      call();
      calls++;
      elapsed = (performance.now() - t0) / 1000;
    } while (elapsed < BUDGET_S / 3);
    best = Math.max(best, (flops * calls) / elapsed / 1e9);
  }
  return best;
}

/** Every case, or only the one labelled `only.shape`. */
export async function benchSgemm(only: { shape?: string } = {}): Promise<Array<{ backend: string; shape: string; gflops: number }>> {
  const rows: Array<{ backend: string; shape: string; gflops: number }> = [];
  // The native addon (when built) once per microkernel this CPU runs: 'native' is its default.
  const natives = nativeKernels().map((k, i) => ({ ...createNativeBackend(k), name: i === 0 ? 'native' : `native ${k}` }));
  const backends: Backend[] = [jsBackend, createWasmBackend(), ...natives];
  for (const c of cases.filter((x) => only.shape === undefined || x.label === only.shape)) {
    for (const be of backends) {
      if (be.name === 'js' && !c.jsToo) continue;
      rows.push({ backend: be.name, shape: c.label, gflops: Number(measure(be, c).toFixed(2)) });
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return rows;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await benchSgemm()) console.log(`${r.backend.padEnd(16)} ${r.shape.padEnd(40)} ${r.gflops.toFixed(2).padStart(7)} GFLOP/s`);
}
