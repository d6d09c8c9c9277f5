/**
 * The TensorFlow.js reference for `npm run bench`: training throughput (samples/s) of
 * TF.js on the same model and data as chainrule, with its pure-JS `cpu` backend or its
 * WebAssembly `wasm` backend.
 *
 * TF.js is imported dynamically, so chainrule itself never needs it (both packages are
 * devDependencies). The wasm binaries are read from the installed package's dist folder
 * (no network).
 *
 * @example
 * const r = await benchTfjs({ backend: 'wasm', model: 'mlp', x, y, inputShape: [784],
 *   numClasses: 10, batchSize: 64, seconds: 3 });
 * console.log(r.samplesPerSecond);
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

type TF = typeof import('@tensorflow/tfjs');
type Tensor = import('@tensorflow/tfjs').Tensor;
type Variable = import('@tensorflow/tfjs').Variable;

export type TfjsBackendName = 'cpu' | 'wasm';
export type TfjsModelName = 'mlp' | 'cnn';

export interface BenchTfjsOptions {
  backend: TfjsBackendName;
  model: TfjsModelName;
  /** Samples, row-major: x.length = samples × product(inputShape). */
  x: Float32Array;
  /** Class index of each sample, in [0, numClasses). */
  y: Int32Array;
  /** Per-sample shape: [784] for the MLP, [28, 28, 1] (HWC) for the CNN. */
  inputShape: number[];
  numClasses: number;
  batchSize: number;
  /** Wall time to measure for, after the warm-up steps. */
  seconds: number;
  /** Untimed steps before measuring (default 3). */
  warmupSteps?: number;
  /** Learning rate of plain SGD (default 0.05). */
  learningRate?: number;
  /** CNN sizes (default: 8 and 16 filters, no hidden dense layer): set them to mirror another CNN. */
  cnn?: { filters1?: number; filters2?: number; hidden?: number };
  /** MLP hidden sizes (default [256, 128]). */
  mlpHidden?: number[];
  /** Seed for the weight initialisation (default 42). */
  seed?: number;
  /**
   * CNN filter gradient: 'auto' (default) uses the backend's Conv2DBackpropFilter when it
   * has one (cpu; its pure-JS kernel is very slow, ~0.7 s + 2.5 s per batch-64 step here) and
   * the conv2d-based gradient otherwise (wasm); 'conv2d-trick' always uses the latter.
   */
  convFilterGrad?: 'auto' | 'conv2d-trick';
}

export interface BenchTfjsResult {
  backend: TfjsBackendName;
  model: TfjsModelName;
  samplesPerSecond: number;
  steps: number;
  /** Milliseconds measured (excludes warm-up). */
  ms: number;
  /** CNN only: how the conv filter gradient was computed (wasm lacks Conv2DBackpropFilter). */
  convFilterGrad?: 'native' | 'conv2d-trick';
  /** Loss of the last timed step (a sanity check: finite, falling from ~ln(numClasses)). */
  lastLoss: number;
}

let tfPromise: Promise<TF> | undefined;
let wasmRegistered: Promise<void> | undefined;

/** Runs `fn` with console.warn/console.log filtered of TF.js's "install tfjs-node" advice. */
async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  const warn = console.warn;
  const log = console.log;
  const noisy = (args: unknown[]): boolean =>
    args.some((a) => typeof a === 'string' && (a.includes('tfjs-node') || a.includes('TensorFlow.js in Node.js')));
  console.warn = (...args: unknown[]) => { if (!noisy(args)) warn(...args); };
  console.log = (...args: unknown[]) => { if (!noisy(args)) log(...args); };
  try {
    return await fn();
  } finally {
    console.warn = warn;
    console.log = log;
  }
}

/** Loads @tensorflow/tfjs once (CommonJS package: its exports may sit on `default`). */
export function loadTfjs(): Promise<TF> {
  tfPromise ??= (async () => {
    const mod = (await import('@tensorflow/tfjs')) as unknown as TF & { default?: TF };
    const tf = (mod.default && typeof mod.default.tensor === 'function' ? mod.default : mod) as TF;
    // Keep the IS_NODE flag as is, but do not let a failed prod-mode check spam either.
    tf.enableProdMode();
    return tf;
  })();
  return tfPromise;
}

/**
 * Registers the wasm backend and points it at the installed package's dist folder, where
 * tfjs-backend-wasm.wasm and tfjs-backend-wasm-simd.wasm live: works offline.
 */
function registerWasm(): Promise<void> {
  wasmRegistered ??= (async () => {
    await loadTfjs(); // the wasm backend registers itself into the same tfjs-core instance
    const mod = (await import('@tensorflow/tfjs-backend-wasm')) as unknown as
      typeof import('@tensorflow/tfjs-backend-wasm') & { default?: typeof import('@tensorflow/tfjs-backend-wasm') };
    const wasm = typeof mod.setWasmPaths === 'function' ? mod : mod.default!;
    const require = createRequire(import.meta.url);
    const distDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
    // A string prefix is used for every binary; a file path (not a URL) is read with fs in Node.
    wasm.setWasmPaths(join(distDir, '/'));
  })();
  return wasmRegistered;
}

/** Switches TF.js to `backend` (initialising it on first use) and returns the tf namespace. */
export async function useTfjsBackend(backend: TfjsBackendName): Promise<TF> {
  const tf = await loadTfjs();
  if (backend === 'wasm') await registerWasm();
  await quietly(async () => {
    const ok = await tf.setBackend(backend);
    if (!ok) throw new Error(`TF.js backend '${backend}' failed to initialise`);
    await tf.ready();
  });
  if (tf.getBackend() !== backend) throw new Error(`TF.js is on backend '${tf.getBackend()}', expected '${backend}'`);
  return tf;
}

/** Glorot-uniform (for the output layer) or He-uniform weights. */
function initWeight(tf: TF, shape: number[], fanIn: number, fanOut: number, he: boolean, seed: number): Variable {
  const limit = he ? Math.sqrt(6 / fanIn) : Math.sqrt(6 / (fanIn + fanOut));
  const init = tf.randomUniform(shape, -limit, limit, 'float32', seed);
  const v = tf.variable(init);
  init.dispose(); // the variable holds its own reference to the data
  return v;
}

function zerosVar(tf: TF, n: number): Variable {
  const init = tf.zeros([n]);
  const v = tf.variable(init);
  init.dispose();
  return v;
}

type Conv = (x: import('@tensorflow/tfjs').Tensor4D, k: import('@tensorflow/tfjs').Tensor4D) => import('@tensorflow/tfjs').Tensor4D;

/**
 * A 3×3 (any odd k×k), stride-1, 'same' conv2d. TF.js's wasm backend has no
 * Conv2DBackpropFilter kernel (its Conv2D gradient throws "Kernel 'Conv2DBackpropFilter'
 * not registered for backend 'wasm'"), so when that kernel is missing this conv carries
 * its own gradient, computed with kernels the backend has:
 *   dx = conv2dTranspose(dy, k)                       (Conv2DBackpropInput)
 *   dk[i,j,c,o] = Σ_{n,h,w} xpad[n,h+i,w+j,c]·dy[n,h,w,o]
 *      = conv2d(xpadᵀ [c,H+2p,W+2p,n], dyᵀ [H,W,n,o]) → [c,k,k,o] → [k,k,c,o]   (Conv2D)
 * Same FLOPs as a native filter gradient, and all of it runs in WebAssembly.
 */
export function makeConv(tf: TF, forceTrick = false): { conv: Conv; filterGrad: 'native' | 'conv2d-trick' } {
  const native = !forceTrick && tf.getKernel('Conv2DBackpropFilter', tf.getBackend()) !== undefined;
  if (native) return { conv: (x, k) => tf.conv2d(x, k, 1, 'same'), filterGrad: 'native' };
  type T4 = import('@tensorflow/tfjs').Tensor4D;
  const conv = tf.customGrad((...args: unknown[]) => {
    const [x, k, save] = args as [T4, T4, (ts: import('@tensorflow/tfjs').Tensor[]) => void];
    save([x, k]);
    return {
      value: tf.conv2d(x, k, 1, 'same'),
      gradFunc: (dy: import('@tensorflow/tfjs').Tensor, saved: import('@tensorflow/tfjs').Tensor[]) => {
        const [xs, ks] = saved as [T4, T4];
        const d = dy as T4;
        const [kh, kw] = ks.shape;
        const ph = (kh - 1) / 2;
        const pw = (kw - 1) / 2;
        const dx = tf.conv2dTranspose(d, ks, xs.shape, 1, 'same');
        const xp = tf.pad(xs, [[0, 0], [ph, ph], [pw, pw], [0, 0]]);
        const xt = tf.transpose(xp, [3, 1, 2, 0]) as T4; // [c, H+2p, W+2p, n]
        const dyt = tf.transpose(d, [1, 2, 0, 3]) as T4; // [H, W, n, o]
        const dk = tf.transpose(tf.conv2d(xt, dyt, 1, 'valid'), [1, 2, 0, 3]); // [k, k, c, o]
        return [dx, dk];
      },
    };
  }) as unknown as Conv;
  return { conv, filterGrad: 'conv2d-trick' };
}

interface Net {
  vars: Variable[];
  convFilterGrad?: 'native' | 'conv2d-trick';
  forward: (x: Tensor) => Tensor;
}

function buildMlp(tf: TF, inputs: number, hidden: number[], classes: number, seed: number): Net {
  const sizes = [inputs, ...hidden, classes];
  const ws: Variable[] = [];
  const bs: Variable[] = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    const last = i + 2 === sizes.length;
    ws.push(initWeight(tf, [sizes[i]!, sizes[i + 1]!], sizes[i]!, sizes[i + 1]!, !last, seed + i));
    bs.push(zerosVar(tf, sizes[i + 1]!));
  }
  return {
    vars: [...ws, ...bs],
    forward: (x) => {
      let h = x.reshape([x.shape[0]!, inputs]) as import('@tensorflow/tfjs').Tensor2D;
      for (let i = 0; i < ws.length; i++) {
        h = tf.add(tf.matMul(h, ws[i]! as import('@tensorflow/tfjs').Tensor2D), bs[i]!);
        if (i + 1 < ws.length) h = tf.relu(h);
      }
      return h;
    },
  };
}

function buildCnn(tf: TF, inputShape: number[], classes: number, cfg: { filters1: number; filters2: number; hidden: number; forceTrick: boolean }, seed: number): Net {
  if (inputShape.length !== 3) throw new Error(`benchTfjs: the CNN needs inputShape [h, w, c], got [${inputShape.join(', ')}]`);
  const [h, w, c] = inputShape as [number, number, number];
  const { filters1: f1, filters2: f2, hidden } = cfg;
  // 'same' padding (pad 1 for 3×3), as chainrule's conv2d with padding 1: 28 → 14 → 7.
  const h2 = Math.floor(Math.floor(h / 2) / 2);
  const w2 = Math.floor(Math.floor(w / 2) / 2);
  const flat = h2 * w2 * f2;
  const k1 = initWeight(tf, [3, 3, c, f1], 9 * c, 9 * f1, true, seed);
  const b1 = zerosVar(tf, f1);
  const k2 = initWeight(tf, [3, 3, f1, f2], 9 * f1, 9 * f2, true, seed + 1);
  const b2 = zerosVar(tf, f2);
  const dense: Variable[] = [];
  if (hidden > 0) {
    dense.push(initWeight(tf, [flat, hidden], flat, hidden, true, seed + 2), zerosVar(tf, hidden));
    dense.push(initWeight(tf, [hidden, classes], hidden, classes, false, seed + 3), zerosVar(tf, classes));
  } else {
    dense.push(initWeight(tf, [flat, classes], flat, classes, false, seed + 2), zerosVar(tf, classes));
  }
  type T4 = import('@tensorflow/tfjs').Tensor4D;
  type T2 = import('@tensorflow/tfjs').Tensor2D;
  const { conv, filterGrad } = makeConv(tf, cfg.forceTrick);
  return {
    vars: [k1, b1, k2, b2, ...dense],
    convFilterGrad: filterGrad,
    forward: (x) => {
      const n = x.shape[0]!;
      let a = x.reshape([n, h, w, c]) as T4;
      a = tf.relu(tf.add(conv(a, k1 as T4), b1)) as T4;
      a = tf.maxPool(a, 2, 2, 'valid');
      a = tf.relu(tf.add(conv(a, k2 as T4), b2)) as T4;
      a = tf.maxPool(a, 2, 2, 'valid');
      let z = a.reshape([n, flat]) as T2;
      for (let i = 0; i < dense.length; i += 2) {
        z = tf.add(tf.matMul(z, dense[i]! as T2), dense[i + 1]!);
        if (i + 2 < dense.length) z = tf.relu(z);
      }
      return z;
    },
  };
}

/**
 * Trains `model` with TF.js on `backend` (plain SGD, softmax cross-entropy from logits,
 * full batches of `batchSize` cycling through the data) for ~`seconds` after the warm-up
 * steps, and returns the measured samples/s. Creates and disposes its own variables.
 */
export async function benchTfjs(opts: BenchTfjsOptions): Promise<BenchTfjsResult> {
  const { backend, model, x, y, inputShape, numClasses, batchSize, seconds } = opts;
  const warmupSteps = opts.warmupSteps ?? 3;
  const lr = opts.learningRate ?? 0.05;
  const seed = opts.seed ?? 42;
  const per = inputShape.reduce((a, b) => a * b, 1);
  if (!(per > 0) || x.length % per !== 0) throw new Error(`benchTfjs: x.length ${x.length} is not a multiple of product(inputShape) = ${per}`);
  const samples = x.length / per;
  if (y.length !== samples) throw new Error(`benchTfjs: ${samples} samples in x but ${y.length} labels in y`);
  if (!(batchSize >= 1) || samples < batchSize) throw new Error(`benchTfjs: need at least one full batch of ${batchSize}, have ${samples} samples`);
  for (let i = 0; i < y.length; i++) {
    if (!(y[i]! >= 0 && y[i]! < numClasses)) throw new Error(`benchTfjs: label y[${i}] = ${y[i]} is outside [0, ${numClasses})`);
  }

  const tf = await useTfjsBackend(backend);
  const startTensors = tf.memory().numTensors;
  const net = model === 'mlp'
    ? buildMlp(tf, per, opts.mlpHidden ?? [256, 128], numClasses, seed)
    : buildCnn(tf, inputShape, numClasses, {
      filters1: opts.cnn?.filters1 ?? 8, filters2: opts.cnn?.filters2 ?? 16, hidden: opts.cnn?.hidden ?? 0,
      forceTrick: opts.convFilterGrad === 'conv2d-trick',
    }, seed);
  const optimizer = tf.train.sgd(lr);
  const batches = Math.floor(samples / batchSize);
  let cursor = 0;
  let lastLoss = NaN;

  const step = (): void => {
    const b = cursor;
    cursor = (cursor + 1) % batches;
    const xs = x.subarray(b * batchSize * per, (b + 1) * batchSize * per);
    const ys = y.subarray(b * batchSize, (b + 1) * batchSize);
    const cost = tf.tidy(() => {
      const xb = tf.tensor(xs, [batchSize, ...inputShape], 'float32');
      const yb = tf.oneHot(tf.tensor1d(ys, 'int32'), numClasses);
      const c = optimizer.minimize(
        () => tf.losses.softmaxCrossEntropy(yb, net.forward(xb)) as import('@tensorflow/tfjs').Scalar,
        true,
        net.vars,
      );
      if (!c) throw new Error('benchTfjs: optimizer.minimize returned no cost');
      return c;
    });
    // Reading the loss makes sure the step has really finished (cpu and wasm run eagerly anyway).
    lastLoss = cost.dataSync()[0]!;
    cost.dispose();
  };

  try {
    for (let i = 0; i < warmupSteps; i++) step();
    const budget = seconds * 1000;
    const t0 = performance.now();
    let steps = 0;
    let ms = 0;
    do {
      step();
      steps++;
      ms = performance.now() - t0;
    } while (ms < budget);
    const result: BenchTfjsResult = { backend, model, samplesPerSecond: (steps * batchSize * 1000) / ms, steps, ms, lastLoss };
    if (net.convFilterGrad) result.convFilterGrad = net.convFilterGrad;
    return result;
  } finally {
    optimizer.dispose();
    for (const v of net.vars) v.dispose();
    const leaked = tf.memory().numTensors - startTensors;
    if (leaked > 0) process.emitWarning(`benchTfjs: ${leaked} TF.js tensors left after the run`);
  }
}
