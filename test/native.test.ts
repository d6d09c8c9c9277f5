/**
 * The optional native backend: built at install wherever a C compiler is present, skipped
 * without one (and chainrule then runs on WebAssembly); its element-wise kernels, reductions
 * and optimizer updates give the reference kernels' exact bits; and training reaches the same
 * accuracy on every backend. (Its sgemm runs the shared suite in kernels.test.ts.)
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/index.js';
import { convReferenceLoops } from '../src/autograd/ops/conv.js';
import { Tensor } from '../src/tensor/tensor.js';
import { loadMnist, subset } from '../src/data/index.js';
import { mlpSpec } from '../src/nn/index.js';
import { createOptimizer } from '../src/optim/index.js';
import { backend, jsBackend, setBackend, type Backend, type BinaryKind, type UnaryKind } from '../src/tensor/backend.js';
import { createNativeBackend, nativeAvailable, nativeUnavailableReason } from '../src/tensor/native/index.js';
import { Rng } from '../src/tensor/rng.js';
import { createWasmBackend } from '../src/tensor/wasm/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const native: Backend | null = nativeAvailable() ? createNativeBackend() : null;

/** True when `cmd --version` runs: the tools node-gyp needs to build the addon. */
const runs = (cmd: string): boolean => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
const canBuild = process.env['CHAINRULE_SKIP_NATIVE'] !== '1' && runs(process.env['CC'] || 'cc') && runs('make') && runs('python3') &&
  existsSync(join(dirname(process.execPath), '..', 'include', 'node', 'node_api.h'));

/** Values with the edge cases every kernel must treat as the reference does. */
function values(rng: Rng, n: number): Float32Array {
  const special = [0, -0, 1, -1, NaN, Infinity, -Infinity, 1e-40, -3e-39, 3.4e38, 0.5, 2];
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = i < special.length ? special[i]! : (rng.float() * 2 - 1) * 10 ** (rng.int(7) - 3);
  return x;
}

/** Element by element with Object.is: the same bits up to NaN payloads, and +0 ≠ −0. */
function expectSameBits(got: Float32Array, want: Float32Array, what: string): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) throw new Error(`${what}: element ${i} is ${got[i]}, the reference gives ${want[i]}`);
  }
}

describe('the native addon at install', () => {
  // Nothing to build with: skipped (the fallback tests below cover such a machine).
  it.skipIf(!canBuild)('is built wherever a C compiler, make and the Node headers are present', () => {
    expect(nativeAvailable(), `a compiler is present but the addon is missing: ${nativeUnavailableReason()}`).toBe(true);
  });

  it('without a compiler, the install step says why, succeeds, and leaves no half-built addon', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-native-'));
    try {
      // Every source, so that the compiler is the only thing missing (a missing file would make the build fail anyway).
      for (const f of readdirSync(join(root, 'native'))) if (/\.(gyp|c|h)$/.test(f)) cpSync(join(root, 'native', f), join(dir, f));
      const gyp = JSON.parse(readFileSync(join(dir, 'binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
      for (const source of gyp.targets.flatMap((t) => t.sources)) expect(existsSync(join(dir, source)), `${source} copied`).toBe(true);
      const script = join(root, 'scripts', 'build-native.mjs');
      // A compiler that fails, and then a PATH with node alone (no cc, make or python3).
      const bin = join(dir, 'bin');
      mkdirSync(bin);
      symlinkSync(process.execPath, join(bin, 'node'));
      for (const env of [{ ...process.env, CC: '/bin/false', CXX: '/bin/false' }, { PATH: bin, HOME: process.env['HOME'] ?? '/tmp' }]) {
        const r = spawnSync(process.execPath, [script, `--dir=${dir}`], { env, encoding: 'utf8', timeout: 120_000 });
        expect(r.status, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/chainrule: native backend not built \(.+\); the WebAssembly backend will be used/);
        expect(existsSync(join(dir, 'build', 'Release', 'chainrule_native.node'))).toBe(false);
      }
      const strict = spawnSync(process.execPath, [script, `--dir=${dir}`, '--strict'], { env: { ...process.env, CC: '/bin/false' }, encoding: 'utf8', timeout: 120_000 });
      expect(strict.status).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);

  it('without the addon, the default is wasm and asking for native names the reason', () => {
    const code = `import('${join(root, 'src/tensor/select.ts')}').then((m) => {
      console.log(m.defaultBackendName());
      try { m.selectBackend('native'); } catch (e) { console.log(e.message); }
    });`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], {
      cwd: root, encoding: 'utf8', timeout: 60_000, env: { ...process.env, CHAINRULE_NATIVE_ADDON: '/nonexistent/chainrule_native.node' },
    });
    expect(r.status, r.stderr).toBe(0);
    const [name, message] = r.stdout.trim().split('\n');
    expect(name).toBe('wasm');
    expect(message).toMatch(/selectBackend: backend 'native' is unavailable: the native addon was not built \(\/nonexistent\/chainrule_native.node is missing.*; choose 'wasm' or 'js'/);
  }, 60_000);
});

describe.skipIf(!native)('native kernels give the reference bits', () => {
  const be = native!;
  const kinds: BinaryKind[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'reluGrad'];

  it('binary: same shapes, scalars, rows (a bias), either side, and shapes it hands to the reference', () => {
    const rng = new Rng(77); // each test its own stream: its inputs do not depend on which ran before
    const cases: Array<[number[], number[], number[]]> = [
      [[5, 7], [5, 7], [5, 7]], [[5, 7], [1, 1], [5, 7]], [[1, 1], [5, 7], [5, 7]], [[5, 7], [1, 7], [5, 7]],
      [[1, 7], [5, 7], [5, 7]], [[2, 3, 4], [1, 1, 4], [2, 3, 4]], [[5, 7], [5, 1], [5, 7]], [[2, 3, 4], [2, 1, 4], [2, 3, 4]], [[], [], []],
    ];
    for (const kind of kinds) {
      for (const [as, bs, os] of cases) {
        const size = (s: number[]) => s.reduce((p, d) => p * d, 1);
        const a = values(rng, size(as));
        const b = values(rng, size(bs)).reverse();
        const got = new Float32Array(size(os));
        const want = new Float32Array(size(os));
        be.binary(kind, a, as, b, bs, got, os);
        jsBackend.binary(kind, a, as, b, bs, want, os);
        expectSameBits(got, want, `${kind} [${as}] ∘ [${bs}]`);
      }
    }
  });

  it('unary: neg, abs, relu and sqrt give the reference bits; exp, log, sigmoid, tanh and softplus are within one float32 ulp', () => {
    const rng = new Rng(77);
    const x = values(rng, 4099);
    for (const kind of ['neg', 'sqrt', 'abs', 'relu'] as UnaryKind[]) {
      const got = new Float32Array(x.length);
      const want = new Float32Array(x.length);
      be.unary(kind, x, got);
      jsBackend.unary(kind, x, want);
      expectSameBits(got, want, kind);
    }
    // The C library's exp/log/tanh and V8's may differ in the double's last bit: rarely one float32 ulp.
    const bits = (v: number): number => new Int32Array(Float32Array.of(v).buffer)[0]!;
    for (const kind of ['exp', 'log', 'sigmoid', 'tanh', 'softplus'] as UnaryKind[]) {
      const got = new Float32Array(x.length);
      const want = new Float32Array(x.length);
      be.unary(kind, x, got);
      jsBackend.unary(kind, x, want);
      let differ = 0;
      for (let i = 0; i < x.length; i++) {
        if (Object.is(got[i], want[i])) continue;
        differ++;
        const ulps = Math.abs(bits(got[i]!) - bits(want[i]!));
        if (!(Number.isFinite(want[i]!) && ulps <= 1)) throw new Error(`${kind}(${x[i]}): ${got[i]}, the reference gives ${want[i]}`);
      }
      expect(differ, `${kind}: ${differ} of ${x.length} values one ulp away`).toBeLessThanOrEqual(x.length / 1000);
    }
  });

  it('reduceSum: all, leading axes (a bias gradient), trailing axes, and a middle axis', () => {
    const rng = new Rng(77);
    const cases: Array<[number[], number[]]> = [
      [[64, 10], [1, 1]], [[64, 10], [1, 10]], [[64, 10], [64, 1]], [[2, 3, 5], [1, 1, 5]], [[2, 3, 5], [2, 1, 1]],
      [[2, 3, 5], [2, 3, 1]], [[2, 3, 5], [2, 1, 5]], [[7], [1]], [[], []], [[0, 4], [1, 4]],
    ];
    for (const [xs, os] of cases) {
      const x = new Float32Array(xs.reduce((p, d) => p * d, 1)).map(() => rng.float() * 2 - 1);
      const got = new Float32Array(os.reduce((p, d) => p * d, 1)).fill(9);
      const want = new Float32Array(got.length).fill(9);
      be.reduceSum(x, xs, got, os);
      jsBackend.reduceSum(x, xs, want, os);
      expectSameBits(got, want, `sum [${xs}] → [${os}]`);
    }
  });

  it('im2col, col2im and max pooling: strides, padding, dilation, ties and NaN', () => {
    const rng = new Rng(77);
    const conv = be.conv!;
    const { im2colT, col2imT, maxPool, maxPoolGrad, geometry, poolGeometry } = convReferenceLoops;
    const convCases: Array<[number[], number, number, [number, number], [number, number], [number, number]]> = [
      [[2, 3, 7, 6], 3, 3, [1, 1], [1, 1], [1, 1]], [[1, 2, 9, 9], 3, 2, [2, 1], [0, 2], [1, 2]], [[3, 1, 5, 5], 1, 1, [1, 1], [0, 0], [1, 1]],
      [[2, 2, 6, 8], 2, 3, [2, 2], [1, 0], [2, 1]],
    ];
    for (const [shape, kh, kw, stride, padding, dilation] of convCases) {
      const x = new Tensor(values(rng, shape.reduce((p, d) => p * d, 1)), shape);
      const g = geometry('test', x, kh, kw, { stride, padding, dilation });
      const K = g.c * kh * kw;
      const P = g.oh * g.ow;
      for (let b = 0; b < g.n; b++) {
        const got = new Float32Array(P * K).fill(5);
        const want = new Float32Array(P * K).fill(5);
        conv.im2colT(x.data as Float32Array, b, g, got);
        im2colT(x.data, b, g, want);
        expectSameBits(got, want, `im2col ${JSON.stringify(g)} sample ${b}`);
        const dcol = values(rng, P * K);
        const gx = Float32Array.from(x.data);
        const wx = Float32Array.from(x.data);
        conv.col2imT(dcol, b, g, gx);
        col2imT(dcol, b, g, wx);
        expectSameBits(gx, wx, `col2im ${JSON.stringify(g)} sample ${b}`);
      }
    }
    for (const [shape, kernel, stride] of [[[2, 3, 6, 6], [2, 2], [2, 2]], [[1, 2, 7, 5], [3, 3], [2, 1]], [[2, 1, 4, 4], [2, 3], [1, 1]]] as const) {
      const data = values(rng, (shape as readonly number[]).reduce((p, d) => p * d, 1));
      for (let i = 20; i < data.length; i += 7) data[i] = data[i - 1]!; // ties
      const x = new Tensor(data, [...shape]);
      const g = poolGeometry('test', x, { kernel: [...kernel], stride: [...stride] });
      const size = g.n * g.c * g.oh * g.ow;
      const got = new Float32Array(size);
      const want = new Float32Array(size);
      const ga = new Int32Array(size);
      const wa = new Int32Array(size);
      conv.maxPool(data, g, got, ga);
      maxPool(data, g, want, wa);
      expectSameBits(got, want, `max pool ${JSON.stringify(g)}`);
      expect(Array.from(ga)).toEqual(Array.from(wa));
      const gy = values(rng, size);
      const gotGx = new Float32Array(data.length).fill(1);
      const wantGx = new Float32Array(data.length).fill(1);
      conv.maxPoolGrad(gy, wa, gotGx);
      maxPoolGrad(gy, wa, wantGx);
      expectSameBits(gotGx, wantGx, `max pool gradient ${JSON.stringify(g)}`);
    }
    expect(() => conv.maxPoolGrad(new Float32Array(2), Int32Array.of(0, 5), new Float32Array(4))).toThrow(/native maxPoolGrad: an argmax index is outside the gradient/);
    // The per-channel bias and its gradient, against conv2d's own loops on the js backend.
    const [n, ch, plane] = [3, 5, 37];
    const gy = values(rng, n * ch * plane);
    const bias = values(rng, ch);
    const got = Float32Array.from(gy);
    conv.channelBias(got, bias, n, ch, plane);
    const want = Float32Array.from(gy);
    for (let b = 0; b < n; b++) for (let c = 0; c < ch; c++) for (let i = 0; i < plane; i++) want[(b * ch + c) * plane + i] = want[(b * ch + c) * plane + i]! + bias[c]!;
    expectSameBits(got, want, 'channel bias');
    const db = new Float32Array(ch).fill(0.25);
    const wdb = new Float32Array(ch).fill(0.25);
    conv.channelBiasGrad(gy, n, ch, plane, db);
    for (let b = 0; b < n; b++) for (let c = 0; c < ch; c++) {
      let s = 0;
      for (let i = 0; i < plane; i++) s += gy[(b * ch + c) * plane + i]!;
      wdb[c] = wdb[c]! + s;
    }
    expectSameBits(db, wdb, 'channel bias gradient');
  });

  it('a call with too short an array throws a RangeError that names the function and the argument', () => {
    expect(() => be.matmul(new Float32Array(6), new Float32Array(6), new Float32Array(3), 2, 3, 3, false, false, false))
      .toThrow(/native sgemm: argument 1 has 6 elements, needs at least 9/);
  });
});

// The fused optimizer kernels of every backend that has them (wasm, native) against the TypeScript loops.
describe.each([createWasmBackend(), ...(native ? [native] : [])].map((b) => [b.name, b] as const))('%s optimizer updates', (_name, be) => {
  const before = backend();
  afterEach(() => setBackend(before));

  const specs = [
    { type: 'sgd', lr: 0.1 }, { type: 'sgd', lr: 0.1, weightDecay: 0.01 },
    { type: 'momentum', lr: 0.05 }, { type: 'momentum', lr: 0.05, dampening: 0.3, weightDecay: 1e-3 },
    { type: 'nesterov', lr: 0.05, momentum: 0.8 },
    { type: 'adam', lr: 1e-3 }, { type: 'adam', lr: 1e-2, weightDecay: 0.1, amsgrad: true }, { type: 'adamw', lr: 1e-3 },
  ];
  /** Three steps of `spec` under backend `be`, from the same start: parameters and state. */
  function run(be: Backend, spec: { type: string; lr: number }): Float32Array[] {
    setBackend(be);
    const r = new Rng(5);
    const params = [1000, 37].map((n, i) => ({ name: `p${i}`, value: new Float32Array(n).map(() => r.float() - 0.5), grad: new Float32Array(n) as Float32Array | null }));
    const opt = createOptimizer(spec);
    for (let step = 0; step < 3; step++) {
      for (const p of params) p.grad!.forEach((_, i, g) => { g[i] = (r.float() - 0.5) * 3; });
      opt.step(params, { gradScale: 1 / 8 });
    }
    const state = opt.getState();
    return [...params.map((p) => p.value), ...Object.values(state.slots).flatMap((s) => Object.values(s).map((v) => Float32Array.from(v)))];
  }

  for (const spec of specs) {
    it(`${JSON.stringify(spec)}: parameters and state equal the TypeScript loop's`, () => {
      const want = run(jsBackend, spec);
      const got = run(be, spec);
      expect(got.length).toBe(want.length);
      got.forEach((g, i) => expectSameBits(g, want[i]!, `${spec.type} array ${i}`));
    });
  }
});

describe('every backend trains to the same accuracy', () => {
  const before = backend();
  afterEach(() => setBackend(before));

  it('a small MLP, 2 epochs, on js, wasm and (when built) native', async () => {
    const m = loadMnist();
    const data = { train: subset(m.train, Array.from({ length: 2048 }, (_, i) => i)), test: m.test };
    const acc: Record<string, number> = {};
    for (const name of ['js', 'wasm', ...(native ? ['native'] : [])]) {
      const c = new Coordinator({ model: mlpSpec([64]), dataset: data, epochs: 2, batchSize: 32, backend: name, seed: 3 });
      try {
        const s = await c.train();
        expect(s.backend).toBe(name);
        acc[name] = s.testAccuracy!;
      } finally {
        await c.close();
      }
    }
    for (const [name, a] of Object.entries(acc)) {
      expect(a, `${name}: ${JSON.stringify(acc)}`).toBeGreaterThan(0.85);
      expect(Math.abs(a - acc['js']!), `${name} against js: ${JSON.stringify(acc)}`).toBeLessThan(0.01);
    }
  }, 120_000);
});
