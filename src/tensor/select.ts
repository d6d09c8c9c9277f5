/**
 * Chooses the kernel backend by name: the argument, else `CHAINRULE_BACKEND`, else the
 * fastest available: `native` where the addon was built and the CPU has AVX2 + FMA or AVX-512, then
 * `wasm` where WebAssembly SIMD is available, then `js`.
 *
 * @example
 * selectBackend();         // native when built, else wasm, on Node 20
 * selectBackend('js');     // the reference kernels
 */
import { setBackend, type Backend } from './backend.js';
import { jsBackend } from './kernels-js.js';
import { createNativeBackend, nativeAvailable, nativeKernel, nativeUnavailableReason } from './native/index.js';
import { createWasmBackend, wasmSimdSupported } from './wasm/index.js';

export const backendNames = ['js', 'wasm', 'native'] as const;
export type BackendName = (typeof backendNames)[number];

/** The backend `selectBackend()` picks without a name or environment variable. */
export function defaultBackendName(): BackendName {
  if (nativeAvailable() && nativeKernel() !== 'generic') return 'native';
  return wasmSimdSupported() ? 'wasm' : nativeAvailable() ? 'native' : 'js';
}

/** Each backend and whether it can run here (with the reason when not), for the bench. */
export function availableBackends(): Record<BackendName, true | string> {
  return {
    js: true,
    wasm: wasmSimdSupported() || 'this runtime lacks WebAssembly SIMD',
    native: nativeAvailable() || nativeUnavailableReason(),
  };
}

export function selectBackend(name?: string): Backend {
  const fromEnv = process.env['CHAINRULE_BACKEND'];
  const chosen = name ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : undefined);
  const source = name !== undefined ? 'selectBackend' : 'CHAINRULE_BACKEND';
  const pick = chosen ?? defaultBackendName();
  let b: Backend;
  if (pick === 'js') {
    b = jsBackend;
  } else if (pick === 'wasm') {
    if (!wasmSimdSupported()) {
      throw new Error(`${source}: backend 'wasm' needs WebAssembly SIMD, which this runtime lacks; choose 'js'`);
    }
    b = createWasmBackend();
  } else if (pick === 'native') {
    if (!nativeAvailable()) throw new Error(`${source}: backend 'native' is unavailable: ${nativeUnavailableReason()}; choose 'wasm' or 'js'`);
    b = createNativeBackend();
  } else {
    throw new Error(`${source}: unknown backend '${chosen}'; choose one of ${backendNames.map((s) => `'${s}'`).join(', ')}`);
  }
  setBackend(b);
  return b;
}
