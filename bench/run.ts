/**
 * `npm run bench [-- --json] [-- --quick]`: chainrule against references measured in the
 * same run, reported as ratios (the machines are shared and noisy; absolute times are not
 * comparable across runs).
 *
 * 1. sgemm GFLOP/s per backend (native: per microkernel) on the MLP's shapes (forward,
 *    Xᵀ·dY, dY·Wᵀ) and 1024³, against OpenBLAS on one thread through numpy where installed.
 * 2. Training samples/s of the MLP 784-256-128-10 (batch 64) and the CNN, per backend,
 *    next to TensorFlow.js (pure-JS `cpu` and `wasm` backends) and, where Debian's
 *    python3-torch is installed, PyTorch on one thread, on the same model and data.
 * 3. Scaling, for the wide MLP, the default MLP and the CNN: one process (M=1 and M=8, and
 *    M=1 with 2 kernel threads and with `auto`, measured by the run itself),
 *    R=2 thread replicas beside their ceiling (two processes on half the batch each, in the same
 *    window, never communicating: bench/ceiling.ts) and against one process with their windows
 *    alternated in one run (bench/alternate.ts), K=2 thread stages (every registered schedule), R=2 and K=2 over 2
 *    gRPC node processes on loopback, each against one process with M=1; PyTorch on 1 and 2
 *    threads (OMP_WAIT_POLICY=passive); measured bubble against the schedule's theoretical one
 *    ((K−1)/(M+K−1) for gpipe and 1f1b, (K−1)/(3M+K−1) for zb-h1).
 * 4. Micro-batch overhead: the wide MLP in one process with M=8 against M=1, interleaved
 *    (bench/microbatch.ts): "wide MLP one process M=8 / M=1".
 */
import { schedules, type CoordinatorOptions } from '../coordinator/index.js';
import { spawnNode } from './node-process.js';
import { bubbleFormula, interleaves, theoreticalBubble } from '../coordinator/schedules/index.js';
import { loadMnist } from '../src/data/index.js';
import { mlpSpec, cnnSpec } from '../src/nn/index.js';
import { availableBackends, defaultBackendName, selectBackend } from '../src/tensor/select.js';
import { nativeKernel } from '../src/tensor/native/index.js';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchMicroBatches, microBatchRows } from './microbatch.js';
import { replicaCeiling } from './ceiling.js';
import { benchSgemm } from './sgemm.js';
import { measureThroughput } from './throughput.js';
import { alternateThroughput } from './alternate.js';
import { emitJson, printTable, ratioTo, type Row } from './report.js';
import { tuneHeap } from '../node/heap.js';

// As the chainrule executable does, so the gRPC rows' coordinator is the CLI's (its nodes are CLI processes).
tuneHeap();

const quick = process.argv.includes('--quick');
const seconds = quick ? 1.5 : 4;
const rows: Row[] = [];
const skipped: Record<string, string> = {};
const mnist = loadMnist();

/** Samples/s of training steps (after warm-up) through the Coordinator, best of three windows. */
const chainruleThroughput = (o: CoordinatorOptions, secs = seconds) => measureThroughput(o, mnist, secs);

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


// 1. Kernels.
const gemm = await benchSgemm();
for (const g of gemm) {
  const ref = gemm.find((r) => r.backend === 'js' && r.shape === g.shape);
  rows.push({ name: `sgemm ${g.backend} ${g.shape}`, value: g.gflops, unit: 'GFLOP/s', ratio: g.backend !== 'js' && ref ? ratioTo(g.gflops, `js ${g.shape}`, ref.gflops) : undefined });
}
/**
 * Python interpreters for the references, Debian's first (python3-numpy, python3-torch), then
 * the one on the PATH; each is used for what it has. One thread everywhere.
 */
const pythons = [...new Set(['/usr/bin/python3', 'python3'])];
/**
 * One thread, and OpenBLAS's kernel either detected (core undefined) or forced. An older
 * OpenBLAS (Debian 12's 0.3.21) does not know newer CPUs and falls back to its SSE3 kernel
 * (measured here: 25 GFLOP/s instead of 105, and PyTorch's MLP 2.2× slower), so each
 * interpreter is measured both ways and the references get the faster (see `blasCore`).
 */
function pythonEnv(core?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1', OMP_WAIT_POLICY: 'passive' };
  delete env['OPENBLAS_CORETYPE'];
  delete env['OPENBLAS_L2_SIZE'];
  if (core !== undefined) env['OPENBLAS_CORETYPE'] = core;
  return env;
}
/** The OpenBLAS core that matches this CPU's widest FMA units (Linux; undefined elsewhere). */
function cpuCore(): string | undefined {
  try {
    const flags = new Set((/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/));
    return flags.has('avx512f') ? 'SkylakeX' : flags.has('avx2') && flags.has('fma') ? 'Haswell' : undefined;
  } catch {
    return undefined;
  }
}
/** Per interpreter, the OpenBLAS core setting under which its numpy ran fastest. */
const blasCore = new Map<string, string | undefined>();
const hasModule = (py: string, mod: string): boolean => spawnSync(py, ['-c', `import ${mod}`], { stdio: 'ignore' }).status === 0;

/** OpenBLAS sgemm 1024³ on one thread through each interpreter's numpy (a reference, not a dependency); best of three windows, as ours. */
function numpySgemm(): Array<{ label: string; gflops: number }> {
  const out: Array<{ label: string; gflops: number }> = [];
  const code = 'import numpy as np, time, sys\na=np.random.rand(1024,1024).astype(np.float32); b=np.random.rand(1024,1024).astype(np.float32)\n' +
    'a@b\nbest=0\nfor w in range(3):\n  n=0; t=time.perf_counter()\n  while time.perf_counter()-t<' + Math.min(seconds, 2) / 3 + ': a@b; n+=1\n  best=max(best, 2*1024**3*n/(time.perf_counter()-t)/1e9)\nprint(best, np.__version__)';
  for (const py of pythons) {
    if (!hasModule(py, 'numpy')) { skipped[`openblas (numpy) via ${py}`] = `${py} has no numpy module`; continue; }
    let best: { label: string; gflops: number } | null = null;
    for (const core of [undefined, cpuCore()].filter((c, i) => i === 0 || c !== undefined)) {
      const r = spawnSync(py, ['-c', code], { env: pythonEnv(core), encoding: 'utf8', timeout: 60_000 });
      if (r.status !== 0) { skipped[`openblas (numpy) via ${py}`] = (r.error?.message ?? r.stderr.trim().split('\n').pop() ?? 'failed').slice(0, 200); continue; }
      const [gflops, version] = r.stdout.trim().split(' ');
      if (!best || Number(gflops) > best.gflops) {
        best = { label: `numpy ${version}, ${py}, core ${core ?? 'detected'}`, gflops: Number(gflops) };
        blasCore.set(py, core);
      }
    }
    if (best) out.push(best);
  }
  return out;
}

/** The PyTorch reference (bench/torch_ref.py) on the same digits, one thread: MLP and CNN samples/s. */
function torchReference(): { version: string; mlp: number; cnn: number; matmulGflops: number } | null {
  const py = pythons.find((p) => hasModule(p, 'torch'));
  if (!py) { skipped['pytorch'] = `no python3 with torch (${pythons.join(', ')}): install Debian's python3-torch`; return null; }
  const script = [new URL('./torch_ref.py', import.meta.url), new URL('../../bench/torch_ref.py', import.meta.url)].map((u) => fileURLToPath(u)).find((f) => existsSync(f));
  if (!script) { skipped['pytorch'] = 'bench/torch_ref.py not found'; return null; }
  const dir = mkdtempSync(join(tmpdir(), 'chainrule-bench-'));
  try {
    const { inputs, labels } = mnist.train;
    writeFileSync(join(dir, 'x.f32'), new Uint8Array(inputs.buffer, inputs.byteOffset, inputs.byteLength));
    writeFileSync(join(dir, 'y.i32'), new Uint8Array(Int32Array.from(labels).buffer));
    const r = spawnSync(py, [script, join(dir, 'x.f32'), join(dir, 'y.i32'), String(labels.length), String(seconds)], { env: pythonEnv(blasCore.get(py)), encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) { skipped['pytorch'] = (r.error?.message ?? r.stderr.trim().split('\n').pop() ?? 'failed').slice(0, 200); return null; }
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { torch: string; blas: string; mlp: { samplesPerSecond: number }; cnn: { samplesPerSecond: number }; matmulGflops: number };
    return { version: `${j.torch} (${py}, BLAS_INFO ${j.blas}, OpenBLAS core ${blasCore.get(py) ?? 'detected'})`, mlp: j.mlp.samplesPerSecond, cnn: j.cnn.samplesPerSecond, matmulGflops: j.matmulGflops };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const blas = numpySgemm();
const best = blas.reduce<{ label: string; gflops: number } | null>((b, x) => (b && b.gflops >= x.gflops ? b : x), null);
for (const b of blas) rows.push({ name: `sgemm openblas (${b.label}, 1 thread) 1024³`, value: b.gflops, unit: 'GFLOP/s' });
if (best) {
  // Ours measured again right after OpenBLAS, the better of the two kept (as OpenBLAS gets its best window).
  const again = await benchSgemm({ shape: '1024×1024·1024×1024' });
  for (const g of gemm.filter((r) => r.shape === '1024×1024·1024×1024' && r.backend !== 'js')) {
    const gflops = Math.max(g.gflops, again.find((a) => a.backend === g.backend)?.gflops ?? 0);
    rows.push({ name: `${g.backend} vs openblas 1024³`, value: gflops / best.gflops, unit: '×', ratio: ratioTo(gflops, `openblas (${best.label})`, best.gflops) });
  }
}
printTable(rows, 'sgemm (one thread)');

// 2. Training throughput against TF.js and PyTorch on the same model and data.
const backends = Object.entries(availableBackends()).filter(([, ok]) => ok === true).map(([name]) => name);
for (const [name, ok] of Object.entries(availableBackends())) if (ok !== true) skipped[`backend ${name}`] = ok;
const torch = torchReference();
const train: Row[] = [];
const tfWasmMlp = await tfjs('wasm', 'mlp');
const tfCpuMlp = await tfjs('cpu', 'mlp');
if (tfWasmMlp) train.push({ name: 'tfjs wasm mlp', value: tfWasmMlp, unit: 'samples/s' });
if (tfCpuMlp) train.push({ name: 'tfjs cpu mlp', value: tfCpuMlp, unit: 'samples/s' });
if (torch) train.push({ name: 'pytorch mlp (1 thread)', value: torch.mlp, unit: 'samples/s' });
const mlp: Record<string, number> = {};
for (const backend of backends) {
  selectBackend(backend);
  const r = await chainruleThroughput({ model: mlpSpec(), optimizer: 'sgd', lr: 0.05, backend });
  mlp[backend] = r.samplesPerSecond;
  train.push({ name: `chainrule ${backend} mlp`, value: r.samplesPerSecond, unit: 'samples/s', ratio: tfWasmMlp ? ratioTo(r.samplesPerSecond, 'tfjs wasm mlp', tfWasmMlp) : tfCpuMlp ? ratioTo(r.samplesPerSecond, 'tfjs cpu mlp', tfCpuMlp) : undefined });
  if (torch) train.push({ name: `chainrule ${backend} mlp vs pytorch`, value: r.samplesPerSecond / torch.mlp, unit: '×' });
}
const tfWasmCnn = await tfjs('wasm', 'cnn');
if (tfWasmCnn) train.push({ name: 'tfjs wasm cnn', value: tfWasmCnn, unit: 'samples/s' });
if (torch) train.push({ name: 'pytorch cnn (1 thread)', value: torch.cnn, unit: 'samples/s' });
for (const backend of backends.filter((b) => b !== 'js')) {
  selectBackend(backend);
  const cnn = await chainruleThroughput({ model: cnnSpec(), optimizer: 'sgd', lr: 0.05, backend });
  train.push({ name: `chainrule ${backend} cnn`, value: cnn.samplesPerSecond, unit: 'samples/s', ratio: tfWasmCnn ? ratioTo(cnn.samplesPerSecond, 'tfjs wasm cnn', tfWasmCnn) : undefined });
  if (torch) train.push({ name: `chainrule ${backend} cnn vs pytorch`, value: cnn.samplesPerSecond / torch.cnn, unit: '×' });
}
selectBackend(defaultBackendName());
printTable(train, `Training throughput (batch 64, SGD, built-in digits; default backend: ${defaultBackendName()})`);
rows.push(...train);

// 3. Scaling: every 2-core placement of three models against one process with one micro-batch
// (the best single-process run), and PyTorch on 1 and 2 threads on the same models.
const scalingModels = [
  { key: 'wide', label: 'MLP 784-1024×5-10, batch 256', spec: mlpSpec([1024, 1024, 1024, 1024, 1024], 784, 10), batchSize: 256, lr: 0.01, M: 8 },
  { key: 'mlp', label: 'MLP 784-256-128-10, batch 64', spec: mlpSpec(), batchSize: 64, lr: 0.05, M: 4 },
  { key: 'cnn', label: 'CNN, batch 64', spec: cnnSpec(), batchSize: 64, lr: 0.05, M: 4 },
] as const;
/** PyTorch (bench/torch_ref.py) on one model and `threads` threads; null (with the reason in `skipped`) without torch. */
function torchScaling(model: string, batch: number, threads: number): number | null {
  const py = pythons.find((p) => hasModule(p, 'torch'));
  const script = [new URL('./torch_ref.py', import.meta.url), new URL('../../bench/torch_ref.py', import.meta.url)].map((u) => fileURLToPath(u)).find((f) => existsSync(f));
  if (!py || !script) { skipped[`pytorch ${model} ${threads} threads`] = py ? 'bench/torch_ref.py not found' : 'no python3 with torch: install Debian\'s python3-torch'; return null; }
  const dir = mkdtempSync(join(tmpdir(), 'chainrule-bench-'));
  try {
    const { inputs, labels } = mnist.train;
    writeFileSync(join(dir, 'x.f32'), new Uint8Array(inputs.buffer, inputs.byteOffset, inputs.byteLength));
    writeFileSync(join(dir, 'y.i32'), new Uint8Array(Int32Array.from(labels).buffer));
    const env = { ...pythonEnv(blasCore.get(py)), OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
    const r = spawnSync(py, [script, join(dir, 'x.f32'), join(dir, 'y.i32'), String(labels.length), String(seconds), String(threads), model, String(batch)], { env, encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) { skipped[`pytorch ${model} ${threads} threads`] = (r.error?.message ?? r.stderr.trim().split('\n').pop() ?? 'failed').slice(0, 200); return null; }
    return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { samplesPerSecond: number }).samplesPerSecond;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const scalingNodes = [await spawnNode(), await spawnNode()];
const scaling: Row[] = [];
const twoStageSchedules = Object.keys(schedules);
try {
  for (const m of scalingModels) {
    const base: CoordinatorOptions = { model: m.spec, batchSize: m.batchSize, optimizer: 'sgd', lr: m.lr };
    const nodes = scalingNodes.map((n) => n.address);
    const one = (await chainruleThroughput(base)).samplesPerSecond;
    const name = (what: string) => `${m.key}: ${what}`;
    const ref = name('one process, M=1');
    scaling.push({ name: ref, value: one, unit: 'samples/s' });
    const add = (what: string, v: number, to = ref, refValue = one) => scaling.push({ name: name(what), value: v, unit: 'samples/s', ratio: ratioTo(v, to, refValue) });
    add(`one process, M=${m.M}`, (await chainruleThroughput({ ...base, microBatches: m.M })).samplesPerSecond);
    // One actor on both cores: each large product split between 2 kernel threads (native only).
    const kt = availableBackends().native === true ? (await chainruleThroughput({ ...base, kernelThreads: 2, backend: 'native' })).samplesPerSecond : 0;
    if (kt > 0) add('one process, M=1, 2 kernel threads', kt);
    else skipped[name('kernel threads')] = 'the native backend is not built';
    // kernelThreads 'auto': the count its first steps measured faster.
    const auto = (await chainruleThroughput({ ...base, kernelThreads: 'auto' })).samplesPerSecond;
    add('one process, M=1, kernel threads auto', auto);
    const r2 = (await chainruleThroughput({ ...base, placement: 'threads', replicas: 2 })).samplesPerSecond;
    add('threads, R=2 replicas', r2);
    // The same comparison with their windows alternated in one run (bench/alternate.ts): the
    // figure the R=2 target is read from, since one after the other the host's drift moves it.
    const [oneAlt, r2Alt] = await alternateThroughput([base, { ...base, placement: 'threads', replicas: 2 }], mnist, 2 * seconds);
    scaling.push({ name: name('threads R=2 / one process M=1, windows alternated'), value: r2Alt!.samplesPerSecond / oneAlt!.samplesPerSecond, unit: '×' });
    // What two single-threaded replicas could reach here at most: two processes on half the
    // batch each, same window, no reduction or coordinator (bench/ceiling.ts).
    add('ceiling of R=2: 2 processes at half the batch, no communication', (await replicaCeiling(base, seconds)).samplesPerSecond);
    // The recovery commit moves every stage's state each step: its cost, measured beside.
    add('threads, R=2 replicas, --commit-every 0', (await chainruleThroughput({ ...base, placement: 'threads', replicas: 2, commitEvery: 0 })).samplesPerSecond);
    let threadsK2 = 0;
    for (const schedule of twoStageSchedules) {
      // An interleaved schedule with two chunks per stage (with one it is 1F1B).
      const V = interleaves(schedule) ? 2 : 1;
      const label = `${schedule}${V > 1 ? `, V=${V}` : ''}`;
      const r = await chainruleThroughput({ ...base, placement: 'threads', stages: 2, microBatches: m.M, schedule, ...(V > 1 ? { virtualStages: V } : {}) });
      add(`threads, K=2 stages, ${label}, M=${m.M}`, r.samplesPerSecond);
      if (schedule === '1f1b') threadsK2 = r.samplesPerSecond;
      const theory = theoreticalBubble(schedule, 2, m.M, V);
      scaling.push({ name: name(`bubble, threads K=2 ${label} M=${m.M} (measured)`), value: r.bubble, unit: 'fraction', ratio: ratioTo(r.bubble, `theoretical ${bubbleFormula(schedule)} = ${theory.toFixed(3)}`, theory) });
    }
    const g2 = (await chainruleThroughput({ ...base, placement: 'grpc', nodes, replicas: 2 })).samplesPerSecond;
    add('grpc (2 nodes, loopback), R=2 replicas', g2);
    scaling.push({ name: name('grpc R=2 vs threads R=2'), value: g2 / r2, unit: '×' });
    const gk = (await chainruleThroughput({ ...base, placement: 'grpc', nodes, stages: 2, microBatches: m.M, schedule: '1f1b' })).samplesPerSecond;
    add(`grpc (2 nodes, loopback), K=2 stages, 1f1b, M=${m.M}`, gk);
    if (threadsK2 > 0) scaling.push({ name: name('grpc K=2 vs threads K=2 (1f1b)'), value: gk / threadsK2, unit: '×' });
    for (const threads of [1, 2]) {
      const t = torchScaling(m.key, m.batchSize, threads);
      if (t !== null) add(`pytorch, ${threads} thread${threads > 1 ? 's' : ''}`, t);
    }
    const best2 = Math.max(kt, auto, r2, threadsK2, g2, gk);
    const torch2 = scaling.find((r) => r.name === name('pytorch, 2 threads'));
    if (torch2) scaling.push({ name: name('best 2-core chainrule vs pytorch 2 threads'), value: best2 / torch2.value, unit: '×' });
  }
} finally {
  await Promise.all(scalingNodes.map((n) => n.stop()));
}
printTable(scaling, 'Scaling on this machine (2 cores): samples/s and ratios to one process with one micro-batch');
rows.push(...scaling);

// 4. Micro-batch overhead in one process (default backend), M=1 and M=8 windows interleaved.
const M = 8;
const micro = microBatchRows(await benchMicroBatches({ microBatches: M, seconds: quick ? 3 : 8, data: mnist }));
printTable(micro, `Micro-batch overhead (MLP 784-1024×5-10, batch 256, SGD, one process, M=1 and M=${M} interleaved)`);
rows.push(...micro);

for (const [k, why] of Object.entries(skipped)) console.log(`skipped ${k}: ${why}`);
emitJson(rows, { skipped, quick, defaultBackend: defaultBackendName(), nativeKernel: nativeKernel(), pytorch: torch?.version ?? null });
process.exit(0);
