/**
 * Chooses the kernel backend by name: the argument, else `CHAINRULE_BACKEND`, else
 * `wasm` where WebAssembly SIMD is available and `js` otherwise.
 *
 * @example
 * selectBackend();       // wasm on Node 20
 * selectBackend('js');   // the reference kernels
 */
import { setBackend, type Backend } from './backend.js';
import { jsBackend } from './kernels-js.js';
import { createWasmBackend, wasmSimdSupported } from './wasm/index.js';

export const backendNames = ['js', 'wasm'] as const;
export type BackendName = (typeof backendNames)[number];

export function selectBackend(name?: string): Backend {
  const fromEnv = process.env['CHAINRULE_BACKEND'];
  const chosen = name ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : undefined);
  const source = name !== undefined ? 'selectBackend' : 'CHAINRULE_BACKEND';
  let b: Backend;
  if (chosen === undefined) {
    b = wasmSimdSupported() ? createWasmBackend() : jsBackend;
  } else if (chosen === 'js') {
    b = jsBackend;
  } else if (chosen === 'wasm') {
    if (!wasmSimdSupported()) {
      throw new Error(`${source}: backend 'wasm' needs WebAssembly SIMD, which this runtime lacks; choose 'js'`);
    }
    b = createWasmBackend();
  } else {
    throw new Error(`${source}: unknown backend '${chosen}'; choose one of ${backendNames.map((s) => `'${s}'`).join(', ')}`);
  }
  setBackend(b);
  return b;
}
