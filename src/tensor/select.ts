/**
 * Chooses the kernel backend by name: the argument, else `CHAINRULE_BACKEND`, else the
 * fastest available: `native` where the addon was built and the CPU has AVX2 + FMA or AVX-512, then
 * `wasm` where WebAssembly SIMD is available, then `js`.
 *
 * @example
 * selectBackend();         // native when built, else wasm, on Node 20
 * selectBackend('js');     // the reference kernels
 */
import { ChainruleError, describeValue, lookup } from '../errors.js';
import { backend, setBackend, type Backend } from './backend.js';
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

// Each maker checks that its backend can run here; `source` names who asked, for the message.
const backendMakers: Record<BackendName, (source: string) => Backend> = {
  js: () => jsBackend,
  wasm(source) {
    if (!wasmSimdSupported()) {
      throw new ChainruleError('BACKEND_UNAVAILABLE', `${source}: backend 'wasm' needs WebAssembly SIMD, which this runtime lacks; choose 'js'`);
    }
    return createWasmBackend();
  },
  native(source) {
    if (!nativeAvailable()) throw new ChainruleError('BACKEND_UNAVAILABLE', `${source}: backend 'native' is unavailable: ${nativeUnavailableReason()}; choose 'wasm' or 'js'`);
    return createNativeBackend();
  },
};

export function selectBackend(name?: string): Backend {
  const fromEnv = process.env['CHAINRULE_BACKEND'];
  const chosen = name ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : undefined);
  const source = name !== undefined ? 'selectBackend' : 'CHAINRULE_BACKEND';
  const make = lookup(backendMakers, chosen ?? defaultBackendName());
  if (make === undefined) {
    throw new ChainruleError('UNKNOWN_BACKEND', `${source}: unknown backend ${typeof chosen === 'string' ? `'${chosen}'` : describeValue(chosen, 80)}; choose one of ${backendNames.map((s) => `'${s}'`).join(', ')}`);
  }
  const b = make(source);
  setBackend(b);
  return b;
}

/** How many holders use the process's backend, by name (in this thread). */
const claims = new Map<string, number>();

/**
 * Takes the process's backend for a Coordinator or an actor: `name` (or the default when
 * none is given and nobody holds one). A second holder asking for another backend while the
 * first still runs is refused: kernels are process-wide, and a silent swap would change the
 * first one's results. `release()` gives the claim back.
 */
export function claimBackend(name: string | undefined, who: string): { backend: Backend; release(): void } {
  const held = [...claims.keys()][0];
  let b: Backend;
  if (held !== undefined) {
    const want = name ?? held;
    if (want !== held) {
      throw new ChainruleError('BACKEND_CONFLICT', `${who}: backend '${want}' was asked for, but this process already runs on backend '${held}' for another run`,
        { hint: `use backend '${held}' here too, close the other run first, or run this one in another process (a worker thread or a gRPC node has its own backend)` });
    }
    b = backend();
  } else {
    b = name === undefined && process.env['CHAINRULE_BACKEND'] === undefined && backend().name !== 'js' ? backend() : selectBackend(name);
  }
  claims.set(b.name, (claims.get(b.name) ?? 0) + 1);
  let released = false;
  return {
    backend: b,
    release: () => {
      if (released) return;
      released = true;
      const n = (claims.get(b.name) ?? 1) - 1;
      if (n <= 0) claims.delete(b.name);
      else claims.set(b.name, n);
    },
  };
}
