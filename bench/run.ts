/**
 * `npm run bench [-- --json] [-- --quick]`: chainrule against references measured in the
 * same run, reported as ratios (the machines are shared and noisy; absolute times are not
 * comparable across runs).
 *
 * 1. sgemm GFLOP/s per backend on the MLP's shapes (forward, Xᵀ·dY, dY·Wᵀ) and 1024³.
 * 2. Training samples/s of the MLP 784-256-128-10 (batch 64) and the CNN, per backend,
 *    next to TensorFlow.js (pure-JS `cpu` and `wasm` backends) on the same model and data.
 * 3. Placements: one process, 2 stages on threads, 2 gRPC nodes on loopback, on a
 *    compute-bound model; measured bubble against GPipe's (K−1)/(M+K−1).
 */
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { Batcher, loadMnist } from '../src/data/index.js';
import { mlpSpec, cnnSpec } from '../src/nn/index.js';
import { selectBackend } from '../src/tensor/select.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { benchSgemm } from './sgemm.js';
import { emitJson, printTable, ratioTo, type Row } from './report.js';

const quick = process.argv.includes('--quick');
const seconds = quick ? 1.5 : 4;
const rows: Row[] = [];
const skipped: Record<string, string> = {};
const mnist = loadMnist();

/** Samples/s of training steps (after warm-up) through the Coordinator. */
async function chainruleThroughput(o: CoordinatorOptions, secs = seconds): Promise<{ samplesPerSecond: number; bubble: number }> {
  const c = new Coordinator({ dataset: mnist, epochs: 1, ...o });
  try {
    await c.open();
    const batches = [...new Batcher(mnist.train, { batchSize: c.options.batchSize, seed: 1 }).epoch(0)];
    for (let i = 0; i < 3; i++) await c.step(batches[i]!.x, batches[i]!.y);
    const before = (c as unknown as { busyMs: number; stageWallMs: number });
    const busy0 = before.busyMs;
    const wall0 = before.stageWallMs;
    let n = 0;
    let samples = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < secs * 1000) {
      const b = batches[n++ % batches.length]!;
      await c.step(b.x, b.y);
      samples += b.y.length;
    }
    const elapsed = (performance.now() - t0) / 1000;
    const busy = before.busyMs - busy0;
    const wall = before.stageWallMs - wall0;
    return { samplesPerSecond: samples / elapsed, bubble: wall > 0 ? 1 - busy / wall : 0 };
  } finally {
    await c.close();
  }
}

async function tfjs(backend: 'cpu' | 'wasm', model: 'mlp' | 'cnn', secs = seconds): Promise<number | null> {
  try {
    const { benchTfjs } = await import('./tfjs.js');
    const r = await benchTfjs({ backend, model, cnn: { filters1: 16, filters2: 32, hidden: 128 }, x: mnist.train.inputs, y: mnist.train.labels, inputShape: model === 'cnn' ? [28, 28, 1] : [784], numClasses: 10, batchSize: 64, seconds: secs });
    return r.samplesPerSecond;
  } catch (e) {
    skipped[`tfjs ${backend} ${model}`] = (e as Error).message.split('\n')[0]!;
    return null;
  }
}

/** A `chainrule node` in a process of its own, on a free loopback port. */
async function spawnNode(): Promise<{ address: string; close(): Promise<void> }> {
  const fromSource = import.meta.url.endsWith('.ts');
  const bin = fileURLToPath(new URL(`../coordinator/bin.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [...(fromSource ? ['--import', 'tsx'] : []), bin, 'node', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`chainrule node exited with ${code}`)));
  });
  return { address, close: async () => { child.kill('SIGTERM'); } };
}

// 1. Kernels.
const gemm = await benchSgemm();
for (const g of gemm) {
  const ref = gemm.find((r) => r.backend === 'js' && r.shape === g.shape);
  rows.push({ name: `sgemm ${g.backend} ${g.shape}`, value: g.gflops, unit: 'GFLOP/s', ratio: g.backend !== 'js' && ref ? ratioTo(g.gflops, `js ${g.shape}`, ref.gflops) : undefined });
}
/** OpenBLAS sgemm on one thread through numpy, when python3 has numpy (a reference, not a dependency). */
function numpySgemm(): number | null {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1', OMP_WAIT_POLICY: 'passive' };
  // The machine's OpenBLAS workarounds slow a current numpy: unset them for this command only.
  delete env['OPENBLAS_CORETYPE'];
  delete env['OPENBLAS_L2_SIZE'];
  const code = 'import numpy as np, time\na=np.random.rand(1024,1024).astype(np.float32); b=np.random.rand(1024,1024).astype(np.float32)\n' +
    'a@b\nn=0; t=time.perf_counter()\nwhile time.perf_counter()-t<' + Math.min(seconds, 2) + ': a@b; n+=1\nprint(2*1024**3*n/(time.perf_counter()-t)/1e9)';
  const r = spawnSync('python3', ['-c', code], { env, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) {
    skipped['openblas (numpy) sgemm'] = (r.error?.message ?? r.stderr.trim().split('\n').pop() ?? 'python3 failed').slice(0, 200);
    return null;
  }
  return Number(r.stdout.trim());
}
const blas = numpySgemm();
if (blas) {
  const wasm1024 = gemm.find((g) => g.backend === 'wasm' && g.shape === '1024×1024·1024×1024');
  rows.push({ name: 'sgemm openblas (numpy, 1 thread) 1024³', value: blas, unit: 'GFLOP/s' });
  if (wasm1024) rows.push({ name: 'wasm vs openblas 1024³', value: wasm1024.gflops / blas, unit: '×' });
}
const torch = spawnSync('python3', ['-c', 'import torch'], { encoding: 'utf8' });
if (torch.status !== 0) skipped['pytorch'] = 'python3 has no torch module (Debian python3-torch is not installed)';
printTable(rows, 'sgemm');

// 2. Training throughput against TF.js on the same model and data.
const train: Row[] = [];
const tfWasmMlp = await tfjs('wasm', 'mlp');
const tfCpuMlp = await tfjs('cpu', 'mlp');
if (tfWasmMlp) train.push({ name: 'tfjs wasm mlp', value: tfWasmMlp, unit: 'samples/s' });
if (tfCpuMlp) train.push({ name: 'tfjs cpu mlp', value: tfCpuMlp, unit: 'samples/s' });
for (const backend of ['wasm', 'js']) {
  selectBackend(backend);
  const r = await chainruleThroughput({ model: mlpSpec(), optimizer: 'sgd', lr: 0.05, backend });
  train.push({ name: `chainrule ${backend} mlp`, value: r.samplesPerSecond, unit: 'samples/s', ratio: tfWasmMlp ? ratioTo(r.samplesPerSecond, 'tfjs wasm mlp', tfWasmMlp) : tfCpuMlp ? ratioTo(r.samplesPerSecond, 'tfjs cpu mlp', tfCpuMlp) : undefined });
}
selectBackend('wasm');
const tfWasmCnn = await tfjs('wasm', 'cnn');
if (tfWasmCnn) train.push({ name: 'tfjs wasm cnn', value: tfWasmCnn, unit: 'samples/s' });
const cnn = await chainruleThroughput({ model: cnnSpec(), optimizer: 'sgd', lr: 0.05, backend: 'wasm' });
train.push({ name: 'chainrule wasm cnn', value: cnn.samplesPerSecond, unit: 'samples/s', ratio: tfWasmCnn ? ratioTo(cnn.samplesPerSecond, 'tfjs wasm cnn', tfWasmCnn) : undefined });
printTable(train, 'Training throughput (batch 64, SGD, built-in digits)');
rows.push(...train);

// 3. Placements on a compute-bound model: two stages of equal work.
const wide = mlpSpec([1024, 1024, 1024, 1024, 1024], 784, 10);
const M = 8;
const place: Row[] = [];
const local = await chainruleThroughput({ model: wide, batchSize: 256, microBatches: M, optimizer: 'sgd', lr: 0.01 });
place.push({ name: 'local, 1 stage', value: local.samplesPerSecond, unit: 'samples/s' });
const threads = await chainruleThroughput({ model: wide, batchSize: 256, microBatches: M, stages: 2, placement: 'threads', schedule: '1f1b', optimizer: 'sgd', lr: 0.01 });
place.push({ name: 'threads, 2 stages, 1f1b', value: threads.samplesPerSecond, unit: 'samples/s', ratio: ratioTo(threads.samplesPerSecond, 'local, 1 stage', local.samplesPerSecond) });
const nodes = [await spawnNode(), await spawnNode()];
try {
  const grpc = await chainruleThroughput({ model: wide, batchSize: 256, microBatches: M, stages: 2, placement: 'grpc', nodes: nodes.map((n) => n.address), schedule: '1f1b', optimizer: 'sgd', lr: 0.01 });
  place.push({ name: 'grpc, 2 node processes, 1f1b', value: grpc.samplesPerSecond, unit: 'samples/s', ratio: ratioTo(grpc.samplesPerSecond, 'threads, 2 stages, 1f1b', threads.samplesPerSecond) });
  place.push({ name: 'grpc vs local', value: grpc.samplesPerSecond / local.samplesPerSecond, unit: '×' });
  place.push({ name: 'grpc bubble (measured)', value: grpc.bubble, unit: 'fraction' });
} finally {
  await Promise.all(nodes.map((n) => n.close()));
}
const theory = (2 - 1) / (M + 2 - 1);
place.push({ name: 'threads bubble (measured)', value: threads.bubble, unit: 'fraction', ratio: ratioTo(threads.bubble, 'theoretical (K-1)/(M+K-1)', theory) });
place.push({ name: 'theoretical bubble (K=2, M=8)', value: theory, unit: 'fraction' });
printTable(place, `Placements (MLP 784-1024×5-10, batch 256, 2 stages balanced by parameters, M=${M}; gRPC nodes on loopback)`);
rows.push(...place);

for (const [k, why] of Object.entries(skipped)) console.log(`skipped ${k}: ${why}`);
emitJson(rows, { skipped, quick });
process.exit(0);
