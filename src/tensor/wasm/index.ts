/**
 * The WebAssembly SIMD backend: float32 matmul runs in a register-tiled, cache-blocked
 * sgemm (assembly/sgemm.ts), and the optimizer updates in the same module (the TypeScript
 * loops' bits); float64 and the element-wise kernels go to `jsBackend`.
 *
 * @example
 * import { setBackend } from '../backend.js';
 * import { createWasmBackend } from './index.js';
 * setBackend(createWasmBackend());
 */
import type { Backend, OptimizerKernels } from '../backend.js';
import { jsBackend } from '../kernels-js.js';
import type { Data } from '../tensor.js';
import { wasmBase64 } from './sgemm-binary.js';

// NOTE: tsconfig's lib is ES2022 without DOM, which declares no WebAssembly globals;
// these are the few members used here.
interface WasmMemory { readonly buffer: ArrayBuffer; grow(pages: number): number }
interface WasmModule { readonly __brand?: 'WebAssembly.Module' }
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: object) => { readonly exports: unknown };
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

interface SgemmExports {
  readonly memory: WasmMemory;
  heapBase(): number;
  workBytes(m: number, n: number, k: number): number;
  sgemm(m: number, n: number, k: number, a: number, b: number, c: number,
    transA: number, transB: number, accumulate: number, work: number): void;
  sgd(p: number, g: number, n: number, scale: number, lr: number, wd: number): void;
  momentum(p: number, g: number, b: number, n: number, scale: number, lr: number, mu: number,
    dampening: number, wd: number, nesterov: number, fresh: number): void;
  adam(p: number, g: number, m: number, v: number, vmax: number, n: number, scale: number,
    stepSize: number, sqrtBc2: number, shrink: number, l2: number, b1: number, b2: number, eps: number): void;
}

const PAGE = 65536;
/** Linear memory is capped by wasm32 at 4 GiB; refuse before the grow fails obscurely. */
const MAX_BYTES = 4 * 1024 * 1024 * 1024 - PAGE;

let module: WasmModule | undefined;

function compiled(): WasmModule {
  if (module === undefined) module = new WA.Module(Buffer.from(wasmBase64, 'base64'));
  return module;
}

/** True when this runtime validates a module using SIMD128 (Node ≥ 16.4). */
export function wasmSimdSupported(): boolean {
  try {
    compiled();
    return true;
  } catch {
    return false;
  }
}

// Plain arithmetic, not bit operations: addresses may pass 2^31.
const align = (x: number): number => Math.ceil(x / 64) * 64;

/**
 * A backend whose float32 matmul runs in WebAssembly. Each backend owns one instance and its
 * linear memory, grown on demand and reused by every later call (so it is not re-entrant:
 * one per thread). Throws if the runtime lacks WebAssembly SIMD.
 */
export function createWasmBackend(): Backend {
  const ex = new WA.Instance(compiled(), {}).exports as unknown as SgemmExports;
  const memory = ex.memory;
  const base = align(ex.heapBase());
  let heap = new Float32Array(memory.buffer);

  function ensure(bytes: number, where: string): void {
    if (bytes > MAX_BYTES) {
      throw new RangeError(`${where}: needs ${bytes} bytes of WebAssembly memory, over the 4 GiB limit; use the js backend for this size`);
    }
    const have = memory.buffer.byteLength;
    if (bytes > have) memory.grow(Math.ceil((bytes - have) / PAGE));
    if (heap.buffer !== memory.buffer) heap = new Float32Array(memory.buffer);
  }

  function matmul(a: Data, b: Data, c: Data, m: number, n: number, k: number,
    transA: boolean, transB: boolean, accumulate: boolean): void {
    if (!(a instanceof Float32Array && b instanceof Float32Array && c instanceof Float32Array)) {
      jsBackend.matmul(a, b, c, m, n, k, transA, transB, accumulate);
      return;
    }
    const mn = m * n;
    if (mn === 0) return;
    if (k === 0) {
      if (!accumulate) c.fill(0, 0, mn);
      return;
    }
    const mk = m * k;
    const kn = k * n;
    if (a.length < mk || b.length < kn || c.length < mn) {
      throw new RangeError(`wasm matmul: ${m}×${k}·${k}×${n} needs a ≥ ${mk}, b ≥ ${kn}, c ≥ ${mn} elements; got ${a.length}, ${b.length}, ${c.length}`);
    }
    const aP = base;
    const bP = align(aP + 4 * mk);
    const cP = align(bP + 4 * kn);
    const wP = align(cP + 4 * mn);
    ensure(wP + ex.workBytes(m, n, k), 'wasm matmul');
    heap.set(a.length === mk ? a : a.subarray(0, mk), aP / 4);
    heap.set(b.length === kn ? b : b.subarray(0, kn), bP / 4);
    if (accumulate) heap.set(c.length === mn ? c : c.subarray(0, mn), cP / 4);
    ex.sgemm(m, n, k, aP, bP, cP, transA ? 1 : 0, transB ? 1 : 0, accumulate ? 1 : 0, wP);
    c.set(heap.subarray(cP / 4, cP / 4 + mn));
  }

  /**
   * Copies arrays into linear memory (after `base`), runs `update` on their addresses, and
   * copies back the first `written` of them (the parameter and its slots; the gradient is
   * read only). The copies still beat V8's loop: with these kernels MLP training steps ran
   * 1.08-1.34× faster on wasm (an A/B in one process, SGD and Adam).
   */
  function inPlace(arrays: Array<Float32Array | null>, written: number, update: (at: number[]) => void): void {
    let end = base;
    const at = arrays.map((x) => {
      if (x === null) return 0;
      const start = end;
      end = align(end + 4 * x.length);
      return start;
    });
    ensure(end, 'wasm optimizer');
    arrays.forEach((x, i) => { if (x) heap.set(x, at[i]! / 4); });
    update(at);
    for (let i = 0; i < written; i++) {
      const x = arrays[i];
      if (x) x.set(heap.subarray(at[i]! / 4, at[i]! / 4 + x.length));
    }
  }

  const optimizer: OptimizerKernels = {
    sgd: (p, g, scale, lr, wd) => inPlace([p, g], 1, ([pp, gp]) => ex.sgd(pp!, gp!, p.length, scale, lr, wd)),
    momentum: (p, g, b, scale, lr, mu, dampening, wd, nesterov, fresh) => inPlace([p, b, g], 2,
      ([pp, bp, gp]) => ex.momentum(pp!, gp!, bp!, p.length, scale, lr, mu, dampening, wd, nesterov ? 1 : 0, fresh ? 1 : 0)),
    adam: (p, g, m, v, vmax, scale, stepSize, sqrtBc2, shrink, l2, b1, b2, eps) => inPlace([p, m, v, vmax, g], 4,
      ([pp, mp, vp, xp, gp]) => ex.adam(pp!, gp!, mp!, vp!, xp!, p.length, scale, stepSize, sqrtBc2, shrink, l2, b1, b2, eps)),
  };

  return {
    name: 'wasm',
    optimizer,
    matmul,
    binary: jsBackend.binary,
    unary: jsBackend.unary,
    reduceSum: jsBackend.reduceSum,
  };
}
