/**
 * The measurements behind `chainrule plan`, taken in this process on the chosen backend:
 * each layer's forward and backward (each on a tape of its own, as a stage runs it) at every
 * micro-batch size the candidate configurations need, each layer's optimizer step, the
 * memory rates of the all-reduce (copy, add), the codec (msgpackr encode and the checked
 * decode), and the per-message cost of each link kind: a real MessagePort round trip between
 * two worker threads, a real piscina task round trip, and a real gRPC stream to a node
 * started in this process.
 */
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { Tensor } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/rng.js';
import { backend } from '../src/tensor/backend.js';
import { Tape } from '../src/autograd/index.js';
import { Sequential, getLoss, type ModelSpec } from '../src/nn/index.js';
import { createOptimizer, type OptimizerSpec } from '../src/optim/index.js';
import { decodeMessage, encodeMessage, type Targets } from '../src/wire/index.js';
import type { Dataset } from '../src/data/index.js';
import { makeClient, StreamLink } from '../node/grpc-common.js';
import { startNode } from '../node/server.js';

/** Milliseconds by micro-batch size (the key is the size as text, for JSON). */
export type BySize = Record<string, number>;

export interface LayerProfile {
  type: string;
  parameters: number;
  /** Values per sample leaving the layer (what the next stage receives). */
  outputSize: number;
  forwardMs: BySize;
  /** The backward of a micro-batch whose gradients accumulate into buffers that already hold a sum. */
  backwardMs: BySize;
  /** The first backward of a step: the gradient buffers are zero-filled first. */
  backwardFirstMs: BySize;
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
  /** gRPC framing and transport CPU per message (both ends together), without the codec. */
  grpc: LinearCost;
  /** One-way latency between two processes on this host's loopback (added to the CPU costs). */
  loopbackLatencyMs: number;
  /** How the link kinds were obtained: measured or the default. */
  source: Record<'threadHopMs' | 'piscinaHopMs' | 'grpc', 'measured' | 'default'>;
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
  /** Whether the loss targets are the inputs (an autoencoder): the last stage is sent the inputs too. */
  autoencoder: boolean;
  memory: {
    /** Float32Array.set, per byte. */
    copyMsPerByte: number;
    /** The backend's element-wise add (acc += part), per float. */
    addMsPerFloat: number;
  };
  /** msgpackr encode (encodeMessage) and the checked decode (decodeMessage), by tensor bytes. */
  codec: { encode: LinearCost; decode: LinearCost };
  links: LinkProfile;
  /** Wall-clock seconds the profile took. */
  seconds: number;
}

export interface ProfileOptions {
  spec: ModelSpec;
  /** Real inputs for the forwards (the first rows), else seeded normal values. */
  data?: Dataset;
  microBatchSizes: number[];
  optimizer: OptimizerSpec;
  /** Timed repetitions per size (after one warm-up); each layer keeps its fastest. Default 5. */
  repeats?: number;
  seed?: number;
  /** Measure the links (worker threads, piscina, gRPC); when false, the defaults below. Default true. */
  measureLinks?: boolean;
  /** Progress lines (to stderr in the CLI). */
  log?: (line: string) => void;
}

/**
 * Link costs when not measured: typical of a 2-core x86 VM on Node 20 (thread hop ~60 µs,
 * piscina ~80 µs, gRPC ~0.25 ms plus 1.3 ms per MB for both ends).
 */
export const defaultLinks: LinkProfile = {
  threadHopMs: 0.06,
  piscinaHopMs: 0.08,
  grpc: { fixedMs: 0.25, msPerByte: 1.3e-6 },
  loopbackLatencyMs: 0.05,
  source: { threadHopMs: 'default', piscinaHopMs: 'default', grpc: 'default' },
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
    return Int32Array.from({ length: out.shape[0]! }, (_, i) => (data ? data.labels[i % data.size]! % classes : rng.int(classes)));
  }
  return new Tensor(Float32Array.from({ length: out.size }, () => rng.normal()), out.shape);
}

/** Times one micro-batch size: per layer forward, first backward, accumulating backward; the loss. */
function profileSize(model: Sequential, spec: ModelSpec, mb: number, repeats: number, data: Dataset | undefined, seed: number) {
  const rng = new Rng(seed);
  const L = model.layers.length;
  const loss = getLoss(spec.loss ?? 'softmaxCrossEntropy');
  const x0 = inputsFor(spec, mb, data, rng);
  const fwd: number[][] = Array.from({ length: L }, () => []);
  const bwd: number[][] = Array.from({ length: L }, () => []);
  const first: number[][] = Array.from({ length: L }, () => []);
  const lossF: number[] = [];
  const lossB: number[] = [];
  let targets: Targets | null = null;
  for (let rep = 0; rep <= repeats; rep++) {
    for (const [, p] of model.parameters()) p.zeroGrad();
    for (const pass of [0, 1]) {
      // Each layer on a tape of its own: a stage boundary may fall after any layer.
      const tapes: { tape: Tape; x: Tensor; out: Tensor }[] = [];
      let h = x0;
      for (let i = 0; i < L; i++) {
        // Stage 0 never needs its input gradient; every later stage sends one back.
        const x = new Tensor(h.data, h.shape, i > 0);
        const tape = new Tape();
        const t = stopwatch();
        const out = tape.run(() => model.layers[i]!.forward(x, { training: true, seed, step: rep, microBatch: pass, auxLosses: [], index: i }));
        if (rep > 0) fwd[i]!.push(t());
        tapes.push({ tape, x, out });
        h = out;
      }
      const y = new Tensor(h.data, h.shape, true);
      targets ??= targetsFor(spec, x0, y, data, rng);
      const lt = new Tape();
      let t = stopwatch();
      const l = lt.run(() => loss.compute(y, targets!, 'sum'));
      if (rep > 0) lossF.push(t());
      t = stopwatch();
      lt.backwardFrom([[l, undefined]]);
      if (rep > 0) lossB.push(t());
      let dy = y.grad!;
      for (let i = L - 1; i >= 0; i--) {
        const { tape, x, out } = tapes[i]!;
        const t0 = stopwatch();
        tape.backwardFrom([[out, dy]]);
        if (rep > 0) (pass === 0 ? first : bwd)[i]!.push(t0());
        dy = x.grad ?? Tensor.zeros(x.shape, x.dtype);
      }
    }
  }
  const best = (xs: number[]) => Math.min(...xs);
  return { fwd: fwd.map(best), bwd: bwd.map(best), first: first.map(best), lossF: best(lossF), lossB: best(lossB) };
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

function profileCodec(): ModelProfile['codec'] {
  const sizes = [256, 1 << 20];
  const enc: { bytes: number; ms: number }[] = [];
  const dec: { bytes: number; ms: number }[] = [];
  for (const n of sizes) {
    const msg = activation(n);
    const reps = n > 1000 ? 5 : 200;
    enc.push({ bytes: 4 * n, ms: timeMin(() => { encodeMessage(msg); }, reps) });
    const bytes = encodeMessage(msg);
    dec.push({ bytes: 4 * n, ms: timeMin(() => { decodeMessage(bytes, { actor: 'plan' }); }, reps) });
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

/** One-way time (a low quantile) of a small transferred buffer between two worker threads over a MessagePort. */
async function threadHop(rounds = 300): Promise<number> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const port = workerData.port;
    if (workerData.lead) {
      const times = [];
      let t = 0, n = 0;
      port.on('message', (b) => {
        if (n > 0) times.push(performance.now() - t);
        if (n++ === workerData.rounds) { parentPort.postMessage(times); port.close(); return; }
        t = performance.now();
        port.postMessage(b, [b.buffer]);
      });
      const b = new Uint8Array(64);
      t = performance.now();
      port.postMessage(b, [b.buffer]);
    } else {
      port.on('message', (b) => port.postMessage(b, [b.buffer]));
    }`;
  const { port1, port2 } = new MessageChannel();
  const echo = new Worker(code, { eval: true, workerData: { port: port2, lead: false }, transferList: [port2] });
  const lead = new Worker(code, { eval: true, workerData: { port: port1, lead: true, rounds }, transferList: [port1] });
  try {
    const times = await new Promise<number[]>((resolve, reject) => {
      lead.once('message', resolve);
      lead.once('error', reject);
      echo.once('error', reject);
    });
    return quantile(times, 0.1) / 2;
  } finally {
    await Promise.all([echo.terminate(), lead.terminate()]);
  }
}

/** One-way time (a low quantile) of a piscina task to a one-thread pool (as the threads transport runs them). */
async function piscinaHop(rounds = 200): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'chainrule-plan-'));
  const file = join(dir, 'echo.mjs');
  writeFileSync(file, 'export default function echo(task) { return task; }\n');
  const pool = new Piscina({ filename: file, minThreads: 1, maxThreads: 1, idleTimeout: Infinity, concurrentTasksPerWorker: 4 });
  try {
    const times: number[] = [];
    for (let i = 0; i <= rounds; i++) {
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

/**
 * gRPC transport CPU per message (both ends: this process is client and node at once), by
 * round trips on a delivery stream to a node started here; the node decodes each message and
 * answers that no such stage is here, which costs what an acknowledgement costs.
 */
async function grpcCost(codec: ModelProfile['codec']): Promise<LinearCost> {
  const node = await startNode({ port: 0 });
  const client = makeClient(node.address);
  const link = new StreamLink(client, node.address, 30_000);
  try {
    const point = async (floats: number, rounds: number) => {
      const msg = activation(floats);
      const times: number[] = [];
      for (let i = 0; i <= rounds; i++) {
        // The CPU clock: both ends are this thread, and a loaded machine must not count.
        const t = stopwatch();
        await link.send(msg).catch(() => {});
        if (i > 0) times.push(t());
      }
      const bytes = 4 * floats;
      const codecMs = codec.encode.fixedMs * 2 + codec.encode.msPerByte * bytes + codec.decode.fixedMs * 2 + codec.decode.msPerByte * bytes;
      return { bytes, ms: Math.max(0, Math.min(...times) - codecMs) };
    };
    const small = await point(256, 100);
    const large = await point(1 << 20, 8);
    return fitLinear(small, large);
  } finally {
    link.close();
    client.close();
    await node.close();
  }
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
  const model = Sequential.fromSpec(o.spec, seed);
  const L = model.layers.length;
  const layers: LayerProfile[] = model.layers.map((l, i) => ({
    type: l.type,
    parameters: l.params.reduce((n, [, t]) => n + t.size, 0),
    outputSize: sizeOf(model.shapes[i + 1]!),
    forwardMs: {}, backwardMs: {}, backwardFirstMs: {}, optimizerMs: 0,
  }));
  const loss = { forwardMs: {} as BySize, backwardMs: {} as BySize };
  const sizes = [...new Set(o.microBatchSizes)].sort((a, b) => b - a);
  for (const mb of sizes) {
    const tm = now();
    const r = profileSize(model, o.spec, mb, repeats, o.data, seed);
    for (let i = 0; i < L; i++) {
      layers[i]!.forwardMs[mb] = r.fwd[i]!;
      layers[i]!.backwardMs[mb] = r.bwd[i]!;
      layers[i]!.backwardFirstMs[mb] = r.first[i]!;
    }
    loss.forwardMs[mb] = r.lossF;
    loss.backwardMs[mb] = r.lossB;
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
  const totalParams = layers.reduce((n, l) => n + l.parameters, 0);
  const memory = profileMemory(totalParams);
  const codec = profileCodec();
  let links: LinkProfile = { ...defaultLinks, source: { ...defaultLinks.source } };
  if (o.measureLinks ?? true) {
    const tl = now();
    links = {
      threadHopMs: await threadHop(),
      piscinaHopMs: await piscinaHop(),
      grpc: await grpcCost(codec),
      loopbackLatencyMs: defaultLinks.loopbackLatencyMs,
      source: { threadHopMs: 'measured', piscinaHopMs: 'measured', grpc: 'measured' },
    };
    log(`plan: measured the links in ${((now() - tl) / 1000).toFixed(1)} s`);
  }
  return {
    backend: backend().name, optimizer: o.optimizer.type, repeats, inputSize: sizeOf(o.spec.inputShape), microBatchSizes: sizes,
    layers, loss, autoencoder: o.spec.autoencoder === true, memory, codec, links, seconds: (now() - t0) / 1000,
  };
}
