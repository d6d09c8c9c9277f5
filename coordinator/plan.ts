/**
 * `chainrule plan`: predicts, before anything runs, the samples/s and the bubble of every
 * (placement, R replicas, K stages, M micro-batches, schedule) that fits the cores (or the
 * hosts) given, from a profile of the model measured here (plan-profile.ts) and a
 * discrete-event simulation of one optimizer step as the runtime runs it (plan-sim.ts):
 * the coordinator shards the minibatch and sends every actor its request; each actor runs its
 * stage's action list, its activations and gradients crossing links that cost CPU at both ends
 * and a delay between; the replicas all-reduce each stage's gradients (shared memory between
 * threads, reduce-scatter + all-gather messages elsewhere); each actor steps its optimizer and
 * answers; the step ends when the coordinator has every answer.
 *
 * @example
 * const profile = await profileModel({ spec, microBatchSizes: neededSizes(256, machine, opts), optimizer });
 * const predictions = planFromProfile(profile, { batchSize: 256, machine, schedules: ['gpipe', '1f1b'] });
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { layerParameterCounts, type ModelSpec } from '../src/nn/index.js';
import type { Schedule } from '../src/wire/index.js';
import { lookup } from '../src/errors.js';
import { claimBackend } from '../src/tensor/select.js';
import { checkKernelThreads } from '../src/tensor/backend.js';
import { nativeKernel } from '../src/tensor/native/index.js';
import { getSchedule, interleaves, schedules as scheduleRegistry, theoreticalBubble as scheduleBubble } from './schedules/index.js';
import { balancedPartition } from './partition.js';
import { resolveDataset, resolveModel } from './inputs.js';
import { OptionError, defaultOptimizer, defaultLr } from './options.js';
import { simulate, type Command, type MessageCost, type ProgramSpec, type ThreadSpec } from './plan-sim.js';
import { profileModel, type LinearCost, type ModelProfile } from './plan-profile.js';
import { autoStepsPerRequest } from './steps-per-request.js';

export { profileModel, calibrateRuntime, defaultLinks, defaultRuntime, type RuntimeProfile, type ModelProfile, type LinkProfile, type LayerProfile, type ProfileOptions } from './plan-profile.js';
export { simulate, SimulationError, type Command, type MessageCost, type SimulationInput, type DesResult } from './plan-sim.js';

/** Where the actors run: one thread (local), worker threads here, gRPC node processes here, or gRPC nodes on remote hosts. */
export type PlanPlacement = 'local' | 'threads' | 'grpc' | 'hosts';
export const planPlacements: readonly PlanPlacement[] = ['local', 'threads', 'grpc', 'hosts'];

export interface PlanConfig {
  placement: PlanPlacement;
  replicas: number;
  stages: number;
  microBatches: number;
  schedule: string;
  /** One process whose actor splits each large product among this many threads (absent: 1). */
  kernelThreads?: number;
}

/** The machine the plan is for. */
export interface PlanMachine {
  /** Cores of this host (the coordinator's; the local, threads and grpc placements). */
  cores: number;
  /** gRPC node processes on this host for the grpc placement (default: one per core). */
  grpcNodes?: number;
  /** Remote hosts for the hosts placement (0: none). */
  hosts: number;
  coresPerHost: number;
  /** `chainrule node` processes per remote host (default: one per core; a node runs its actors on one thread). */
  nodesPerHost?: number;
  /** The network between hosts (and between the coordinator and the hosts). */
  link: { latencyMs: number; gbps: number };
  /** Memory contention between threads computing at once on one host (see SimulationInput); default 0. */
  contention?: number;
}

/** What one stage costs at one micro-batch size. */
export interface StageCost {
  forwardMs: number;
  /** The step's first forward (packing the weights the others reuse); default forwardMs. */
  forwardFirstMs?: number;
  /** A backward: the input gradient, the dense layers' weight gradients being deferred. */
  backwardMs: number;
  /** The step's first backward (zero-filling the gradient buffers). */
  backwardFirstMs: number;
  /**
   * One micro-batch's deferred weight gradient: a W action in a schedule that splits the
   * backward; otherwise M of them make the W pass after the step's last backward. Default 0.
   */
  weightMs?: number;
  optimizerMs: number;
  parameters: number;
  /** Bytes of one micro-batch's activation leaving this stage (and of the gradient coming back). */
  outBytes: number;
  /** Bytes of this stage's request (inputs for stage 0, targets for the last stage). */
  requestBytes: number;
  /** V8's helper threads per micro-batch (forward and backward) of this stage. */
  helperMs?: number;
}

/** Everything the simulation of one step needs, hand-made in tests or derived from a profile by {@link stepModel}. */
export interface StepModel {
  config: PlanConfig;
  batchSize: number;
  schedule: Schedule;
  stage: StageCost[];
  cores: number[];
  threads: ThreadSpec[];
  /** The thread of actor a (replica-major) and of the coordinator. */
  actorThread: string[];
  coordinatorThread: string;
  /** A message of `bytes` from one thread to another; `kind` tells requests and replies from peer messages. */
  link(from: string, to: string, bytes: number, kind: 'peer' | 'request' | 'reply'): MessageCost;
  /** Replicas reduce through shared memory (threads of one process) or by messages. */
  reduce: 'shared' | 'messages';
  memory: { copyMsPerByte: number; addMsPerFloat: number };
  /** The coordinator's work before it sends the requests (sharding the minibatch, its own bookkeeping). */
  prepareMs: number;
  /** The actor's own work per action beyond the layers (the action loop, the tape, the inbox). */
  actionOverheadMs: number;
  replyBytes: number;
  /** Actors let their event loop run after each send (gRPC nodes do). */
  flushAfterSend: boolean;
  /** CPU ms per step of V8's helper threads on each host (host index → ms), run beside the actors. */
  helperMs?: Record<number, number>;
  contention?: number;
}

export interface Prediction {
  config: PlanConfig;
  actors: number;
  /** Layers per stage. */
  partition: number[];
  microBatchSize: number;
  stepMs: number;
  samplesPerSecond: number;
  /** Steps to a request under stepsPerRequest 'auto', when more than 1. */
  stepsPerRequest?: number;
  /** As the runtime's BubbleMeter measures it: 1 − Σ busy / (actors × the slowest actor's wall time). */
  bubble: number;
  /** The schedule's bubble in theory, with equal F, B and W times (1f1b: (K−1)/(M+K−1)), for comparison. */
  theoreticalBubble: number;
  /** Milliseconds of the step in the all-reduce (the slowest actor's), and in the optimizer. */
  allReduceMs: number;
  optimizerMs: number;
  /** CPU milliseconds of the step over every thread (compute, codec, transport): a load-independent check. */
  cpuMs: number;
}

const ZERO: MessageCost = { senderMs: 0, delayMs: 0, receiverMs: 0 };
const linear = (c: LinearCost, bytes: number) => c.fixedMs + c.msPerByte * bytes;

/** One step of the runtime as programs for the simulator; returns the prediction. */
export function simulateStep(m: StepModel): Prediction {
  const { replicas: R, stages: K, microBatches: M } = m.config;
  const A = R * K;
  const programs: ProgramSpec[] = [];
  const actorName = (a: number) => `actor${a}`;
  const chunk = (N: number, j: number) => Math.floor(((j + 1) * N) / R) - Math.floor((j * N) / R);

  function* actor(a: number): Generator<Command, void, void> {
    const r = Math.floor(a / K);
    const k = a % K;
    const me = m.actorThread[a]!;
    const s = m.stage[k]!;
    const acks: string[] = [];
    let sent = 0;
    const send = function* (to: number, signal: string, bytes: number): Generator<Command, void, void> {
      const ack = `ack:${a}:${sent++}`;
      acks.push(ack);
      yield { send: { to: actorName(to), signal, cost: m.link(me, m.actorThread[to]!, bytes, 'peer'), ack } };
      if (m.flushAfterSend) yield { yieldIo: true };
    };
    yield { wait: [`req:${a}`] };
    yield { mark: 'wall' };
    let firstBackward = true;
    let firstForward = true;
    const split = m.schedule.some((list) => list.some((act) => act.kind === 'W'));
    const weightMs = s.weightMs ?? 0;
    for (const act of m.schedule[k]!) {
      const mb = act.microBatch;
      if (act.kind === 'W') {
        // Nobody waits for a weight gradient: local work only.
        yield { work: m.actionOverheadMs };
        yield { mark: 'busy' };
        yield { work: weightMs };
        yield { mark: 'idle' };
      } else if (act.kind === 'F') {
        if (k > 0) yield { wait: [`act:${a}:${mb}`] };
        yield { work: m.actionOverheadMs };
        yield { mark: 'busy' };
        yield { work: firstForward ? (s.forwardFirstMs ?? s.forwardMs) : s.forwardMs };
        yield { mark: 'idle' };
        firstForward = false;
        if (k < K - 1) yield* send(a + 1, `act:${a + 1}:${mb}`, s.outBytes);
      } else {
        if (k < K - 1) yield { wait: [`grad:${a}:${mb}`] };
        yield { work: m.actionOverheadMs };
        yield { mark: 'busy' };
        yield { work: firstBackward ? s.backwardFirstMs : s.backwardMs };
        yield { mark: 'idle' };
        firstBackward = false;
        if (k > 0) yield* send(a - 1, `grad:${a - 1}:${mb}`, m.stage[k - 1]!.outBytes);
      }
    }
    // The W pass: the weight gradients every backward deferred, after the last one.
    if (!split && weightMs > 0) {
      yield { mark: 'busy' };
      yield { work: M * weightMs };
      yield { mark: 'idle' };
    }
    yield { wait: [...acks] };
    if (R > 1) {
      yield { mark: 'busy' };
      yield { mark: 'reduce' };
      const N = s.parameters;
      const mine = chunk(N, r);
      if (m.reduce === 'shared') {
        yield { signal: `ready:${k}:${r}` };
        yield { wait: Array.from({ length: R }, (_, q) => `ready:${k}:${q}`) };
        yield { work: mine * 4 * m.memory.copyMsPerByte + (R - 1) * mine * m.memory.addMsPerFloat };
        yield { signal: `summed:${k}:${r}` };
        yield { wait: Array.from({ length: R }, (_, q) => `summed:${k}:${q}`) };
      } else {
        const peer = (q: number) => q * K + k;
        yield { work: N * 4 * m.memory.copyMsPerByte };
        for (let j = 0; j < R; j++) if (j !== r) yield* send(peer(j), `scatter:${peer(j)}:${r}`, chunk(N, j) * 4);
        for (let q = 0; q < R; q++) {
          if (q === r) continue;
          yield { wait: [`scatter:${a}:${q}`] };
          yield { work: mine * m.memory.addMsPerFloat };
        }
        for (let j = 0; j < R; j++) if (j !== r) yield* send(peer(j), `gather:${peer(j)}:${r}`, mine * 4);
        for (let q = 0; q < R; q++) {
          if (q === r) continue;
          yield { wait: [`gather:${a}:${q}`] };
          yield { work: chunk(N, q) * 4 * m.memory.copyMsPerByte };
        }
        yield { wait: [...acks] };
        yield { work: N * 4 * m.memory.copyMsPerByte };
      }
      yield { mark: 'idle' };
      yield { mark: 'reduced' };
    }
    yield { mark: 'wallEnd' };
    yield { mark: 'optimizer' };
    yield { work: s.optimizerMs };
    yield { mark: 'optimized' };
    yield { send: { to: 'coordinator', signal: `done:${a}`, cost: m.link(me, m.coordinatorThread, m.replyBytes, 'reply') } };
  }

  function* coordinator(): Generator<Command, void, void> {
    yield { work: m.prepareMs };
    for (let a = 0; a < A; a++) {
      yield { send: { to: actorName(a), signal: `req:${a}`, cost: m.link(m.coordinatorThread, m.actorThread[a]!, m.stage[a % K]!.requestBytes, 'request') } };
    }
    yield { wait: Array.from({ length: A }, (_, a) => `done:${a}`) };
  }

  programs.push({ name: 'coordinator', thread: m.coordinatorThread, body: coordinator() });
  for (let a = 0; a < A; a++) programs.push({ name: actorName(a), thread: m.actorThread[a]!, body: actor(a) });
  const threads = [...m.threads];
  for (const [host, ms] of Object.entries(m.helperMs ?? {})) {
    if (!(ms > 0)) continue;
    threads.push({ name: `helpers${host}`, host: Number(host) });
    programs.push({ name: `helpers${host}`, thread: `helpers${host}`, body: (function* (): Generator<Command, void, void> { yield { work: ms }; })() });
  }
  const res = simulate({ cores: m.cores, threads, programs, contention: m.contention });
  const stepMs = res.programs['coordinator']!.endMs;
  let busy = 0;
  let wall = 0;
  let allReduceMs = 0;
  let optimizerMs = 0;
  for (let a = 0; a < A; a++) {
    const mk = res.programs[actorName(a)]!.marks;
    const b = mk['busy'] ?? [];
    const i = mk['idle'] ?? [];
    for (let j = 0; j < b.length; j++) busy += i[j]! - b[j]!;
    wall = Math.max(wall, mk['wallEnd']![0]! - mk['wall']![0]!);
    if (mk['reduce']) allReduceMs = Math.max(allReduceMs, mk['reduced']![0]! - mk['reduce'][0]!);
    optimizerMs = Math.max(optimizerMs, mk['optimized']![0]! - mk['optimizer']![0]!);
  }
  const bubble = wall > 0 ? Math.max(0, 1 - busy / (A * wall)) : 0;
  return {
    config: m.config, actors: A, partition: [], microBatchSize: m.batchSize / (R * M), stepMs,
    samplesPerSecond: stepMs > 0 ? (m.batchSize / stepMs) * 1000 : Infinity,
    bubble, theoreticalBubble: scheduleBubble(m.config.schedule, K, M), allReduceMs, optimizerMs,
    cpuMs: Object.values(res.threadWorkMs).reduce((x, y) => x + y, 0),
  };
}

/** The thread and host layout of a placement: thread names, cores per host, and each actor's thread. */
export function placementLayout(config: PlanConfig, machine: PlanMachine): { cores: number[]; threads: ThreadSpec[]; actorThread: string[] } {
  const A = config.replicas * config.stages;
  const threads: ThreadSpec[] = [{ name: 'main', host: 0 }];
  switch (config.placement) {
    case 'local':
      return { cores: [machine.cores], threads, actorThread: Array.from({ length: A }, () => 'main') };
    case 'threads':
      for (let a = 0; a < A; a++) threads.push({ name: `worker${a}`, host: 0 });
      return { cores: [machine.cores], threads, actorThread: Array.from({ length: A }, (_, a) => `worker${a}`) };
    case 'grpc': {
      const N = machine.grpcNodes ?? machine.cores;
      for (let n = 0; n < N; n++) threads.push({ name: `node${n}`, host: 0 });
      // As the gRPC transport places them: actor a on node a mod N.
      return { cores: [machine.cores], threads, actorThread: Array.from({ length: A }, (_, a) => `node${a % N}`) };
    }
    case 'hosts': {
      // With kernel threads, one node per T cores (each node's actor computes on T of them).
      const T = config.kernelThreads ?? 1;
      const per = T > 1 ? Math.max(1, Math.floor(machine.coresPerHost / T)) : (machine.nodesPerHost ?? machine.coresPerHost);
      const N = machine.hosts * per;
      for (let n = 0; n < N; n++) threads.push({ name: `node${n}`, host: 1 + Math.floor(n / per) });
      return { cores: [machine.cores, ...Array.from({ length: machine.hosts }, () => machine.coresPerHost)], threads, actorThread: Array.from({ length: A }, (_, a) => `node${a % N}`) };
    }
  }
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** The stage costs of a partition at one micro-batch size, from the profile. */
export function stageCosts(profile: ModelProfile, bounds: number[], mb: number, microBatches: number): StageCost[] {
  const K = bounds.length - 1;
  const at = (rec: Record<string, number>, what: string) => {
    const v = rec[mb];
    if (v === undefined) throw new OptionError(`plan: the profile has no ${what} at micro-batches of ${mb} (profiled: ${profile.microBatchSizes.join(', ')})`);
    return v;
  };
  return Array.from({ length: K }, (_, k) => {
    const layers = profile.layers.slice(bounds[k], bounds[k + 1]);
    const last = k === K - 1;
    const perSample = last ? (profile.autoencoder ? profile.inputSize * 4 : 4) : 0;
    const share = (l: (typeof layers)[number]) => at(l.forwardMs, 'forward') + at(l.backwardMs, 'backward') + (l.weightMs?.[mb] ?? 0);
    const all = sum(profile.layers.map(share));
    const lossF = last ? at(profile.loss.forwardMs, 'loss') : 0;
    const lossB = last ? at(profile.loss.backwardMs, 'loss') : 0;
    // A step of one micro-batch runs the plain path (nothing packed for reuse, nothing deferred).
    const solo = microBatches === 1 && layers.every((l) => l.soloForwardMs?.[mb] !== undefined);
    // The first stage's leading layers (before any with parameters) compute no input gradient.
    const lead = (l: (typeof layers)[number]) => (k === 0 ? l.head : undefined);
    const soloF = solo ? sum(layers.map((l) => l.soloForwardMs[mb]!)) + lossF : 0;
    const soloB = solo ? sum(layers.map((l) => lead(l)?.soloBackwardMs[mb] ?? l.soloBackwardMs[mb]!)) + lossB : 0;
    return {
      helperMs: (profile.helperMs?.[mb] ?? 0) * (all > 0 ? sum(layers.map(share)) / all : 1 / K),
      forwardMs: solo ? soloF : sum(layers.map((l) => at(l.forwardMs, 'forward'))) + lossF,
      forwardFirstMs: solo ? soloF : sum(layers.map((l) => l.forwardFirstMs?.[mb] ?? at(l.forwardMs, 'forward'))) + lossF,
      backwardMs: solo ? soloB : sum(layers.map((l) => lead(l)?.backwardMs[mb] ?? at(l.backwardMs, 'backward'))) + lossB,
      backwardFirstMs: solo ? soloB : sum(layers.map((l) => lead(l)?.backwardFirstMs[mb] ?? at(l.backwardFirstMs, 'backward'))) + lossB,
      // Measured in micro-batch mode (plan-profile's W pass); layers that compute their weight
      // gradients in the backward (conv, recurrent) defer nothing.
      weightMs: solo ? 0 : sum(layers.map((l) => l.weightMs?.[mb] ?? 0)),
      optimizerMs: sum(layers.map((l) => l.optimizerMs)),
      parameters: sum(layers.map((l) => l.parameters)),
      outBytes: mb * layers[layers.length - 1]!.outputSize * 4,
      requestBytes: microBatches * mb * ((k === 0 ? profile.inputSize * 4 : 0) + perSample) + 256,
    };
  });
}

/** The step model of one configuration on one machine, from the profile. */
export function stepModel(profile: ModelProfile, config: PlanConfig, machine: PlanMachine, batchSize: number, layerParams: number[]): StepModel & { bounds: number[] } {
  const { replicas: R, stages: K, microBatches: M } = config;
  const mb = batchSize / (R * M);
  const bounds = balancedPartition(layerParams, K);
  const layout = placementLayout(config, machine);
  const hostOf = new Map(layout.threads.map((t) => [t.name, t.host]));
  const { codec, portCodec, links, runtime } = profile;
  const bytesPerMs = (machine.link.gbps * 1e9) / 8 / 1000;
  const grpcCost = (from: string, to: string, bytes: number, kind: 'peer' | 'request' | 'reply'): MessageCost => {
    // A request is a unary Call (its answer included); a peer message one on a delivery stream.
    const half = kind === 'peer' ? linear(links.grpc, bytes) / 2 : kind === 'request' ? (links.grpcCallMs + links.grpc.msPerByte * bytes) / 2 : 0;
    const senderMs = linear(codec.encode, bytes) + half;
    const receiverMs = linear(codec.decode, bytes) + half;
    const hf = hostOf.get(from)!;
    const ht = hostOf.get(to)!;
    if (hf === ht) return { senderMs, receiverMs, delayMs: links.loopbackLatencyMs };
    return { senderMs, receiverMs, delayMs: machine.link.latencyMs, egress: { host: hf, ms: bytes / bytesPerMs }, ackDelayMs: machine.link.latencyMs };
  };
  const link = (from: string, to: string, bytes: number, kind: 'peer' | 'request' | 'reply'): MessageCost => {
    switch (config.placement) {
      case 'local': return ZERO;
      case 'threads': {
        if (kind === 'peer') return { senderMs: linear(portCodec.encode, bytes) + runtime.messageMs, delayMs: links.threadHopMs, receiverMs: linear(portCodec.decode, bytes) + runtime.messageMs };
        // The calibrated request costs hold the small messages' codec; a request's tensors add theirs.
        const big = Math.max(0, bytes - 256);
        if (kind === 'request') return { senderMs: runtime.requestMs + portCodec.encode.msPerByte * big, delayMs: links.piscinaHopMs, receiverMs: runtime.workerRequestMs + portCodec.decode.msPerByte * big };
        return { senderMs: 0, delayMs: links.piscinaHopMs, receiverMs: 0 };
      }
      default: return grpcCost(from, to, bytes, kind);
    }
  };
  // V8's helper threads (freeing array buffers): per action, per message end, per request to a worker, per micro-batch through the layers.
  const stage = stageCosts(profile, bounds, mb, M);
  const helperMs: Record<number, number> = {};
  const reduceEnds = R > 1 && config.placement !== 'threads' ? 4 * (R - 1) : 0;
  for (let a = 0; a < R * K; a++) {
    const k = a % K;
    const ends = 2 * M * ((k > 0 ? 1 : 0) + (k < K - 1 ? 1 : 0)) + reduceEnds;
    const host = hostOf.get(layout.actorThread[a]!)!;
    helperMs[host] = (helperMs[host] ?? 0) + 2 * M * runtime.helperActionMs + (ends / 2) * runtime.helperMessageMs + (config.placement === 'threads' ? runtime.helperRequestMs : 0) + M * (stage[k]!.helperMs ?? 0);
  }
  if (config.placement === 'local') helperMs[0] = (helperMs[0] ?? 0) + runtime.helperStepMs;
  return {
    // Given (--contention), or as the profile measured it on this host.
    config, batchSize, bounds, helperMs, contention: machine.contention ?? profile.contention,
    schedule: getSchedule(config.schedule)(K, M),
    stage,
    cores: layout.cores, threads: layout.threads, actorThread: layout.actorThread, coordinatorThread: 'main',
    link,
    reduce: config.placement === 'threads' ? 'shared' : 'messages',
    memory: profile.memory,
    // shardMinibatch copies the inputs and labels once; in-process, the runtime's fixed cost per step
    // (on threads the requests' costs hold it).
    prepareMs: batchSize * (profile.inputSize + 1) * 4 * profile.memory.copyMsPerByte + (config.placement === 'threads' ? 0 : runtime.stepMs),
    actionOverheadMs: profile.runtime.actionMs,
    replyBytes: 64 + 8 * M,
    flushAfterSend: config.placement === 'grpc' || config.placement === 'hosts',
  };
}

export interface PlanOptions {
  batchSize: number;
  machine: PlanMachine;
  /** Placements to consider (default: local and threads, and hosts when the machine has hosts). */
  placements?: PlanPlacement[];
  maxReplicas?: number;
  maxStages?: number;
  microBatches?: number[];
  schedules?: string[];
  /**
   * Also one process whose actor splits its products among T kernel threads, for each T here
   * (above 1, at most the cores; M=1: the best of one process). Default none.
   */
  kernelThreads?: number[];
}

/** Every configuration that fits: R·M divides the batch, K ≤ layers, the schedule accepts (K, M), and the actors fit the threads. */
export function candidateConfigs(layers: number, o: PlanOptions): PlanConfig[] {
  const { machine } = o;
  const placements = o.placements ?? (machine.hosts > 0 ? ['local', 'hosts'] : ['local', 'threads']);
  const remoteNodes = machine.hosts * (machine.nodesPerHost ?? machine.coresPerHost);
  const slots = (p: PlanPlacement) => (p === 'local' ? 1 : p === 'hosts' ? remoteNodes : p === 'grpc' ? (machine.grpcNodes ?? machine.cores) : 2 * machine.cores);
  const widest = Math.max(...placements.map(slots));
  const maxR = o.maxReplicas ?? widest;
  const maxK = Math.min(o.maxStages ?? widest, layers);
  const Ms = o.microBatches ?? [1, 2, 4, 8];
  // (An interleaving schedule with one chunk per stage is 1F1B; the plan does not model virtual stages.)
  const names = o.schedules ?? Object.keys(scheduleRegistry).filter((n) => !interleaves(n));
  const out: PlanConfig[] = [];
  // Every (R, K, M, schedule) of a placement with `slotCount` actors at most. One actor needs
  // no threads or nodes, so only local runs one, unless `alone` (a remote node of kernel threads:
  // what one host does by itself); local runs no more.
  const enumerate = (placement: PlanPlacement, slotCount: number, microBatches: readonly number[], extra: Partial<PlanConfig> = {}, alone = placement === 'local') => {
    for (let R = 1; R <= maxR; R++) {
      for (let K = 1; K <= maxK; K++) {
        const A = R * K;
        if (A === 1 ? !alone : placement === 'local') continue;
        if (A > slotCount) continue;
        for (const M of microBatches) {
          if (o.batchSize % (R * M) !== 0) continue;
          // One stage runs every schedule alike: keep one.
          for (const schedule of K === 1 ? names.slice(0, 1) : names) {
            try {
              getSchedule(schedule)(K, M);
            } catch {
              continue;
            }
            out.push({ placement, replicas: R, stages: K, microBatches: M, schedule, ...extra });
          }
        }
      }
    }
  };
  for (const placement of placements) enumerate(placement, slots(placement), Ms);
  for (const T of new Set(o.kernelThreads ?? [])) {
    if (T <= 1) continue;
    // One process here on T cores (M=1: the best of one process), and remote hosts with one node per T cores.
    if (placements.includes('local') && T <= machine.cores) enumerate('local', 1, [1], { kernelThreads: T });
    if (placements.includes('hosts')) enumerate('hosts', machine.hosts * Math.floor(machine.coresPerHost / T), Ms, { kernelThreads: T }, true);
  }
  return out;
}

/** The kernel thread counts (above 1) the candidates need profiled. */
export function neededKernelThreads(configs: PlanConfig[]): number[] {
  return [...new Set(configs.map((c) => c.kernelThreads ?? 1).filter((t) => t > 1))];
}

/** The micro-batch sizes the candidates need profiled (those with `threaded`: the ones with kernel threads). */
export function neededSizes(configs: PlanConfig[], batchSize: number, threaded = false): number[] {
  return [...new Set(configs.filter((c) => ((c.kernelThreads ?? 1) > 1) === threaded).map((c) => batchSize / (c.replicas * c.microBatches)))].sort((a, b) => b - a);
}

/** The profile as an actor with T kernel threads computes: its layers and loss timed with them. */
function withThreads(profile: ModelProfile, T: number): ModelProfile {
  if (T <= 1) return profile;
  const t = profile.threaded?.find((p) => p.kernelThreads === T);
  if (!t) throw new OptionError(`plan: the profile has no layers timed with ${T} kernel threads (profiled: ${(profile.threaded ?? []).map((p) => p.kernelThreads).join(', ') || 'none'})`);
  return { ...profile, layers: t.layers, loss: t.loss, microBatchSizes: t.microBatchSizes };
}

/** Predictions for every candidate, fastest first. */
export function planFromProfile(profile: ModelProfile, spec: ModelSpec, o: PlanOptions, configs = candidateConfigs(profile.layers.length, o)): Prediction[] {
  const params = layerParameterCounts(spec);
  const out = configs.map((c) => {
    const model = stepModel(withThreads(profile, c.kernelThreads ?? 1), c, o.machine, o.batchSize, params);
    let p = simulateStep(model);
    // Short steps go to the actors several to a request (stepsPerRequest 'auto'): each pays a
    // share of the request's costs.
    const n = autoStepsPerRequest(p.stepMs);
    if (n > 1) {
      const link = model.link;
      const share = (x: MessageCost): MessageCost => ({ ...x, senderMs: x.senderMs / n, receiverMs: x.receiverMs / n, delayMs: x.delayMs / n });
      p = { ...simulateStep({ ...model, link: (from, to, bytes, kind) => (kind === 'peer' ? link(from, to, bytes, kind) : share(link(from, to, bytes, kind))) }), stepsPerRequest: n };
    }
    p.partition = model.bounds.slice(1).map((b, i) => b - model.bounds[i]!);
    return p;
  });
  return out.sort((a, b) => b.samplesPerSecond - a.samplesPerSecond);
}

/** A short name of a configuration: `threads R=2 K=1 M=1`, `hosts R=8 K=2 M=4 1f1b`. */
export function configName(c: PlanConfig): string {
  return `${c.placement} R=${c.replicas} K=${c.stages} M=${c.microBatches}${c.stages > 1 ? ` ${c.schedule}` : ''}${(c.kernelThreads ?? 1) > 1 ? ` T=${c.kernelThreads}` : ''}`;
}

/** The best predictions as a text table, with their ratio to the one-process run (M=1) when it is among them. */
export function formatPlanTable(predictions: Prediction[], top = 10): string {
  const base = predictions.find((p) => p.config.placement === 'local' && p.config.microBatches === 1 && (p.config.kernelThreads ?? 1) === 1);
  const rows = predictions.slice(0, top).map((p, i) => [
    String(i + 1), p.config.placement, String(p.config.replicas), String(p.config.stages), String(p.config.microBatches), String(p.config.kernelThreads ?? 1),
    p.config.stages > 1 ? p.config.schedule : '-', String(p.microBatchSize), Math.round(p.samplesPerSecond).toLocaleString('en-US'),
    base ? `${(p.samplesPerSecond / base.samplesPerSecond).toFixed(2)}×` : '-', p.bubble.toFixed(3), p.stepMs.toFixed(1),
    p.allReduceMs > 0 ? p.allReduceMs.toFixed(1) : '-', p.partition.join('+'),
  ]);
  const head = ['#', 'placement', 'R', 'K', 'M', 'T', 'schedule', 'mb', 'samples/s', '×1 proc', 'bubble', 'step ms', 'reduce ms', 'layers/stage'];
  const widths = head.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j]!.length)));
  const line = (r: string[]) => r.map((c, j) => (j >= 7 && j <= 12 ? c.padStart(widths[j]!) : c.padEnd(widths[j]!))).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export const planUsage = `Usage: chainrule plan [options]
Predicts samples/s and bubble of every placement, R replicas × K stages, M micro-batches and
schedule that fits, from a profile of the model measured here, and prints the best.

Model and data:
  --model NAME|PATH          a built-in model or a JSON model spec file; default mlp
  --dataset NAME             the built-in digits, csv:PATH or idx:DIR (for the input shape); default mnist
  --batch-size N             samples per minibatch; default 64
  --optimizer NAME           the optimizer whose step is timed; default as chainrule train's
  --backend NAME             kernel backend (js | wasm | native); default native when built, else wasm

This host:
  --cores N                  cores of this host; default os.availableParallelism()
  --placements A,B           local, threads, grpc (node processes here, one per core), hosts; default local,threads (local,hosts with --hosts)

Remote hosts (gRPC nodes, one per core, behind the link model):
  --hosts N, --nodes N       remote hosts
  --cores-per-host N         default 2
  --link-latency-ms X        one-way latency between hosts; default 0.1
  --link-gbps X              bandwidth of each host's link; default 1
  --contention X             slowdown of each thread per further thread computing on its host at once; default: measured here (two threads running the model's passes together)
                             (memory bandwidth, shared caches); default 0

Search:
  --max-replicas R           default: the threads (or nodes) available
  --max-stages K             default: the same, at most the layers
  --micro-batches A,B,...    default 1,2,4,8
  --kernel-threads A,B        also actors that split each large product among T threads, for each T: one process here, and
                             remote hosts with one node per T cores; default: the cores here and per host (native backend; 1: none)
  --schedules A,B            default every registered schedule but the interleaved (${Object.keys(scheduleRegistry).filter((n) => !interleaves(n)).join(', ')})
  --repeats N                timed repetitions per micro-batch size; default 5
  --seed N                   seeds the weights and inputs profiled; default 42
  --default-links            skip measuring the thread, piscina and gRPC links; use the defaults

Output:
  --top N                    rows printed; default 10
  --json                     print one JSON object with every prediction and the profile
  -h, --help                 print this help
`;

const flags = {
  model: 'string', dataset: 'string', 'batch-size': 'int', optimizer: 'string', backend: 'string',
  cores: 'int', placements: 'list', hosts: 'int', nodes: 'int', 'cores-per-host': 'int', 'link-latency-ms': 'number', 'link-gbps': 'number', contention: 'number',
  'max-replicas': 'int', 'max-stages': 'int', 'micro-batches': 'intList', 'kernel-threads': 'intList', schedules: 'list', repeats: 'int', 'default-links': 'boolean',
  top: 'int', json: 'boolean', help: 'boolean', seed: 'int',
} as const;

type Flag = keyof typeof flags;

/** Parses and validates the plan flags; a bad one is an OptionError naming it. */
export function parsePlanArgs(argv: string[]): Partial<Record<Flag, string | number | boolean | string[] | number[]>> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: Object.fromEntries(Object.entries(flags).map(([k, kind]) => [k, { type: kind === 'boolean' ? 'boolean' : 'string', ...(k === 'help' ? { short: 'h' } : {}) }])),
    }) as { values: Record<string, string | boolean | undefined> });
  } catch (e) {
    throw new OptionError(`plan: ${(e as Error).message.replace(/\. To specify a positional argument.*$/s, '')}`, 'see chainrule plan --help');
  }
  const out: Partial<Record<Flag, string | number | boolean | string[] | number[]>> = {};
  const int = (flag: string, s: string, min: number) => {
    if (!/^\d+$/.test(s.trim()) || Number(s) < min) throw new OptionError(`plan: --${flag} must be ${min === 1 ? 'a positive integer' : `an integer >= ${min}`}, got '${s}'`);
    return Number(s);
  };
  for (const [k, kind] of Object.entries(flags) as [Flag, string][]) {
    const v = values[k];
    if (v === undefined) continue;
    if (kind === 'boolean') { out[k] = v; continue; }
    const s = String(v);
    if (kind === 'int') out[k] = int(k, s, k === 'hosts' || k === 'nodes' || k === 'seed' ? 0 : 1);
    else if (kind === 'number') {
      const x = Number(s);
      if (s.trim() === '' || !Number.isFinite(x) || x < 0 || (k === 'link-gbps' && x === 0)) throw new OptionError(`plan: --${k} must be a ${k === 'link-gbps' ? 'positive' : 'non-negative'} number, got '${s}'`);
      out[k] = x;
    } else if (kind === 'intList') out[k] = s.split(',').map((p) => int(k, p, 1));
    else if (kind === 'list') {
      const parts = s.split(',').map((p) => p.trim()).filter(Boolean);
      if (parts.length === 0) throw new OptionError(`plan: --${k} must list at least one name, got '${s}'`);
      out[k] = parts;
    } else out[k] = s;
  }
  for (const name of (out.schedules as string[] | undefined) ?? []) {
    if (!lookup(scheduleRegistry, name)) throw new OptionError(`plan: --schedules: unknown schedule '${name}'; choose from ${Object.keys(scheduleRegistry).join(', ')}`);
  }
  for (const name of (out.placements as string[] | undefined) ?? []) {
    if (!(planPlacements as readonly string[]).includes(name)) throw new OptionError(`plan: --placements: unknown placement '${name}'; choose from ${planPlacements.join(', ')}`);
  }
  if (out.hosts !== undefined && out.nodes !== undefined && out.hosts !== out.nodes) throw new OptionError(`plan: --hosts ${out.hosts} and --nodes ${out.nodes} disagree (they are the same flag)`);
  const hosts = (out.hosts ?? out.nodes ?? 0) as number;
  if ((out.placements as string[] | undefined)?.includes('hosts') && hosts === 0) throw new OptionError('plan: --placements hosts needs --hosts N');
  return out;
}

/** `chainrule plan [flags]`: profiles, simulates, prints the best configurations (or --json). */
export async function planMain(argv: string[], out: (s: string) => void = console.log, log: (s: string) => void = (s) => console.error(s)): Promise<number> {
  const f = parsePlanArgs(argv);
  if (f.help) { out(planUsage); return 0; }
  const batchSize = (f['batch-size'] as number | undefined) ?? 64;
  const data = resolveDataset((f.dataset as string | undefined) ?? 'mnist', { seed: (f.seed as number | undefined) ?? 42 });
  const modelName = (f.model as string | undefined) ?? 'mlp';
  const spec = resolveModel(modelName, data);
  if (batchSize > data.train.size) throw new OptionError(`plan: --batch-size ${batchSize} is larger than the training set (${data.train.size} samples)`);
  const hosts = (f.hosts ?? f.nodes ?? 0) as number;
  const machine: PlanMachine = {
    cores: (f.cores as number | undefined) ?? availableParallelism(),
    hosts,
    coresPerHost: (f['cores-per-host'] as number | undefined) ?? 2,
    link: { latencyMs: (f['link-latency-ms'] as number | undefined) ?? 0.1, gbps: (f['link-gbps'] as number | undefined) ?? 1 },
    contention: f.contention as number | undefined,
  };
  const opts: PlanOptions = {
    batchSize, machine,
    placements: f.placements as PlanPlacement[] | undefined,
    maxReplicas: f['max-replicas'] as number | undefined,
    maxStages: f['max-stages'] as number | undefined,
    microBatches: f['micro-batches'] as number[] | undefined,
    schedules: f.schedules as string[] | undefined,
    kernelThreads: (f['kernel-threads'] as number[] | undefined) ?? [machine.cores, ...(hosts > 0 ? [machine.coresPerHost] : [])],
  };
  const layers = layerParameterCounts(spec).length;
  const optimizerName = (f.optimizer as string | undefined) ?? defaultOptimizer(modelName);
  const claim = claimBackend(f.backend as string | undefined, 'chainrule plan');
  try {
    // Kernel threads where the backend has them (native); asked for by name elsewhere, refused.
    const asked = f['kernel-threads'] as number[] | undefined;
    if (!claim.backend.kernelThreads) {
      if (asked) checkKernelThreads(claim.backend, Math.max(...asked), 'plan: --kernel-threads');
      opts.kernelThreads = [];
    }
    const configs = candidateConfigs(layers, opts);
    if (configs.length === 0) {
      throw new OptionError(`plan: no configuration fits: batch ${batchSize}, micro-batches ${(opts.microBatches ?? [1, 2, 4, 8]).join(',')}, ${layers} layers`, 'choose a batch size divisible by R·M, or other --micro-batches');
    }
    const threads = neededKernelThreads(configs);
    const profile = await profileModel({
      spec, data: data.train, microBatchSizes: neededSizes(configs, batchSize), optimizer: { type: optimizerName, lr: defaultLr(optimizerName) },
      ...(threads.length > 0 ? { kernelThreads: { counts: threads, microBatchSizes: neededSizes(configs, batchSize, true) } } : {}),
      repeats: f.repeats as number | undefined, seed: f.seed as number | undefined, measureLinks: f['default-links'] !== true, log,
    });
    const predictions = planFromProfile(profile, spec, opts, configs);
    if (f.json) {
      out(JSON.stringify({ model: modelName, batchSize, machine, profile, predictions }));
      return 0;
    }
    const kernel = profile.backend === 'native' ? ` (${nativeKernel()})` : '';
    const l = profile.links;
    out(`chainrule plan: ${modelName} (${layers} layers), batch ${batchSize}, ${machine.cores} core(s) here${hosts > 0 ? `, ${hosts} host(s) × ${machine.coresPerHost} cores behind ${machine.link.gbps} Gbit/s, ${machine.link.latencyMs} ms` : ''}`);
    out(`profiled on ${profile.backend}${kernel} in ${profile.seconds.toFixed(1)} s; links (${l.source.grpc}): thread hop ${(l.threadHopMs * 1000).toFixed(0)} µs, piscina hop ${(l.piscinaHopMs * 1000).toFixed(0)} µs, gRPC ${l.grpc.fixedMs.toFixed(2)} ms + ${(l.grpc.msPerByte * 1e6).toFixed(1)} ms/MB a message, ${l.grpcCallMs.toFixed(2)} ms a call; runtime (${profile.runtime.source}): ${profile.runtime.requestMs.toFixed(2)} + ${profile.runtime.workerRequestMs.toFixed(2)} ms a request to a thread`);
    out(`${predictions.length} configurations simulated; the best ${Math.min((f.top as number | undefined) ?? 10, predictions.length)}:`);
    out(formatPlanTable(predictions, (f.top as number | undefined) ?? 10));
    return 0;
  } finally {
    claim.release();
  }
}
