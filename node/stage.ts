/**
 * The stage actor: a contiguous range of layers, plus the tapes of its in-flight
 * micro-batches. It answers the requests of src/wire/messages.ts wherever it runs
 * (in-process, on a worker thread, on a gRPC node) and exchanges activations and
 * gradients directly with its neighbours through PeerLinks.
 */
import { ChainruleError } from '../src/errors.js';
import { Tensor, fmtShape, sameShape } from '../src/tensor/tensor.js';
import { Arena } from '../src/tensor/arena.js';
import { allFinite, firstNonFinite } from '../src/tensor/finite.js';
import { Tape, noGrad } from '../src/autograd/index.js';
import { Sequential, getLoss, type Loss } from '../src/nn/index.js';
import { createOptimizer, type ElementwiseOptimizer, type OptimizerSpec, type OptimizerState } from '../src/optim/index.js';
import {
  parseAction, type NamedTensors, type PeerMessage, type Reply, type Request, type StageConfig,
  type StageState, type StepReport, type StepWork, type Targets, SPAN, epochNow, MAX_STEPS_PER_REQUEST,
} from '../src/wire/index.js';
import { Inbox } from './inbox.js';
import { SharedReduce, replicaChunk } from './shared-reduce.js';
import { CommitStore } from './commit-store.js';
import { SendGroup } from './sends.js';
import { codeOf } from './internal.js';
import { FiniteWatch } from './finite-watch.js';
import { KernelThreadTuner } from './kernel-tuner.js';
import type { DeviceTurns } from './device-turns.js';
import { checkShapeCaps, checkSpecCaps, type NodeCaps } from './caps.js';
import { backend, checkKernelThreads, withKernelThreads } from '../src/tensor/backend.js';
import { claimBackend } from '../src/tensor/select.js';

/** A one-way line to a neighbouring stage; resolves when the neighbour has accepted the message. */
export interface PeerLink {
  send(msg: PeerMessage): Promise<void>;
  /** Takes an arrived message at once, if the link can (threads); true if it took one. */
  poll?(): boolean;
  close?(): void | Promise<void>;
}

interface InFlight {
  tape: Tape;
  x: Tensor;
  out: Tensor;
  loss: Tensor | null;
  aux: Tensor[];
}

/** How long a stage polls a thread link for the message it waits for before it sleeps. */
const SPIN_MS = 0.1;

export class StageError extends ChainruleError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

export class StageActor {
  private model: Sequential | null = null;
  private config: StageConfig | null = null;
  private run = '';
  private loss: Loss | null = null;
  private tapes = new Map<number, InFlight>();
  private inbox: Inbox;
  private currentStep = -1;
  private lastBackward = -1;
  private reports = new Map<number, StepReport>();
  private running = new Map<number, Promise<StepReport>>();
  private optimizer: ElementwiseOptimizer | null = null;
  private lastOptimizerStep = -1;
  private restoredOptimizer: OptimizerState | null = null;
  private backendClaim: ReturnType<typeof claimBackend> | null = null;
  /** The buffers (BatchNorm statistics) as they were before the current step, for a skipStep. */
  private buffersBefore: { step: number; data: Float32Array[] } | null = null;
  /** The whole gradient as one vector while it is reduced across replicas (kept between steps). */
  private flatGrad: Float32Array | null = null;
  /** This replica's chunk of the sum while it is reduced (kept between steps: a fresh 10 MB a step drives the GC). */
  private reduceSum: Float32Array | null = null;
  /** Yield to the event loop after each send (links over sockets need it; in-process ones do not). */
  flushAfterSend = false;
  /**
   * How a bug of ours (an engine error such as `x is not a function`) is answered: a node logs
   * it and answers with an incident number. Without it the engine's text is included.
   */
  onInternalError: ((e: unknown, where: string) => string) | null = null;
  /**
   * A node's limits on what a configure may allocate (node/caps.ts), and the parameters its
   * other actors hold; null in a coordinator's own process and threads.
   */
  caps: (NodeCaps & { held(): number }) | null = null;
  prev: PeerLink | null = null;
  next: PeerLink | null = null;
  /** The same stage in every replica, by replica index (null at this actor's own). */
  peers: (PeerLink | null)[] = [];
  /** Replicas on threads of one process reduce through this shared buffer instead of messages. */
  sharedReduceBuffer: SharedArrayBuffer | null = null;
  private shared: SharedReduce | null = null;
  /** Where each parameter is in the flat parameter vector (the shared memory's layout): its offset and size. */
  private paramAt = new Map<string, { off: number; n: number }>();
  /** What a training step's forward and backward allocate, reused by the next step (src/tensor/arena.ts). */
  private readonly arena = new Arena();
  /**
   * The device this actor shares with other stages (an interleaved schedule's chunks on one
   * thread or process): a runStep with an `order` takes the device's turn before each action.
   */
  turns: DeviceTurns | null = null;
  /** The recovery commits kept here (their buffers reach the coordinator when threads host this actor). */
  readonly commits = new CommitStore();

  constructor(readonly index: number, readonly replica = 0, private readonly timeoutMs = 120_000) {
    this.inbox = new Inbox(() => 1, timeoutMs, this.name);
  }

  get name(): string { return this.replica === 0 && (this.config?.replicas ?? 1) === 1 ? `stage ${this.index}` : `stage ${this.index} of replica ${this.replica}`; }
  get replicas(): number { return this.config?.replicas ?? 1; }
  get isFirst(): boolean { return this.config !== null && this.config.start === 0; }
  get isLast(): boolean { return this.config !== null && this.config.end === this.config.model.layers.length; }
  get inFlight(): number { return this.tapes.size; }
  /** The parameters this actor holds (0 before its configure). */
  get parameterCount(): number { return this.model?.parameterCount() ?? 0; }

  /** Answers one request; any failure becomes an error reply naming this actor and the message. */
  async handle(req: Request): Promise<Reply> {
    try {
      return await this.dispatch(req);
    } catch (e) {
      const where = `${this.name}: ${String(req?.type)} (step ${req?.step}${req?.microBatch >= 0 ? `, micro-batch ${req.microBatch}` : ''})`;
      const code = codeOf(e, 'STAGE_FAILED');
      if (code === 'INTERNAL') {
        return { type: 'error', code, message: this.onInternalError?.(e, where) ?? `${where}: internal error: ${String((e as Error)?.message ?? e)}` };
      }
      const message = (e as Error).message;
      return { type: 'error', code, message: message.startsWith(this.name) ? message : `${where}: ${message}` };
    }
  }

  /** A neighbour's activation or gradient. */
  deliver(msg: PeerMessage): Promise<void> {
    if (msg.stage !== this.index || (msg.replica ?? 0) !== this.replica) {
      throw new StageError('WRONG_STAGE', `${this.name}: received a ${msg.type} addressed to stage ${msg.stage} of replica ${msg.replica ?? 0}`);
    }
    if (msg.run !== this.run) return Promise.resolve(); // from another run: not ours
    switch (msg.type) {
      case 'activation': return this.inbox.deliver('activation', msg.step, msg.microBatch, msg.x);
      case 'gradient': return this.inbox.deliver('gradient', msg.step, msg.microBatch, msg.dx);
      case 'reduce': {
        if (!Number.isSafeInteger(msg.from) || msg.from < 0 || msg.from >= this.replicas || msg.from === this.replica) {
          throw new StageError('BAD_MESSAGE', `${this.name}: a gradient share from replica ${JSON.stringify(msg.from)}, expected one of the other ${this.replicas - 1}`);
        }
        return this.inbox.deliver(msg.phase === 'gather' ? 'gather' : 'scatter', msg.step, msg.from, msg.g);
      }
    }
  }

  /** The run's kernel threads, at most the node's cap (the bits are the same for any count). */
  private mostKernelThreads(): number {
    const c = this.config;
    // Tuning without a count (gRPC nodes under 'auto'): up to this node's cap, where the backend has them.
    if (c?.kernelThreads === undefined && c?.tuneKernelThreads === true) {
      return this.backendClaim?.backend.kernelThreads ? this.caps?.maxKernelThreads ?? 1 : 1;
    }
    return Math.min(c?.kernelThreads ?? 1, this.caps?.maxKernelThreads ?? Infinity);
  }

  /** With config.tuneKernelThreads: the first steps measure whether `mostKernelThreads` pays. */
  private tuner: KernelThreadTuner | null = null;
  /** The count the current step runs on while the tuner tries. */
  private stepKernelThreads: number | null = null;

  private kernelThreads(): number {
    return this.tuner?.decided ?? this.stepKernelThreads ?? this.mostKernelThreads();
  }

  /** A step's work: from the step arena, its large products split among the run's kernel threads. */
  private compute<T>(fn: () => T): T {
    return withKernelThreads(this.kernelThreads(), () => this.arena.run(fn), this.name);
  }

  private ready(): { model: Sequential; config: StageConfig } {
    if (!this.model || !this.config) throw new StageError('NOT_CONFIGURED', `${this.name} is not configured: send 'configure' first`);
    return { model: this.model, config: this.config };
  }

  private async dispatch(req: Request): Promise<Reply> {
    if (req.stage !== this.index) throw new StageError('WRONG_STAGE', `${this.name}: received a request addressed to stage ${req.stage}`);
    switch (req.type) {
      case 'configure': return this.configure(req.run, req.config, req.params);
      case 'runStep': return { type: 'stepDone', report: await this.stepAndUpdate(req.step, req, req.trace === true, req.order) };
      case 'runSteps': {
        if (!Array.isArray(req.steps) || req.steps.length === 0 || req.steps.length > MAX_STEPS_PER_REQUEST) {
          throw new StageError('BAD_MESSAGE', `${this.name}: runSteps field 'steps' must be a list of 1 to ${MAX_STEPS_PER_REQUEST} steps`);
        }
        // Back to back: each step's neighbours and replica peers run the same list, so every
        // step meets its messages whatever this actor's pace.
        // All checked before any runs: a malformed request applies nothing.
        const bad = req.steps.findIndex((w) => w === null || typeof w !== 'object' || !Array.isArray(w.actions));
        if (bad >= 0) throw new StageError('BAD_MESSAGE', `${this.name}: runSteps step ${req.step + bad} (entry ${bad}) must be a map with a list of actions`);
        const reports: StepReport[] = [];
        for (const [i, work] of req.steps.entries()) reports.push(await this.stepAndUpdate(req.step + i, work, false));
        return { type: 'stepsDone', reports };
      }
      case 'forward': {
        this.beginStep(req.step);
        const r = withKernelThreads(this.kernelThreads(), () => this.forward(req.step, req.microBatch, req.x, req.targets), this.name);
        return { type: 'activations', y: r.out, loss: r.loss ?? undefined };
      }
      case 'backward': return { type: 'inputGradient', dx: withKernelThreads(this.kernelThreads(), () => this.backward(req.step, req.microBatch, req.dy), this.name) };
      case 'gradients': return { type: 'tensors', tensors: this.gradients() };
      case 'gradSquares': {
        // This stage's share of the global gradient norm (for clipping).
        let sq = 0;
        for (const [, p] of this.ready().model.parameters()) if (p.grad) for (const v of p.grad.data) sq += v * v;
        return { type: 'value', value: sq };
      }
      case 'getParams': return { type: 'tensors', tensors: this.namedParams() };
      case 'setParams': this.setParams(req.params); return { type: 'ok' };
      case 'optimizerStep': await this.optimizerStep(req.step, req.optimizer, req.lr, req.gradScale); return { type: 'ok' };
      case 'skipStep': this.skipStep(req.step); return { type: 'ok' };
      case 'getState': return { type: 'state', state: this.getState() };
      case 'getCommit': return { type: 'state', state: CommitStore.read([this.commits.buffers], req.step, this.name) };
      case 'setState': this.setState(req.state); return { type: 'ok' };
      case 'evaluate': {
        const aux: Tensor[] = [];
        const y = withKernelThreads(this.kernelThreads(), () => this.evaluate(req.x, aux), this.name);
        return { type: 'activations', y, loss: aux.reduce((s, a) => s + a.item(), 0) };
      }
      case 'shutdown': this.release(); return { type: 'ok' };
      default: throw new StageError('UNKNOWN_REQUEST', `${this.name}: unknown request type ${JSON.stringify((req as { type: unknown }).type)}`);
    }
  }

  configure(run: string, config: StageConfig, params?: NamedTensors): Reply {
    this.arena.clear();
    if (!Number.isSafeInteger(config?.capacity) || config.capacity < 1) {
      throw new StageError('BAD_CONFIG', `${this.name}: config.capacity must be a positive integer, got ${JSON.stringify(config?.capacity)}`);
    }
    const replicas = config.replicas ?? 1;
    if (!Number.isSafeInteger(replicas) || replicas < 1 || this.replica >= replicas) {
      throw new StageError('BAD_CONFIG', `${this.name}: config.replicas must be a positive integer above this actor's replica index ${this.replica}, got ${JSON.stringify(config.replicas)}`);
    }
    // On a node: refused before a layer is built when the model is larger than the node allows.
    if (this.caps) checkSpecCaps(config, this.caps, this.caps.held(), this.name);
    // Kernels are per process (per thread): refused, not swapped, if another run here uses others.
    const claim = claimBackend(config.backend, this.name);
    let model: Sequential;
    try {
      model = Sequential.fromSpec(config.model, config.seed, config.start, config.end);
      if (this.caps) checkShapeCaps(model, this.name);
    } catch (e) {
      claim.release(); // refused: the actor stays as it was
      throw e;
    }
    try {
      checkKernelThreads(claim.backend, config.kernelThreads ?? 1, `${this.name}: config.kernelThreads`);
    } catch (e) {
      claim.release();
      throw e;
    }
    this.backendClaim?.release();
    this.backendClaim = claim;
    model.microBatching = true; // weights stay fixed within a step: layers share work across its micro-batches
    this.model = model;
    this.config = config;
    this.stepKernelThreads = null;
    this.tuner = config.tuneKernelThreads === true && this.mostKernelThreads() > 1 ? new KernelThreadTuner(this.mostKernelThreads()) : null;
    this.run = run;
    this.loss = config.end === config.model.layers.length ? getLoss(config.model.loss ?? 'softmaxCrossEntropy') : null;
    this.tapes.clear();
    this.reports.clear();
    this.running.clear();
    this.currentStep = -1;
    this.optimizer = null;
    this.lastOptimizerStep = -1;
    this.flatGrad = null;
    this.reduceSum = null;
    this.shared = null;
    if (this.sharedReduceBuffer && replicas > 1) {
      this.shared = new SharedReduce(this.sharedReduceBuffer, replicas, this.replica, this.name, this.timeoutMs);
      // A buffer sized for another layout is not used: the message path needs no sizes.
      const n = model.parameters().reduce((a, [, p]) => a + p.size, 0);
      if (this.shared.parameters !== n || model.parameters().some(([, p]) => p.dtype !== 'float32')) this.shared = null;
    }
    this.paramAt = new Map();
    let off = 0;
    for (const [name, p] of model.parameters()) {
      // The replicas keep one copy of the parameters (every one writes the same initial values).
      if (this.shared) p.moveDataTo(this.shared.params.subarray(off, off + p.size));
      this.paramAt.set(name, { off, n: p.size });
      off += p.size;
    }
    this.inbox = new Inbox((kind) => (kind === 'scatter' || kind === 'gather' ? replicas : config.capacity), this.timeoutMs, this.name);
    if (params) this.setParams(params);
    return { type: 'configured', parameterCount: model.parameterCount(), inputShape: model.inputShape, outputShape: model.outputShape };
  }

  private beginStep(step: number): void {
    if (step === this.currentStep) return;
    if (step < this.currentStep) throw new StageError('STALE_STEP', `${this.name}: step ${step} is older than the current step ${this.currentStep}`);
    this.currentStep = step;
    this.lastBackward = -1;
    this.tapes.clear();
    // The last step's tapes are gone, and with them every use of what its computation allocated.
    this.arena.reset();
    this.inbox.beginStep(step);
    this.zeroGrads();
    const buffers = this.ready().model.layers.flatMap((l) => l.buffers.map(([, b]) => b.data as Float32Array));
    this.buffersBefore = buffers.length > 0 ? { step, data: buffers.map((b) => b.slice()) } : null;
  }

  /** Drops step `step`: no update (none was applied), its gradients cleared, buffers as before it. */
  private skipStep(step: number): void {
    const before = this.buffersBefore;
    if (before && before.step === step) {
      const buffers = this.ready().model.layers.flatMap((l) => l.buffers.map(([, b]) => b.data));
      for (const [i, b] of buffers.entries()) b.set(before.data[i]!);
    }
    this.zeroGrads();
  }

  /** Labels one per sample; float targets shaped like the output and finite (the in-process transport skips the codec). */
  private checkTargets(t: Targets, out: Tensor, mb: number): void {
    const where = `${this.name}: the targets of micro-batch ${mb}`;
    const labels = this.loss!.name === 'softmaxCrossEntropy';
    if (labels !== !(t instanceof Tensor)) {
      throw new StageError('BAD_TARGETS', `${where}: loss ${this.loss!.name} needs ${labels ? 'integer labels' : `float targets shaped like the output ${fmtShape(out.shape)}`}, got ${t instanceof Tensor ? `a tensor ${fmtShape(t.shape)}` : `${t.length} integer labels`}`);
    }
    if (!(t instanceof Tensor)) {
      if (t.length !== out.shape[0]) throw new StageError('BAD_TARGETS', `${where} are ${t.length} labels for an output of ${fmtShape(out.shape)}`);
      return;
    }
    if (!sameShape(t.shape, out.shape)) throw new StageError('BAD_TARGETS', `${where} have shape ${fmtShape(t.shape)}, the output has ${fmtShape(out.shape)}`);
    if (!allFinite(t.data)) {
      const i = firstNonFinite(t.data);
      throw new StageError('BAD_TARGETS', `${where}: value ${t.data[i]} at index ${i} is not finite`);
    }
  }

  private checkInput(x: Tensor, what: string): void {
    const { model } = this.ready();
    const want = model.inputShape;
    if (x.rank !== want.length + 1 || !sameShape(x.shape.slice(1), want)) {
      throw new StageError('BAD_SHAPE', `${this.name}: ${what} has shape ${fmtShape(x.shape)}, expected [batch, ${want.join(', ')}]`);
    }
  }

  /** Forward of one micro-batch, keeping its tape until its backward. */
  /**
   * Forward of one micro-batch, keeping its tape until its backward. `stream` numbers the
   * micro-batch across replicas (replica·M + mb) for dropout and sampling, so that R replicas
   * of M micro-batches draw what one replica of R·M would.
   */
  forward(step: number, mb: number, input: Tensor, targets?: Targets, stream = mb): { out: Tensor; loss: number | null; aux: number } {
    const { model, config } = this.ready();
    if (this.tapes.has(mb)) throw new StageError('DUPLICATE_FORWARD', `${this.name}: micro-batch ${mb} of step ${step} is already in flight`);
    if (this.tapes.size >= config.capacity) {
      throw new StageError('TOO_MANY_IN_FLIGHT', `${this.name}: ${this.tapes.size} micro-batches in flight, the capacity is ${config.capacity}`);
    }
    this.checkInput(input, `the activation of micro-batch ${mb}`);
    // A fresh leaf: the first stage needs no input gradient; later stages send theirs back.
    const x = new Tensor(input.data, input.shape, !this.isFirst);
    const tape = new Tape();
    const aux: Tensor[] = [];
    const out = tape.run(() => model.forward(x, { training: true, seed: config.seed, step, microBatch: stream, auxLosses: aux }));
    let loss: Tensor | null = null;
    if (this.loss) {
      const t = targets;
      if (t === undefined) throw new StageError('MISSING_TARGETS', `${this.name}: the last stage needs targets for micro-batch ${mb}`);
      this.checkTargets(t, out, mb);
      loss = tape.run(() => this.loss!.compute(out, t, 'sum'));
    }
    this.tapes.set(mb, { tape, x, out, loss, aux });
    const auxSum = aux.reduce((s, a) => s + a.item(), 0);
    return { out, loss: loss ? loss.item() : null, aux: auxSum };
  }

  /**
   * Backward of one micro-batch. Micro-batches must come back in ascending order: that
   * order is the one fixed order in which parameter gradients are summed.
   */
  backward(step: number, mb: number, dy?: Tensor): Tensor | null {
    const f = this.tapes.get(mb);
    if (!f || step !== this.currentStep) throw new StageError('NO_FORWARD', `${this.name}: backward of micro-batch ${mb} (step ${step}) before its forward`);
    if (mb <= this.lastBackward) throw new StageError('BACKWARD_ORDER', `${this.name}: backward of micro-batch ${mb} after ${this.lastBackward}; backwards must come in ascending order`);
    const roots: [Tensor, Tensor | undefined][] = f.aux.map((a) => [a, undefined]);
    if (f.loss) roots.unshift([f.loss, undefined]);
    else {
      if (!dy) throw new StageError('MISSING_GRADIENT', `${this.name}: backward of micro-batch ${mb} needs the output gradient`);
      if (!sameShape(dy.shape, f.out.shape)) throw new StageError('BAD_SHAPE', `${this.name}: output gradient ${fmtShape(dy.shape)} != output ${fmtShape(f.out.shape)}`);
      roots.unshift([f.out, dy.dtype === f.out.dtype ? dy : dy.to(f.out.dtype)]);
    }
    f.tape.backwardFrom(roots);
    this.tapes.delete(mb); // its backward has come: free the tape
    this.lastBackward = mb;
    if (this.isFirst) return null;
    return f.x.grad ?? Tensor.zeros(f.x.shape, f.x.dtype);
  }

  /**
   * A neighbour's activation or gradient: taken from the link for up to SPIN_MS first where the
   * link can be polled (threads), since a sleeping thread wakes later than a neighbour a
   * micro-batch ahead sends.
   */
  private arrival(kind: 'activation' | 'gradient', step: number, mb: number, link: PeerLink | null): Promise<Tensor> {
    if (link?.poll && !this.inbox.has(kind, step, mb)) {
      const end = performance.now() + SPIN_MS;
      while (!this.inbox.has(kind, step, mb) && performance.now() < end) link.poll();
    }
    return this.inbox.take(kind, step, mb);
  }

  /** One step's actions, with its recovery commit first and its optimizer update after, when asked. */
  private async stepAndUpdate(step: number, work: StepWork, tracing: boolean, order?: string[]): Promise<StepReport> {
    let commitMs: number | undefined;
    if (work.commit !== undefined && !this.reports.has(step) && !this.running.has(step)) {
      const tc = performance.now();
      this.keepCommit(step, work.commit === 'share');
      commitMs = performance.now() - tc;
    }
    if (this.tuner) this.stepKernelThreads = this.tuner.threadsFor(step);
    const threads = this.kernelThreads();
    const splits0 = this.tuner ? backend().kernelThreads?.splits() ?? 0 : 0;
    const report = await this.runStep(step, work.actions, work.inputs, work.targets, tracing, order);
    if (commitMs !== undefined) report.commitMs = commitMs;
    // A step with a NaN or infinity is never applied here; the coordinator decides for the others.
    let updateMs = 0;
    if (work.optimize && !report.nonFinite) {
      const t0 = epochNow();
      const applied = await this.optimizerStep(step, work.optimize.optimizer, work.optimize.lr, work.optimize.gradScale);
      updateMs = epochNow() - t0;
      if (applied && report.trace) report.trace.push(SPAN.optimizer, -1, t0, epochNow());
    }
    this.tuner?.finish(step, report.busyMs + updateMs, (backend().kernelThreads?.splits() ?? 0) - splits0);
    // What the actor runs on: while the trials alternate counts, nothing (one, for the summary).
    const runsOn = this.tuner ? this.tuner.runsOn : threads;
    if (runsOn !== null && runsOn > 1) report.kernelThreads = runsOn;
    if (report.clock) report.clock[1] = epochNow();
    return report;
  }

  /**
   * Runs this stage's actions of one step; activations and gradients go straight to the
   * neighbours. With `order` (the whole action list of the device this actor shares with other
   * stages) each action waits for its turn in that order.
   */
  runStep(step: number, actions: string[], inputs?: Tensor[], targets?: Targets[], trace = false, order?: string[]): Promise<StepReport> {
    const done = this.reports.get(step);
    if (done) return Promise.resolve(done); // a duplicate runStep is applied once
    const running = this.running.get(step);
    if (running) return running;
    let turns: DeviceTurns | null = null;
    if (order !== undefined) {
      if (!Array.isArray(order) || order.some((t) => typeof t !== 'string')) return Promise.reject(new StageError('BAD_MESSAGE', `${this.name}: runStep field 'order' must be a list of actions such as "2F0"`));
      if (!this.turns) return Promise.reject(new StageError('NOT_COLOCATED', `${this.name}: a runStep with a device order (an interleaved schedule), but this actor shares no device with other stages here; its placement does not host --virtual-stages`));
      turns = this.turns;
      turns.begin(step, order);
    }
    const p = this.execute(step, actions, inputs, targets, trace, turns)
      .catch((e: unknown) => { turns?.fail(step, e, this.name); throw e; })
      .finally(() => this.running.delete(step));
    this.running.set(step, p);
    return p;
  }

  private async execute(step: number, actions: string[], inputs?: Tensor[], targets?: Targets[], trace = false, turns: DeviceTurns | null = null): Promise<StepReport> {
    const { config } = this.ready();
    const clockIn = trace ? epochNow() : 0;
    this.beginStep(step);
    const t0 = performance.now();
    // Spans reuse the performance.now() readings taken for busy time; shifted to the epoch clock once, at the end.
    const spans: number[] | null = trace ? [] : null;
    const traced = (sent: Promise<void>, mb: number): Promise<void> => {
      if (spans) {
        const ts = performance.now();
        sent.then(() => { spans.push(SPAN.send, mb, ts, performance.now()); }, () => {});
      }
      return sent;
    };
    let busy = 0;
    const losses: number[] = [];
    // Every send is handled the moment it is made: a neighbour's failure fails this step
    // (at its next wait), never the process.
    const pending = new SendGroup();
    const microBatches = actions.reduce((n, t) => n + (t.includes('F') ? 1 : 0), 0);
    const watch = new FiniteWatch(this.ready().model, (mb) => ({ training: true, seed: config.seed, step, microBatch: this.replica * microBatches + mb, auxLosses: [] }));
    for (const text of actions) {
      const a = parseAction(text);
      if (a.stage !== this.index) throw new StageError('WRONG_STAGE', `${this.name}: action ${text} belongs to stage ${a.stage}`);
      const mb = a.microBatch;
      // The device's turn: waits, computes and sends in the schedule's order.
      if (turns) {
        const tw = performance.now();
        await pending.race(turns.turn(step, text));
        spans?.push(SPAN.wait, mb, tw, performance.now());
      }
      const release = () => turns?.done(step, text);
      if (a.kind === 'W') {
        // A split backward's weight gradient (zero-bubble schedules): the products the
        // backwards deferred through this micro-batch (tagged by stream, as in the forward),
        // one GEMM per deferring layer (dense). Layers that compute their weight gradients in
        // the backward (conv, recurrent, normalization...) have nothing deferred: for them W
        // is a no-op and B did all the work.
        if (mb > this.lastBackward) throw new StageError('WEIGHT_BEFORE_BACKWARD', `${this.name}: weight gradient of micro-batch ${mb} before its backward`);
        const tb = performance.now();
        this.compute(() => this.ready().model.flushDeferredGrads(this.replica * microBatches + mb));
        const te = performance.now();
        busy += te - tb;
        spans?.push(SPAN.weight, mb, tb, te);
        release();
        continue;
      }
      if (a.kind === 'F') {
        let x: Tensor;
        if (this.isFirst) {
          const given = inputs?.[mb];
          if (!given) throw new StageError('MISSING_INPUT', `${this.name}: no input for micro-batch ${mb}`);
          x = given;
        } else {
          const tw = performance.now();
          x = await pending.race(this.arrival('activation', step, mb, this.prev));
          spans?.push(SPAN.wait, mb, tw, performance.now());
        }
        const tb = performance.now();
        const r = this.compute(() => this.forward(step, mb, x, targets?.[mb], this.replica * microBatches + mb));
        const te = performance.now();
        busy += te - tb;
        spans?.push(SPAN.forward, mb, tb, te);
        losses[mb] = (r.loss ?? 0) + r.aux;
        const y = watch.forward(mb, x, r.out, losses[mb]!);
        if (!this.isLast) {
          pending.add(traced(this.link('next').send({ type: 'activation', run: this.run, stage: this.index + 1, replica: this.replica, step, microBatch: mb, x: y }), mb));
        }
      } else {
        let dy: Tensor | undefined;
        if (!this.isLast) {
          const tw = performance.now();
          dy = await pending.race(this.arrival('gradient', step, mb, this.next));
          spans?.push(SPAN.wait, mb, tw, performance.now());
        }
        const tb = performance.now();
        const dx = this.compute(() => this.backward(step, mb, dy));
        const te = performance.now();
        busy += te - tb;
        spans?.push(SPAN.backward, mb, tb, te);
        if (dx) pending.add(traced(this.link('prev').send({ type: 'gradient', run: this.run, stage: this.index - 1, replica: this.replica, step, microBatch: mb, dx: watch.backward(mb, dx) }), mb));
      }
      release();
      // Back-pressure: never more unacknowledged sends than the capacity.
      if (pending.size >= config.capacity) await pending.shift();
      // Let the event loop write what was just sent (a socket write waits for it) before
      // the next action's computation holds the thread.
      if (pending.size > 0 && this.flushAfterSend) await new Promise<void>((r) => setImmediate(r));
    }
    // The W pass: the weight gradients deferred by this step's backwards, before anyone
    // (the replicas' reduction, the optimizer) reads them. After a W action for every
    // micro-batch nothing is left to compute; this still ends the step's reuse of packs.
    // A device's stages do theirs once the device has run all its actions: in its
    // cool-down, a stage's W pass would hold up the device's other backwards.
    if (turns) await pending.race(turns.finished(step));
    const tw = performance.now();
    this.compute(() => this.ready().model.flushDeferredGrads());
    watch.gradients();
    const twe = performance.now();
    busy += twe - tw;
    await pending.all();
    if (this.replicas > 1) {
      const tr = performance.now();
      await this.allReduce(step);
      const te = performance.now();
      busy += te - tr;
      spans?.push(SPAN.reduce, -1, tr, te);
    }
    const report: StepReport = { losses: Array.from({ length: losses.length }, (_, i) => losses[i] ?? 0), busyMs: busy, wallMs: performance.now() - t0 };
    if (watch.found) report.nonFinite = watch.found;
    if (spans) {
      const origin = performance.timeOrigin;
      for (let i = 2; i < spans.length; i += 4) { spans[i] += origin; spans[i + 1] += origin; }
      report.trace = spans;
      report.clock = [clockIn, epochNow()];
    }
    this.reports.clear();
    this.reports.set(step, report);
    return report;
  }

  /**
   * Sums this stage's gradients with the same stage of every other replica, among the
   * actors themselves: each owns a contiguous chunk of the flat gradient, sums everyone's
   * share of it in replica order 0, 1, …, R−1 (one fixed order, so the placement never
   * changes the bits), and sends the sum back to all (a reduce-scatter, then an all-gather).
   */
  private async allReduce(step: number): Promise<void> {
    if (this.shared) return this.sharedReduce(step);
    const params = this.ready().model.parameters();
    const R = this.replicas;
    const r = this.replica;
    const N = params.reduce((n, [, p]) => n + p.size, 0);
    const g = (this.flatGrad ??= new Float32Array(N));
    let off = 0;
    for (const [, p] of params) {
      if (p.grad) g.set(p.grad.data as Float32Array, off);
      else g.fill(0, off, off + p.size);
      off += p.size;
    }
    const cut = (j: number) => replicaChunk(j, N, R)[0];
    const chunk = (j: number) => g.subarray(cut(j), cut(j + 1));
    const header = (j: number) => ({ run: this.run, stage: this.index, replica: j, step, microBatch: -1 });
    const sends = new SendGroup();
    for (let j = 0; j < R; j++) {
      if (j !== r) sends.add(this.peer(j).send({ type: 'reduce', phase: 'scatter', from: r, g: new Tensor(chunk(j), [chunk(j).length]), ...header(j) }));
    }
    const mine = chunk(r);
    if (this.reduceSum?.length !== mine.length) this.reduceSum = new Float32Array(mine.length);
    const acc = this.reduceSum;
    for (let q = 0; q < R; q++) {
      const part = q === r ? mine : ((await sends.race(this.inbox.take('scatter', step, q, `replica ${q}'s gradient share`))).data as Float32Array);
      if (part.length !== acc.length) throw new StageError('BAD_SHAPE', `${this.name}: replica ${q}'s gradient share has ${part.length} values, expected ${acc.length}`);
      if (q === 0) acc.set(part);
      else backend().binary('add', acc, [acc.length], part, [acc.length], acc, [acc.length]);
    }
    for (let j = 0; j < R; j++) {
      if (j !== r) sends.add(this.peer(j).send({ type: 'reduce', phase: 'gather', from: r, g: new Tensor(acc, [acc.length]), ...header(j) }));
    }
    mine.set(acc);
    for (let q = 0; q < R; q++) {
      if (q === r) continue;
      const part = (await sends.race(this.inbox.take('gather', step, q, `replica ${q}'s summed chunk`))).data;
      if (part.length !== cut(q + 1) - cut(q)) throw new StageError('BAD_SHAPE', `${this.name}: replica ${q}'s summed chunk has ${part.length} values, expected ${cut(q + 1) - cut(q)}`);
      g.set(part, cut(q));
    }
    await sends.all();
    off = 0;
    for (const [, p] of params) {
      (p.grad ?? p.gradToOverwrite()).data.set(g.subarray(off, off + p.size));
      off += p.size;
    }
  }

  /** The all-reduce through shared memory: the backward wrote into this replica's region. */
  private async sharedReduce(step: number): Promise<void> {
    const shared = this.shared!;
    const params = this.ready().model.parameters();
    const own = shared.ownViews(params.map(([, p]) => p.shape));
    for (const [i, [, p]] of params.entries()) {
      // A gradient that is not in the region yet (none at all, or a buffer of before) is copied in.
      const g = p.grad;
      if (g === null) own[i]!.data.fill(0);
      else if (g.data.buffer !== own[i]!.data.buffer || g.data.byteOffset !== own[i]!.data.byteOffset) own[i]!.data.set(g.data);
    }
    await shared.reduce(step);
    // Every replica reads the one sum: the optimizer, clipping and `gradients` see it.
    const sum = shared.sumViews(params.map(([, p]) => p.shape));
    for (const [i, [, p]] of params.entries()) p.grad = sum[i]!;
  }

  /** Clears the gradients; with shared reduction, the next backward accumulates into this replica's region. */
  private zeroGrads(): void {
    const params = this.ready().model.parameters();
    for (const [, p] of params) p.zeroGrad();
    if (this.shared) {
      const own = this.shared.ownViews(params.map(([, p]) => p.shape));
      for (const [i, [, p]] of params.entries()) p.useGradBuffer(own[i]!);
    }
  }

  private peer(replica: number): PeerLink {
    const l = this.peers[replica];
    if (!l) throw new StageError('NOT_CONNECTED', `${this.name} has no link to stage ${this.index} of replica ${replica}`);
    return l;
  }

  /** Frees what this actor holds: its tapes and its claim on the process's backend. */
  release(): void {
    this.inbox.close('released (its run was shut down) while waiting for a neighbour');
    this.tapes.clear();
    this.backendClaim?.release();
    this.backendClaim = null;
  }

  private link(which: 'prev' | 'next'): PeerLink {
    const l = this[which];
    if (!l) throw new StageError('NOT_CONNECTED', `${this.name} has no link to its ${which === 'next' ? 'next' : 'previous'} stage`);
    return l;
  }

  namedParams(): NamedTensors {
    const out: NamedTensors = {};
    for (const [name, p] of this.ready().model.parameters()) out[name] = new Tensor(p.data, p.shape);
    return out;
  }

  private namedBuffers(): NamedTensors {
    const out: NamedTensors = {};
    for (const [i, layer] of this.ready().model.layers.entries()) {
      for (const [name, b] of layer.buffers) out[`${this.ready().model.offset + i}.${name}`] = b;
    }
    return out;
  }

  /** Parameter gradients summed over the step's micro-batches (unscaled). */
  gradients(): NamedTensors {
    const out: NamedTensors = {};
    for (const [name, p] of this.ready().model.parameters()) out[name] = p.grad ?? Tensor.zeros(p.shape, p.dtype);
    return out;
  }

  setParams(params: NamedTensors): void {
    const own = new Map(this.ready().model.parameters());
    for (const [name, t] of Object.entries(params)) {
      const p = own.get(name);
      if (!p) throw new StageError('UNKNOWN_PARAMETER', `${this.name}: no parameter named '${name}' (this stage has ${[...own.keys()].join(', ')})`);
      if (!sameShape(p.shape, t.shape)) throw new StageError('BAD_SHAPE', `${this.name}: parameter '${name}' is ${fmtShape(p.shape)}, got ${fmtShape(t.shape)}`);
      p.data.set(t.data);
    }
  }

  /**
   * Applies one optimizer step; false for a duplicate (already applied) one. Replicas on
   * threads share the parameters and slots: each updates its chunk, then waits for the others.
   */
  async optimizerStep(step: number, spec: OptimizerSpec, lr: number, gradScale: number): Promise<boolean> {
    if (step <= this.lastOptimizerStep) return false; // a duplicate step is applied once
    const shared = this.shared;
    if (!this.optimizer || JSON.stringify(this.optimizer.spec) !== JSON.stringify(spec)) {
      const carried = this.optimizer?.getState() ?? this.restoredOptimizer;
      this.optimizer = createOptimizer(spec);
      if (shared) this.optimizer.storage = (name, j, n) => { const { off } = this.paramAt.get(name)!; return shared.slot(j).subarray(off, off + n); };
      if (carried && carried.type === spec.type) this.optimizer.setState(carried, shared ? (name) => this.ownPart(name) : undefined);
      this.restoredOptimizer = null;
    }
    const params = this.ready().model.parameters().map(([name, p]) => ({ name, value: p.data, grad: p.grad ? p.grad.data : null, ...(shared ? this.ownPart(name) : {}) }));
    this.optimizer.step(params, { lr, gradScale });
    this.zeroGrads();
    this.lastOptimizerStep = step;
    if (shared) await shared.updated(step);
    return true;
  }

  /** The part [lo, hi) of a parameter in this replica's chunk of the shared update. */
  private ownPart(name: string): { lo: number; hi: number } {
    const at = this.paramAt.get(name);
    if (!at) throw new StageError('UNKNOWN_PARAMETER', `${this.name}: no parameter named '${name}'`);
    const { off, n } = at;
    const [lo, hi] = replicaChunk(this.replica, this.shared!.parameters, this.replicas);
    const a = Math.min(n, Math.max(0, lo - off));
    return { lo: a, hi: Math.max(a, Math.min(n, hi - off)) };
  }

  /** Forward without a tape; auxiliary loss terms (e.g. a KL) are collected into `aux`. */
  evaluate(input: Tensor, aux: Tensor[] = []): Tensor {
    const { model, config } = this.ready();
    this.checkInput(input, 'the evaluation batch');
    return noGrad(() => model.forward(new Tensor(input.data, input.shape), { training: false, seed: config.seed, step: 0, microBatch: 0, auxLosses: aux }));
  }

  /** Copies this actor's state (or with `share`, this replica's share of it) as the recovery commit of `step`, kept here. */
  keepCommit(step: number, share = false): void {
    const { model } = this.ready();
    // A restored state's slots are Float32Arrays (setState makes them so).
    const opt = this.optimizer?.peekState() ?? (this.restoredOptimizer as ReturnType<ElementwiseOptimizer['peekState']> | null);
    this.commits.write(step, {
      params: model.parameters().map(([name, p]) => [name, p.data, p.shape]),
      buffers: Object.entries(this.namedBuffers()).map(([name, t]) => [name, t.data, t.shape]),
      optimizer: opt,
      lastStep: this.lastOptimizerStep,
    }, share ? { index: this.replica, of: this.replicas } : undefined);
  }

  getState(): StageState {
    // A state set and not yet stepped on is still this stage's: a checkpoint or commit taken then must keep its slots.
    const opt = this.optimizer?.getState() ?? this.restoredOptimizer;
    const slots: Record<string, Record<string, Tensor>> = {};
    if (opt) {
      for (const [name, s] of Object.entries(opt.slots)) {
        slots[name] = {};
        for (const [k, v] of Object.entries(s)) slots[name]![k] = new Tensor(Float32Array.from(v), [v.length]);
      }
    }
    return {
      params: this.namedParams(),
      buffers: this.namedBuffers(),
      optimizer: opt ? { type: opt.type, t: opt.t, slots } : null,
      lastStep: this.lastOptimizerStep,
    };
  }

  setState(state: StageState): void {
    this.setParams(state.params);
    const own = this.namedBuffers();
    for (const [name, t] of Object.entries(state.buffers ?? {})) own[name]?.data.set(t.data);
    this.lastOptimizerStep = state.lastStep;
    this.optimizer = null;
    this.restoredOptimizer = null;
    if (state.optimizer) {
      // Rebuilt with its hyperparameters at the next optimizerStep, which carries the spec.
      const slots: Record<string, Record<string, Float32Array>> = {};
      for (const [name, s] of Object.entries(state.optimizer.slots)) {
        slots[name] = {};
        for (const [k, v] of Object.entries(s)) slots[name]![k] = Float32Array.from(v.data);
      }
      this.restoredOptimizer = { type: state.optimizer.type, t: state.optimizer.t, slots };
    }
  }
}
