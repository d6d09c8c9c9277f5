/**
 * The WebAssembly SIMD backend: float32 matmul runs in a register-tiled, cache-blocked
 * sgemm (assembly/sgemm.ts); float64 and the element-wise kernels go to `jsBackend`.
 *
 * @example
 * import { setBackend } from '../backend.js';
 * import { createWasmBackend } from './index.js';
 * setBackend(createWasmBackend());
 */
import type { Backend } from '../backend.js';
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

  return {
    name: 'wasm',
    matmul,
    binary: jsBackend.binary,
    unary: jsBackend.unary,
    reduceSum: jsBackend.reduceSum,
  };
}
