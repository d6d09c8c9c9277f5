/**
 * The measurements behind `chainrule plan`, taken in this process on the chosen backend:
 * each layer's forward and backward (each on a tape of its own, as a stage runs it) at every
 * micro-batch size the candidate configurations need, each layer's optimizer step, the
 * memory rates of the all-reduce (copy, add), the codec (msgpackr encode and the checked
 * decode), and the per-message cost of each link kind: a real MessagePort round trip between
 * two worker threads, a real piscina task round trip, and a real gRPC stream to a node
 * started in this process.
 */
import { readFileSync, readdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcess } from 'node:child_process';
import { MessageChannel, Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { Tensor } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/rng.js';
import { backend, withKernelThreads } from '../src/tensor/backend.js';
import { Tape } from '../src/autograd/index.js';
import { Sequential, getLoss, type ModelSpec } from '../src/nn/index.js';
import { createOptimizer, type OptimizerSpec } from '../src/optim/index.js';
import { Arena } from '../src/tensor/arena.js';
import { measureContention } from './plan-contention.js';
import { decodeFromPort, encodeForPort, type Targets } from '../src/wire/index.js';
import { makeDataset, type Dataset } from '../src/data/index.js';
import { makeClient, StreamLink, unary } from '../node/grpc-common.js';
import { decodeEnvelope, deserializeEnvelope, envelopeFrame } from '../node/envelope.js';
import { startNode, type RunningNode } from '../node/server.js';

/** Milliseconds by micro-batch size (the key is the size as text, for JSON). */
export type BySize = Record<string, number>;

export interface LayerProfile {
  type: string;
  parameters: number;
  /** Values per sample leaving the layer (what the next stage receives). */
  outputSize: number;
  /** A forward after the step's first (a stage's dense layers reuse the weight packed by the first). */
  forwardMs: BySize;
  /** The step's first forward (it packs the weights). */
  forwardFirstMs: BySize;
  /**
   * The backward of a micro-batch after the step's first, as a stage runs it (micro-batch mode):
   * a dense layer's weight gradient is deferred to the W pass, so this is its input gradient.
   */
  backwardMs: BySize;
  /** The first backward of a step: the gradient buffers are zero-filled first. */
  backwardFirstMs: BySize;
  /** The deferred weight gradient of one micro-batch of this size (the W pass adds it). */
  weightMs: BySize;
  /** A step of one micro-batch (the plain path: nothing packed for reuse or deferred): its forward, and its backward with the weight gradient. */
  soloForwardMs: BySize;
  soloBackwardMs: BySize;
  /**
   * The backwards as the model's first stage runs this layer when no layer before it has
   * parameters (it computes no input gradient): for the layers up to the first with parameters.
   */
  head?: { backwardMs: BySize; backwardFirstMs: BySize; soloBackwardMs: BySize };
  /** One optimizer step over this layer's parameters. */
  optimizerMs: number;
}

/** A linear cost: a fixed part and a part per byte. */
export interface LinearCost { fixedMs: number; msPerByte: number }

export interface LinkProfile {
  /** One way through a MessagePort between two worker threads (a transferred buffer), without the codec. */
  threadHopMs: number;
  /** One way of a piscina task (the coordinator's request to a worker, or its reply), without the codec. */
  piscinaHopMs: number;
  /** gRPC framing and transport CPU per message on a delivery stream (both ends together), without the codec. */
  grpc: LinearCost;
  /** CPU of one small unary Call (the coordinator's request and the node's answer, both ends together). */
  grpcCallMs: number;
  /** Where the gRPC node of the measurement ran: a process of its own (Linux), this process, or nowhere (defaults). */
  grpcNode: 'process' | 'in-process' | null;
  /** One-way latency between two processes on this host's loopback (added to the CPU costs). */
  loopbackLatencyMs: number;
  /** How the link kinds were obtained: measured or the default. */
  source: Record<'threadHopMs' | 'piscinaHopMs' | 'grpc' | 'grpcCallMs', 'measured' | 'default'>;
}

/** What the runtime costs beyond the layers: per step (the coordinator's request and answer) and per action. */
/**
 * What the runtime costs beyond the layers, in CPU milliseconds, from real steps on a tiny
 * model (see `calibrateRuntime`): the request path, the action loop, the thread links, and
 * the work V8's helper threads do for us (freeing array buffers), which competes for the cores.
 */
export interface RuntimeProfile {
  /** The coordinator's and the in-process actor's bookkeeping per step (local placement). */
  stepMs: number;
  /** The actor's per action (forward or backward) beyond the layers: the action loop, the tape, the inbox. */
  actionMs: number;
  /** The coordinator's per request to a worker thread: encoding, piscina, the reply's decoding. */
  requestMs: number;
  /** The worker's per request: piscina, decoding, answering. */
  workerRequestMs: number;
  /** A worker's per end of a peer message (sending or receiving): MessagePort, codec, acknowledgement. */
  messageMs: number;
  /** V8's helper threads, per step in-process, per action, per request to a worker, per peer message. */
  helperStepMs: number;
  helperActionMs: number;
  helperRequestMs: number;
  helperMessageMs: number;
  source: 'measured' | 'default';
}

export interface ModelProfile {
  backend: string;
  optimizer: string;
  repeats: number;
  /** Values per input sample. */
  inputSize: number;
  microBatchSizes: number[];
  layers: LayerProfile[];
  /** The loss on the last stage's output (forward; backward). */
  loss: { forwardMs: BySize; backwardMs: BySize };
  /**
   * CPU of V8's helper threads per micro-batch through the whole model (forward and backward:
   * freeing the tapes' array buffers), measured beside the layers (Linux; 0 elsewhere).
   */
  helperMs: BySize;
  /** Whether the loss targets are the inputs (an autoencoder): the last stage is sent the inputs too. */
  autoencoder: boolean;
  memory: {
    /** Float32Array.set, per byte. */
    copyMsPerByte: number;
    /** The backend's element-wise add (acc += part), per float. */
    addMsPerFloat: number;
  };
  /** A gRPC envelope's encode (envelopeFrame) and its checked decode, by tensor bytes. */
  codec: { encode: LinearCost; decode: LinearCost };
  /** encodeForPort (each tensor copied once) and the checked decodeFromPort, by tensor bytes: worker threads'. */
  portCodec: { encode: LinearCost; decode: LinearCost };
  links: LinkProfile;
  runtime: RuntimeProfile;
  /**
   * Measured memory contention (plan-contention.ts): each further thread computing this model at
   * once on a host slows every one by this factor. Absent when the links were not measured.
   */
  contention?: number;
  /**
   * The layers (and loss) again with each large product split among `kernelThreads` threads,
   * for one-process configurations that use them (ProfileOptions.kernelThreads).
   */
  threaded?: { kernelThreads: number; microBatchSizes: number[]; layers: LayerProfile[]; loss: ModelProfile['loss'] }[];
  /** Wall-clock seconds the profile took. */
  seconds: number;
}

export interface ProfileOptions {
  spec: ModelSpec;
  /** Real inputs for the forwards (the first rows), else seeded normal values. */
  data?: Dataset;
  microBatchSizes: number[];
  optimizer: OptimizerSpec;
  /** Timed repetitions per size (after one warm-up); each layer keeps its median. Default 5. */
  repeats?: number;
  seed?: number;
  /** Measure the links (worker threads, piscina, gRPC) and the runtime's overheads; when false, the defaults below. Default true. */
  measureLinks?: boolean;
  /** Progress lines (to stderr in the CLI). */
  log?: (line: string) => void;
  /** Kernel thread counts (above 1) to profile the layers with too, at these micro-batch sizes (the backend must have kernel threads). */
  kernelThreads?: { counts: number[]; microBatchSizes: number[] };
}

/**
 * Link costs when not measured: typical of a 2-core x86 VM on Node 20 (thread hop ~60 µs,
 * piscina ~80 µs, gRPC ~0.25 ms plus 1.3 ms per MB for both ends, a unary call ~0.8 ms).
 */
/** Typical of a 2-core x86 VM on Node 20 (measured there with `calibrateRuntime`). */
export const defaultRuntime: RuntimeProfile = {
  stepMs: 0.03, actionMs: 0.01, requestMs: 0.06, workerRequestMs: 0.15, messageMs: 0.02,
  helperStepMs: 0.1, helperActionMs: 0.01, helperRequestMs: 0.25, helperMessageMs: 0.01, source: 'default',
};

export const defaultLinks: LinkProfile = {
  threadHopMs: 0.06,
  piscinaHopMs: 0.08,
  grpc: { fixedMs: 0.25, msPerByte: 1.3e-6 },
  grpcCallMs: 0.8,
  grpcNode: null,
  loopbackLatencyMs: 0.05,
  source: { threadHopMs: 'default', piscinaHopMs: 'default', grpc: 'default', grpcCallMs: 'default' },
};

const now = () => performance.now();
/** This process's CPU time in ms (getrusage: precise on Linux). */
const cpuNow = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };

/**
 * A stopwatch that reads both clocks: on a quiet machine the wall clock (the CPU clock also
 * counts the helper threads of V8's GC), on a loaded one the CPU clock (the wall clock also
 * counts the time other processes held the core). Each op keeps the smaller.
 */
function stopwatch(): () => number {
  const w = now();
  const c = cpuNow();
  return () => Math.min(now() - w, Math.max(0, cpuNow() - c));
}
const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
/** The q-quantile (0..1) of the values: a low one stands for a quiet machine. */
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

function inputsFor(spec: ModelSpec, mb: number, data: Dataset | undefined, rng: Rng): Tensor {
  const per = sizeOf(spec.inputShape);
  const x = new Float32Array(mb * per);
  if (data && sizeOf(data.inputShape) === per && data.size > 0) {
    for (let i = 0; i < mb; i++) x.set(data.inputs.subarray((i % data.size) * per, (i % data.size + 1) * per), i * per);
  } else {
    for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  }
  return new Tensor(x, [mb, ...spec.inputShape]);
}

function targetsFor(spec: ModelSpec, x: Tensor, out: Tensor, data: Dataset | undefined, rng: Rng): Targets {
  if (spec.autoencoder) return x;
  if ((spec.loss ?? 'softmaxCrossEntropy') === 'softmaxCrossEntropy') {
    const classes = out.shape[out.shape.length - 1]!;
    const labels = data?.labels;
    return Int32Array.from({ length: out.shape[0]! }, (_, i) => (labels ? labels[i % labels.length]! % classes : rng.int(classes)));
  }
  return new Tensor(Float32Array.from({ length: out.size }, () => rng.normal()), out.shape);
}

/** Times one micro-batch size: per layer forward, first backward, accumulating backward; the loss. */
/** Each layer's forward and backward (median ms) at micro-batches of `mb`; `helpers`: also V8's helper-thread CPU per pass (300 ms more). */
function profileSize(model: Sequential, spec: ModelSpec, mb: number, repeats: number, data: Dataset | undefined, seed: number, helpers = true) {
  const rng = new Rng(seed);
  const L = model.layers.length;
  const loss = getLoss(spec.loss ?? 'softmaxCrossEntropy');
  const x0 = inputsFor(spec, mb, data, rng);
  const fwd: number[][] = Array.from({ length: L }, () => []);
  const fwdFirst: number[][] = Array.from({ length: L }, () => []);
  const soloF: number[][] = Array.from({ length: L }, () => []);
  const soloB: number[][] = Array.from({ length: L }, () => []);
  const wgt: number[][] = Array.from({ length: L }, () => []);
  const bwd: number[][] = Array.from({ length: L }, () => []);
  const first: number[][] = Array.from({ length: L }, () => []);
  // The backwards again as the model's first stage runs its leading layers: a layer with no
  // parameters before it computes no input gradient (nobody needs it), e.g. a conv after a reshape.
  const firstParam = model.layers.findIndex((l) => l.params.length > 0);
  const head = { bwd: Array.from({ length: L }, () => [] as number[]), first: Array.from({ length: L }, () => [] as number[]), solo: Array.from({ length: L }, () => [] as number[]) };
  const lossF: number[] = [];
  const lossB: number[] = [];
  let targets: Targets | null = null;
  // As in a stage: a pass takes its buffers from a step arena that the next pass reuses.
  const arena = new Arena();
  /** One forward and backward through every layer, each on a tape of its own (a stage boundary may fall after any layer); `rep` > 0 records. */
  const pass = (rep: number, which: number, solo = false, asHead = false) => {
    arena.reset();
    const tapes: { tape: Tape; x: Tensor; out: Tensor }[] = [];
    let h = x0;
    for (let i = 0; i < L; i++) {
      // Stage 0 never needs its input gradient; every later stage sends one back (asHead: the
      // first stage's leading layers, up to its first layer with parameters, need none either).
      const x = new Tensor(h.data, h.shape, asHead ? i > firstParam : i > 0);
      const tape = new Tape();
      const t = stopwatch();
      const out = arena.run(() => tape.run(() => model.layers[i]!.forward(x, { training: true, seed, step: rep, microBatch: which, auxLosses: [], index: i, microBatching: !solo })));
      if (rep > 0 && !asHead) (solo ? soloF : which === 0 ? fwdFirst : fwd)[i]!.push(t());
      tapes.push({ tape, x, out });
      h = out;
    }
    const y = new Tensor(h.data, h.shape, true);
    targets ??= targetsFor(spec, x0, y, data, rng);
    const lt = new Tape();
    let t = stopwatch();
    const l = arena.run(() => lt.run(() => loss.compute(y, targets!, 'sum')));
    if (rep > 0) lossF.push(t());
    t = stopwatch();
    arena.run(() => lt.backwardFrom([[l, undefined]]));
    if (rep > 0) lossB.push(t());
    let dy = y.grad!;
    for (let i = L - 1; i >= 0; i--) {
      const { tape, x, out } = tapes[i]!;
      const t0 = stopwatch();
      arena.run(() => tape.backwardFrom([[out, dy]]));
      if (rep > 0) (asHead ? (solo ? head.solo : which === 0 ? head.first : head.bwd) : (solo ? soloB : which === 0 ? first : bwd))[i]!.push(t0());
      dy = x.grad ?? Tensor.zeros(x.shape, x.dtype);
    }
  };
  // A step of two micro-batches, as a stage runs it: the first packs the weights, the second
  // reuses them, and the W pass adds both micro-batches' deferred weight gradients at the end.
  for (let rep = 0; rep <= repeats; rep++) {
    for (const [, p] of model.parameters()) p.zeroGrad();
    pass(rep, 0);
    pass(rep, 1);
    for (let i = 0; i < L; i++) {
      // A layer without parameters defers nothing.
      if (model.layers[i]!.params.length === 0) { if (rep > 0) wgt[i]!.push(0); continue; }
      const t = stopwatch();
      arena.run(() => model.layers[i]!.flushDeferredGrads());
      if (rep > 0) wgt[i]!.push(t() / 2);
    }
  }
  // A step of one micro-batch runs the plain path (nothing packed or deferred): timed as such.
  for (let rep = 0; rep <= repeats; rep++) {
    for (const [, p] of model.parameters()) p.zeroGrad();
    pass(rep, 0, true);
  }
  // The first stage's leading layers, when a layer without parameters leads the model.
  if (firstParam > 0) {
    for (let rep = 0; rep <= repeats; rep++) {
      for (const [, p] of model.parameters()) p.zeroGrad();
      pass(rep, 0, false, true);
      pass(rep, 1, false, true);
      for (const [, p] of model.parameters()) p.zeroGrad();
      pass(rep, 0, true, true);
    }
  }
  // V8's helper threads (freeing what the arena does not hold), per pass: over at least 300 ms
  // of passes, as their clock ticks every 10 ms.
  let helperMs = 0;
  if (repeats > 0 && helpers) {
    const h0 = helperCpu();
    const end = now() + 300;
    let passes = 0;
    while (passes < 2 || now() < end) { pass(0, 1); passes++; }
    helperMs = Math.max(0, helperCpu() - h0) / passes;
  }
  // The median: on a quiet machine it is the fastest; on a loaded one it also counts the caches
  // the neighbours keep evicting, as a real step does.
  const mid = (xs: number[]) => quantile(xs, 0.5);
  const headOf = (xs: number[][]) => xs.map((v, i) => (firstParam > 0 && i <= firstParam ? mid(v) : undefined));
  return { head: { bwd: headOf(head.bwd), first: headOf(head.first), solo: headOf(head.solo) }, fwd: fwd.map(mid), fwdFirst: fwdFirst.map(mid), soloF: soloF.map(mid), soloB: soloB.map(mid), bwd: bwd.map(mid), first: first.map(mid), weight: wgt.map(mid), lossF: mid(lossF), lossB: mid(lossB), helperMs };
}

function fitLinear(small: { bytes: number; ms: number }, large: { bytes: number; ms: number }): LinearCost {
  const msPerByte = Math.max(0, (large.ms - small.ms) / (large.bytes - small.bytes));
  return { fixedMs: Math.max(0, small.ms - msPerByte * small.bytes), msPerByte };
}

const activation = (floats: number) => ({
  type: 'activation' as const, run: 'run-plan', stage: 9999, replica: 0, step: 0, microBatch: 0,
  x: new Tensor(Float32Array.from({ length: floats }, (_, i) => (i % 7) * 0.25), [floats]),
});

function timeMin(fn: () => void, reps: number): number {
  fn();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = stopwatch();
    fn();
    best = Math.min(best, t());
  }
  return best;
}

/** A codec's encode and checked decode of one activation message, by tensor bytes (MessagePack for gRPC, the structured-clone form for threads). */
function profileCodec<B>(encode: (msg: ReturnType<typeof activation>) => B, decode: (b: B) => unknown): { encode: LinearCost; decode: LinearCost } {
  const sizes = [256, 1 << 20];
  const enc: { bytes: number; ms: number }[] = [];
  const dec: { bytes: number; ms: number }[] = [];
  for (const n of sizes) {
    const msg = activation(n);
    const reps = n > 1000 ? 5 : 200;
    enc.push({ bytes: 4 * n, ms: timeMin(() => { encode(msg); }, reps) });
    const encoded = encode(msg);
    dec.push({ bytes: 4 * n, ms: timeMin(() => { decode(encoded); }, reps) });
  }
  return { encode: fitLinear(enc[0]!, enc[1]!), decode: fitLinear(dec[0]!, dec[1]!) };
}

function profileMemory(floats: number): ModelProfile['memory'] {
  const n = Math.max(1 << 16, Math.min(floats, 1 << 23));
  const a = new Float32Array(n).fill(1);
  const b = new Float32Array(n).fill(2);
  const copy = timeMin(() => { a.set(b); }, 5);
  const add = timeMin(() => { backend().binary('add', a, [n], b, [n], a, [n]); }, 5);
  return { copyMsPerByte: copy / (4 * n), addMsPerFloat: add / n };
}

/**
 * One-way time (a low quantile) of a small transferred buffer between two worker threads over
 * a MessagePort, the receiver idle when it comes (as a stage waiting for its neighbour is):
 * the sender computes for `gapMs` before each send, so the receiver's core has gone idle, and
 * waking it is part of the cost (on a VM, an interrupt to a halted virtual CPU).
 */
async function threadHop(rounds = 200, gapMs = 0.5): Promise<number> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const port = workerData.port;
    const spin = (ms) => { const end = performance.now() + ms; while (performance.now() < end); };
    if (workerData.lead) {
      const times = [];
      let t = 0, n = 0;
      const go = (b) => { spin(workerData.gapMs); t = performance.now(); port.postMessage(b, [b.buffer]); };
      port.on('message', (b) => {
        times.push(performance.now() - t);
        if (++n === workerData.rounds) { parentPort.postMessage(times); port.close(); return; }
        go(b);
      });
      go(new Uint8Array(64));
    } else {
      port.on('message', (b) => port.postMessage(b, [b.buffer]));
    }`;
  const { port1, port2 } = new MessageChannel();
  const echo = new Worker(code, { eval: true, workerData: { port: port2, lead: false }, transferList: [port2] });
  const lead = new Worker(code, { eval: true, workerData: { port: port1, lead: true, rounds, gapMs }, transferList: [port1] });
  try {
    const times = await new Promise<number[]>((resolve, reject) => {
      lead.once('message', resolve);
      lead.once('error', reject);
      echo.once('error', reject);
    });
    return quantile(times.slice(5), 0.1) / 2;
  } finally {
    await Promise.all([echo.terminate(), lead.terminate()]);
  }
}

/** One-way time (a low quantile) of a piscina task to a one-thread pool (as the threads transport runs them), the worker idle before each. */
async function piscinaHop(rounds = 150, gapMs = 0.5): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'chainrule-plan-'));
  const file = join(dir, 'echo.mjs');
  writeFileSync(file, 'export default function echo(task) { return task; }\n');
  const pool = new Piscina({ filename: file, minThreads: 1, maxThreads: 1, idleTimeout: Infinity, concurrentTasksPerWorker: 4 });
  try {
    const times: number[] = [];
    for (let i = 0; i <= rounds; i++) {
      const end = now() + gapMs;
      while (now() < end); // the coordinator computes (shards the next minibatch) while the worker idles
      const b = new Uint8Array(64);
      const t = now();
      await pool.run(b, { transferList: [b.buffer] });
      if (i > 0) times.push(now() - t);
    }
    return quantile(times, 0.1) / 2;
  } finally {
    await pool.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** CPU ms of this process's threads other than the main one (V8's helpers when no worker runs); 0 where unknown. */
function helperCpu(): number {
  const t = threadCpu();
  if (!t) return 0;
  let ms = 0;
  for (const [tid, v] of t) if (tid !== String(process.pid)) ms += v;
  return ms;
}

/** CPU ms of each thread of this process (Linux: /proc/self/task), or null elsewhere. */
function threadCpu(): Map<string, number> | null {
  try {
    const out = new Map<string, number>();
    for (const t of readdirSync('/proc/self/task')) {
      // utime and stime: fields 14 and 15, in clock ticks (100 per second).
      const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      out.set(t, ((Number(f[11]) + Number(f[12])) * 1000) / 100);
    }
    return out;
  } catch {
    return null;
  }
}

/**
 * The runtime's own costs (see RuntimeProfile), from the CPU time of each thread over real
 * steps of the Coordinator on a two-layer model: in this process with 1 and 4 micro-batches,
 * then on worker threads with 2 replicas and with 2 stages and 4 micro-batches. The layers'
 * share, from their profile, is taken off; what remains is the runtime's. Linux only (per-thread
 * CPU clocks); elsewhere the defaults.
 */
export async function calibrateRuntime(seed = 42, steps = 600): Promise<RuntimeProfile> {
  if (threadCpu() === null) return { ...defaultRuntime };
  const { Coordinator } = await import('./coordinator.js');
  const spec: ModelSpec = { inputShape: [16], layers: [{ type: 'dense', inputs: 16, units: 8 }, { type: 'dense', inputs: 8, units: 4 }], loss: 'softmaxCrossEntropy' };
  const rng = new Rng(seed);
  const n = 64;
  const ds = makeDataset({ name: 'plan-calibration', inputShape: [16], numClasses: 4, inputs: Float32Array.from({ length: n * 16 }, () => rng.normal()), labels: Int32Array.from({ length: n }, (_, i) => i % 4) });
  const batch = 16;
  const x = new Tensor(ds.inputs.slice(0, batch * 16), [batch, 16]);
  const y = ds.labels.slice(0, batch);
  const model = Sequential.fromSpec(spec, seed);
  const sizes = new Map([16, 8, 4].map((mb) => [mb, profileSize(model, spec, mb, 30, ds, seed)]));
  const opt = createOptimizer({ type: 'sgd', lr: 1e-6 });
  const optMs = model.layers.map((l) => {
    const refs = l.params.map(([name, p]) => ({ name, value: p.data, grad: new Float32Array(p.size) }));
    return timeMin(() => opt.step(refs, { lr: 1e-6, gradScale: 1 }), 50);
  });
  /** Expected layer CPU of one actor holding layers [lo, hi) for one step of M micro-batches of mb. */
  const layersMs = (lo: number, hi: number, mb: number, M: number) => {
    const r = sizes.get(mb)!;
    let f = 0, f1 = 0, b = 0, b1 = 0, w = 0, o = 0;
    for (let i = lo; i < hi; i++) { f += r.fwd[i]!; f1 += r.fwdFirst[i]!; b += r.bwd[i]!; b1 += r.first[i]!; w += r.weight[i]!; o += optMs[i]!; }
    if (hi === spec.layers.length) { f += r.lossF; f1 += r.lossF; b += r.lossB; b1 += r.lossB; }
    // As the plan counts a step: one micro-batch on the plain path; else the first forward and
    // backward, the others, the W pass; and the update.
    if (M === 1) {
      let sf = 0, sb = 0;
      for (let i = lo; i < hi; i++) { sf += r.soloF[i]!; sb += r.soloB[i]!; }
      if (hi === spec.layers.length) { sf += r.lossF; sb += r.lossB; }
      return sf + sb + o;
    }
    return f1 + (M - 1) * f + b1 + (M - 1) * b + M * w + o;
  };
  /** Per-step CPU of the main thread, of each new (worker) thread, and of the helpers. */
  const run = async (o: Record<string, unknown>) => {
    const before = threadCpu()!;
    const c = new Coordinator({ model: spec, dataset: { train: ds, test: ds }, batchSize: batch, optimizer: 'sgd', lr: 1e-6, epochs: 1, seed, ...o });
    try {
      await c.open();
      for (let i = 0; i < 30; i++) await c.step(x, y);
      const t0 = threadCpu()!;
      for (let i = 0; i < steps; i++) await c.step(x, y);
      const t1 = threadCpu()!;
      const main = String(process.pid);
      let helpers = 0;
      const workers: number[] = [];
      for (const [tid, ms] of t1) {
        const d = (ms - (t0.get(tid) ?? 0)) / steps;
        if (tid === main) continue;
        if (before.has(tid)) helpers += d;
        else workers.push(d);
      }
      return { main: (t1.get(main)! - t0.get(main)!) / steps, workers, helpers };
    } finally {
      await c.close();
    }
  };
  const pos = (v: number) => Math.max(0, v);
  // In-process: main = layers + step + actions·a; helpers = h_step + actions·h_action.
  const l1 = await run({});
  const l4 = await run({ microBatches: 4 });
  const actionMs = pos((l4.main - layersMs(0, 2, 4, 4) - (l1.main - layersMs(0, 2, 16, 1))) / 6);
  const stepMs = pos(l1.main - layersMs(0, 2, 16, 1) - 2 * actionMs);
  const helperActionMs = pos((l4.helpers - l1.helpers) / 6);
  const helperStepMs = pos(l1.helpers - 2 * helperActionMs);
  // Two replicas on threads: the coordinator's and each worker's per request.
  const r2 = await run({ placement: 'threads', replicas: 2 });
  const requestMs = pos(r2.main / 2);
  const workerRequestMs = pos(r2.workers.reduce((a, b) => a + b, 0) / 2 - layersMs(0, 2, 8, 1) - 2 * actionMs);
  const helperRequestMs = pos((r2.helpers - 4 * helperActionMs) / 2);
  // Two stages, four micro-batches: 8 peer messages, each stage at 8 message ends.
  const k2 = await run({ placement: 'threads', stages: 2, microBatches: 4 });
  const workersMs = k2.workers.reduce((a, b) => a + b, 0);
  const messageMs = pos((workersMs - layersMs(0, 1, 4, 4) - layersMs(1, 2, 4, 4) - 16 * actionMs - 2 * workerRequestMs) / 16);
  const helperMessageMs = pos((k2.helpers - 2 * helperRequestMs - 16 * helperActionMs) / 8);
  return { stepMs, actionMs, requestMs, workerRequestMs, messageMs, helperStepMs, helperActionMs, helperRequestMs, helperMessageMs, source: 'measured' };
}

/**
 * gRPC transport CPU per message (both ends: this process is client and node at once), by
 * round trips on a delivery stream to a node started here; the node decodes each message and
 * answers that no such stage is here, which costs what an acknowledgement costs.
 */
/** CPU ms of another process (Linux: /proc/PID/stat, 10 ms ticks), or null. */
function processCpu(pid: number): number | null {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

/** A `chainrule node` in a process of its own on a loopback port (as the bench starts them). */
async function spawnNode(): Promise<{ address: string; pid: number; close(): void }> {
  const fromSource = import.meta.url.endsWith('.ts');
  const bin = fileURLToPath(new URL(`./bin.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [...(fromSource ? ['--import', 'tsx'] : []), bin, 'node', '--port', '0'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const address = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error('chainrule node did not start within 30 s')), 30_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (\S+)/.exec(out);
        if (m) { clearTimeout(timer); resolve(m[1]!); }
      });
      child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`chainrule node exited with ${code}`)); });
    });
    return { address, pid: child.pid!, close: () => { child.kill('SIGTERM'); } };
  } catch (e) {
    child.kill('SIGTERM');
    throw e;
  }
}

/**
 * gRPC CPU per message on a delivery stream and per unary Call, both ends together, without
 * the codec: round trips to a node that decodes each message and answers that no such stage is
 * there (what an acknowledgement costs). The node runs in a process of its own where the
 * per-process CPU clocks can be read (Linux): the sockets between processes cost far more than
 * within one; elsewhere in this process.
 */
async function grpcCost(codec: ModelProfile['codec']): Promise<{ stream: LinearCost; callMs: number; where: 'process' | 'in-process' }> {
  let child: Awaited<ReturnType<typeof spawnNode>> | null = null;
  let node: RunningNode | null = null;
  if (processCpu(process.pid) !== null) {
    try {
      child = await spawnNode();
    } catch {
      child = null;
    }
  }
  if (!child) node = await startNode({ port: 0 });
  const address = child ? child.address : node!.address;
  const client = makeClient(address);
  const link = new StreamLink(client, address, 30_000);
  /** CPU ms per call of `fn`: this process and the node's, over enough rounds for the 10 ms ticks. */
  const perRound = async (fn: () => Promise<unknown>, rounds: number): Promise<number> => {
    for (let i = 0; i < 3; i++) await fn();
    if (!child) {
      const times: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const t = stopwatch();
        await fn();
        times.push(t());
      }
      return quantile(times, 0.25);
    }
    const c0 = cpuNow() + processCpu(child.pid)!;
    for (let i = 0; i < rounds; i++) await fn();
    return (cpuNow() + processCpu(child.pid)! - c0) / rounds;
  };
  try {
    const point = async (floats: number, rounds: number) => {
      const msg = activation(floats);
      const ms = await perRound(() => link.send(msg).catch(() => {}), rounds);
      const bytes = 4 * floats;
      const codecMs = codec.encode.fixedMs * 2 + codec.encode.msPerByte * bytes + codec.decode.fixedMs * 2 + codec.decode.msPerByte * bytes;
      return { bytes, ms: Math.max(0, ms - codecMs) };
    };
    const small = await point(256, child ? 400 : 100);
    const large = await point(1 << 20, child ? 25 : 10);
    // A unary Call to a stage that is not there: the request decoded, an error answered.
    const req = { type: 'gradSquares' as const, run: 'run-plan', stage: 9999, replica: 0, step: 0, microBatch: -1 };
    const callMs = await perRound(() => unary(client, address, 'Call', req, 30_000), child ? 300 : 100);
    return { stream: fitLinear(small, large), callMs, where: child ? 'process' : 'in-process' };
  } finally {
    link.close();
    client.close();
    child?.close();
    await node?.close();
  }
}

/**
 * Each layer's forward, backward and optimizer step, timed at every micro-batch size (the
 * layer part of a profile; `profileModel` adds the links and the runtime). `helpers: false`
 * skips measuring V8's helper threads (300 ms a size).
 * @example profileLayers({ spec, microBatchSizes: [32], optimizer: { type: 'sgd', lr: 0.1 } }).layers[0].forwardMs[32]
 */
export function profileLayers(o: Pick<ProfileOptions, 'spec' | 'data' | 'microBatchSizes' | 'optimizer' | 'repeats' | 'seed' | 'log'> & { helpers?: boolean }): Pick<ModelProfile, 'layers' | 'loss' | 'helperMs'> {
  const repeats = o.repeats ?? 5;
  const seed = o.seed ?? 42;
  const log = o.log ?? (() => {});
  const model = Sequential.fromSpec(o.spec, seed);
  const L = model.layers.length;
  const layers: LayerProfile[] = model.layers.map((l, i) => ({
    type: l.type,
    parameters: l.params.reduce((n, [, t]) => n + t.size, 0),
    outputSize: sizeOf(model.shapes[i + 1]!),
    forwardMs: {}, forwardFirstMs: {}, backwardMs: {}, backwardFirstMs: {}, weightMs: {}, soloForwardMs: {}, soloBackwardMs: {}, optimizerMs: 0,
  }));
  const loss = { forwardMs: {} as BySize, backwardMs: {} as BySize };
  const helperMs: BySize = {};
  const sizes = [...new Set(o.microBatchSizes)].sort((a, b) => b - a);
  for (const mb of sizes) {
    const tm = now();
    const r = profileSize(model, o.spec, mb, repeats, o.data, seed, o.helpers ?? true);
    for (let i = 0; i < L; i++) {
      layers[i]!.forwardMs[mb] = r.fwd[i]!;
      layers[i]!.forwardFirstMs[mb] = r.fwdFirst[i]!;
      layers[i]!.backwardMs[mb] = r.bwd[i]!;
      layers[i]!.backwardFirstMs[mb] = r.first[i]!;
      layers[i]!.weightMs[mb] = r.weight[i]!;
      layers[i]!.soloForwardMs[mb] = r.soloF[i]!;
      layers[i]!.soloBackwardMs[mb] = r.soloB[i]!;
      const hb = r.head.bwd[i];
      if (hb !== undefined) {
        (layers[i]!.head ??= { backwardMs: {}, backwardFirstMs: {}, soloBackwardMs: {} });
        layers[i]!.head!.backwardMs[mb] = hb;
        layers[i]!.head!.backwardFirstMs[mb] = r.head.first[i]!;
        layers[i]!.head!.soloBackwardMs[mb] = r.head.solo[i]!;
      }
    }
    loss.forwardMs[mb] = r.lossF;
    loss.backwardMs[mb] = r.lossB;
    helperMs[mb] = r.helperMs;
    log(`plan: profiled micro-batches of ${mb} in ${((now() - tm) / 1000).toFixed(1)} s`);
  }
  // Each layer's optimizer step, the layers in turn (so that a large model's parameters are
  // not in the cache, as after a backward), the fastest of the repetitions.
  const optimizer = createOptimizer(o.optimizer);
  const refs = model.layers.map((l, i) => l.params.map(([name, p]) => ({ name: `${i}.${name}`, value: p.data, grad: p.grad ? p.grad.data : new Float32Array(p.size) })));
  for (let rep = 0; rep <= Math.max(3, repeats); rep++) {
    for (let i = 0; i < L; i++) {
      if (refs[i]!.length === 0) continue;
      const t = stopwatch();
      optimizer.step(refs[i]!, { lr: 1e-9, gradScale: 1 });
      const ms = t();
      if (rep > 0) layers[i]!.optimizerMs = rep === 1 ? ms : Math.min(layers[i]!.optimizerMs, ms);
    }
  }
  return { layers, loss, helperMs };
}

/**
 * Profiles a model for the planner.
 * @example const p = await profileModel({ spec: mlpSpec(), microBatchSizes: [64, 32], optimizer: { type: 'sgd', lr: 0.05 } });
 */
export async function profileModel(o: ProfileOptions): Promise<ModelProfile> {
  const t0 = now();
  const repeats = o.repeats ?? 5;
  const seed = o.seed ?? 42;
  const log = o.log ?? (() => {});
  const { layers, loss, helperMs } = profileLayers({ ...o, repeats, seed, log });
  const threaded = (o.kernelThreads?.counts ?? []).filter((t) => t > 1).map((t) => {
    const sizes = o.kernelThreads!.microBatchSizes;
    const p = withKernelThreads(t, () => profileLayers({ ...o, microBatchSizes: sizes, repeats, seed, log, helpers: false }), 'plan');
    return { kernelThreads: t, microBatchSizes: sizes, layers: p.layers, loss: p.loss };
  });
  const totalParams = layers.reduce((n, l) => n + l.parameters, 0);
  const memory = profileMemory(totalParams);
  // As gRPC envelopes travel (node/envelope.ts): large tensors copied once each way, read in place.
  const codec = profileCodec((m) => envelopeFrame(m).frame, (b) => decodeEnvelope(deserializeEnvelope(b), { actor: 'plan' }));
  const portCodec = profileCodec((m) => encodeForPort(m).value, (v) => decodeFromPort(v, { actor: 'plan' }));
  let links: LinkProfile = { ...defaultLinks, source: { ...defaultLinks.source } };
  let runtime: RuntimeProfile = { ...defaultRuntime };
  let contention: number | undefined;
  if (o.measureLinks ?? true) {
    runtime = await calibrateRuntime(seed);
    const tl = now();
    const grpc = await grpcCost(codec);
    links = {
      threadHopMs: await threadHop(),
      piscinaHopMs: await piscinaHop(),
      grpc: grpc.stream,
      grpcCallMs: grpc.callMs,
      grpcNode: grpc.where,
      loopbackLatencyMs: defaultLinks.loopbackLatencyMs,
      source: { threadHopMs: 'measured', piscinaHopMs: 'measured', grpc: 'measured', grpcCallMs: 'measured' },
    };
    log(`plan: measured the links in ${((now() - tl) / 1000).toFixed(1)} s`);
    const tc = now();
    const rows = Math.max(1, Math.floor(Math.max(...o.microBatchSizes) / 2));
    contention = await measureContention(o.spec, rows, backend().name);
    log(`plan: measured the contention of two threads (${contention.toFixed(2)}) in ${((now() - tc) / 1000).toFixed(1)} s`);
  }
  return {
    backend: backend().name, optimizer: o.optimizer.type, repeats, inputSize: sizeOf(o.spec.inputShape), microBatchSizes: [...new Set(o.microBatchSizes)].sort((a, b) => b - a),
    layers, loss, helperMs, autoencoder: o.spec.autoencoder === true, memory, codec, portCodec, links, runtime, ...(contention !== undefined ? { contention } : {}),
    ...(threaded.length > 0 ? { threaded } : {}), seconds: (now() - t0) / 1000,
  };
}
