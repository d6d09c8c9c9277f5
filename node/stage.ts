/**
 * The stage actor: a contiguous range of layers, plus the tapes of its in-flight
 * micro-batches. It answers the requests of src/wire/messages.ts wherever it runs
 * (in-process, on a worker thread, on a gRPC node) and exchanges activations and
 * gradients directly with its neighbours through PeerLinks.
 */
import { ChainruleError } from '../src/errors.js';
import { Tensor, fmtShape, sameShape } from '../src/tensor/tensor.js';
import { Tape, noGrad } from '../src/autograd/index.js';
import { Sequential, getLoss, type Loss } from '../src/nn/index.js';
import { createOptimizer, type ElementwiseOptimizer, type OptimizerSpec, type OptimizerState } from '../src/optim/index.js';
import {
  parseAction, type NamedTensors, type PeerMessage, type Reply, type Request, type StageConfig,
  type StageState, type StepReport, type Targets,
} from '../src/wire/index.js';
import { Inbox } from './inbox.js';
import { backend } from '../src/tensor/backend.js';
import { selectBackend } from '../src/tensor/select.js';

/** A one-way line to a neighbouring stage; resolves when the neighbour has accepted the message. */
export interface PeerLink {
  send(msg: PeerMessage): Promise<void>;
  close?(): void | Promise<void>;
}

interface InFlight {
  tape: Tape;
  x: Tensor;
  out: Tensor;
  loss: Tensor | null;
  aux: Tensor[];
}

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
  /** Yield to the event loop after each send (links over sockets need it; in-process ones do not). */
  flushAfterSend = false;
  prev: PeerLink | null = null;
  next: PeerLink | null = null;

  constructor(readonly index: number, private readonly timeoutMs = 120_000) {
    this.inbox = new Inbox(1, timeoutMs, this.name);
  }

  get name(): string { return `stage ${this.index}`; }
  get isFirst(): boolean { return this.config !== null && this.config.start === 0; }
  get isLast(): boolean { return this.config !== null && this.config.end === this.config.model.layers.length; }
  get inFlight(): number { return this.tapes.size; }

  /** Answers one request; any failure becomes an error reply naming this actor and the message. */
  async handle(req: Request): Promise<Reply> {
    try {
      return await this.dispatch(req);
    } catch (e) {
      const err = e as Error & { code?: string };
      const where = `${this.name}: ${String(req?.type)} (step ${req?.step}${req?.microBatch >= 0 ? `, micro-batch ${req.microBatch}` : ''})`;
      return { type: 'error', code: err.code ?? 'STAGE_FAILED', message: err.message.startsWith(this.name) ? err.message : `${where}: ${err.message}` };
    }
  }

  /** A neighbour's activation or gradient. */
  deliver(msg: PeerMessage): Promise<void> {
    if (msg.stage !== this.index) throw new StageError('WRONG_STAGE', `${this.name}: received a ${msg.type} addressed to stage ${msg.stage}`);
    if (msg.run !== this.run) return Promise.resolve(); // from another run: not ours
    return msg.type === 'activation'
      ? this.inbox.deliver('activation', msg.step, msg.microBatch, msg.x)
      : this.inbox.deliver('gradient', msg.step, msg.microBatch, msg.dx);
  }

  private ready(): { model: Sequential; config: StageConfig } {
    if (!this.model || !this.config) throw new StageError('NOT_CONFIGURED', `${this.name} is not configured: send 'configure' first`);
    return { model: this.model, config: this.config };
  }

  private async dispatch(req: Request): Promise<Reply> {
    if (req.stage !== this.index) throw new StageError('WRONG_STAGE', `${this.name}: received a request addressed to stage ${req.stage}`);
    switch (req.type) {
      case 'configure': return this.configure(req.run, req.config, req.params);
      case 'connect': return { type: 'ok' }; // addresses are the host's business (see node/server.ts)
      case 'runStep': {
        const report = await this.runStep(req.step, req.actions, req.inputs, req.targets);
        if (req.optimize) this.optimizerStep(req.step, req.optimize.optimizer, req.optimize.lr, req.optimize.gradScale);
        return { type: 'stepDone', report };
      }
      case 'forward': {
        this.beginStep(req.step);
        const r = this.forward(req.step, req.microBatch, req.x, req.targets);
        return { type: 'activations', y: r.out, loss: r.loss ?? undefined };
      }
      case 'backward': return { type: 'inputGradient', dx: this.backward(req.step, req.microBatch, req.dy) };
      case 'gradients': return { type: 'tensors', tensors: this.gradients() };
      case 'gradSquares': {
        // This stage's share of the global gradient norm (for clipping).
        let sq = 0;
        for (const [, p] of this.ready().model.parameters()) if (p.grad) for (const v of p.grad.data) sq += v * v;
        return { type: 'value', value: sq };
      }
      case 'getParams': return { type: 'tensors', tensors: this.namedParams() };
      case 'setParams': this.setParams(req.params); return { type: 'ok' };
      case 'optimizerStep': this.optimizerStep(req.step, req.optimizer, req.lr, req.gradScale); return { type: 'ok' };
      case 'getState': return { type: 'state', state: this.getState() };
      case 'setState': this.setState(req.state); return { type: 'ok' };
      case 'evaluate': {
        const aux: Tensor[] = [];
        const y = this.evaluate(req.x, aux);
        return { type: 'activations', y, loss: aux.reduce((s, a) => s + a.item(), 0) };
      }
      case 'shutdown': this.tapes.clear(); return { type: 'ok' };
      default: throw new StageError('UNKNOWN_REQUEST', `${this.name}: unknown request type ${JSON.stringify((req as { type: unknown }).type)}`);
    }
  }

  configure(run: string, config: StageConfig, params?: NamedTensors): Reply {
    if (!Number.isSafeInteger(config?.capacity) || config.capacity < 1) {
      throw new StageError('BAD_CONFIG', `${this.name}: config.capacity must be a positive integer, got ${JSON.stringify(config?.capacity)}`);
    }
    if (config.backend && backend().name !== config.backend) selectBackend(config.backend);
    const model = Sequential.fromSpec(config.model, config.seed, config.start, config.end);
    model.microBatching = true; // weights stay fixed within a step: layers share work across its micro-batches
    this.model = model;
    this.config = config;
    this.run = run;
    this.loss = config.end === config.model.layers.length ? getLoss(config.model.loss ?? 'softmaxCrossEntropy') : null;
    this.tapes.clear();
    this.reports.clear();
    this.running.clear();
    this.currentStep = -1;
    this.optimizer = null;
    this.lastOptimizerStep = -1;
    this.inbox = new Inbox(config.capacity, this.timeoutMs, this.name);
    if (params) this.setParams(params);
    return { type: 'configured', parameterCount: model.parameterCount(), inputShape: model.inputShape, outputShape: model.outputShape };
  }

  private beginStep(step: number): void {
    if (step === this.currentStep) return;
    if (step < this.currentStep) throw new StageError('STALE_STEP', `${this.name}: step ${step} is older than the current step ${this.currentStep}`);
    this.currentStep = step;
    this.lastBackward = -1;
    this.tapes.clear();
    this.inbox.beginStep(step);
    for (const [, p] of this.ready().model.parameters()) p.zeroGrad();
  }

  private checkInput(x: Tensor, what: string): void {
    const { model } = this.ready();
    const want = model.inputShape;
    if (x.rank !== want.length + 1 || !sameShape(x.shape.slice(1), want)) {
      throw new StageError('BAD_SHAPE', `${this.name}: ${what} has shape ${fmtShape(x.shape)}, expected [batch, ${want.join(', ')}]`);
    }
  }

  /** Forward of one micro-batch, keeping its tape until its backward. */
  forward(step: number, mb: number, input: Tensor, targets?: Targets): { out: Tensor; loss: number | null; aux: number } {
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
    const out = tape.run(() => model.forward(x, { training: true, seed: config.seed, step, microBatch: mb, auxLosses: aux }));
    let loss: Tensor | null = null;
    if (this.loss) {
      const t = targets;
      if (t === undefined) throw new StageError('MISSING_TARGETS', `${this.name}: the last stage needs targets for micro-batch ${mb}`);
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

  /** Runs this stage's actions of one step; activations and gradients go straight to the neighbours. */
  runStep(step: number, actions: string[], inputs?: Tensor[], targets?: Targets[]): Promise<StepReport> {
    const done = this.reports.get(step);
    if (done) return Promise.resolve(done); // a duplicate runStep is applied once
    const running = this.running.get(step);
    if (running) return running;
    const p = this.execute(step, actions, inputs, targets).finally(() => this.running.delete(step));
    this.running.set(step, p);
    return p;
  }

  private async execute(step: number, actions: string[], inputs?: Tensor[], targets?: Targets[]): Promise<StepReport> {
    const { config } = this.ready();
    this.beginStep(step);
    const t0 = performance.now();
    let busy = 0;
    const losses: number[] = [];
    const pending: Promise<void>[] = [];
    for (const text of actions) {
      const a = parseAction(text);
      if (a.stage !== this.index) throw new StageError('WRONG_STAGE', `${this.name}: action ${text} belongs to stage ${a.stage}`);
      const mb = a.microBatch;
      if (a.kind === 'F') {
        let x: Tensor;
        if (this.isFirst) {
          const given = inputs?.[mb];
          if (!given) throw new StageError('MISSING_INPUT', `${this.name}: no input for micro-batch ${mb}`);
          x = given;
        } else {
          x = await this.inbox.take('activation', step, mb);
        }
        const tb = performance.now();
        const r = this.forward(step, mb, x, targets?.[mb]);
        busy += performance.now() - tb;
        losses[mb] = (r.loss ?? 0) + r.aux;
        if (!this.isLast) {
          pending.push(this.link('next').send({ type: 'activation', run: this.run, stage: this.index + 1, step, microBatch: mb, x: r.out }));
        }
      } else {
        const dy = this.isLast ? undefined : await this.inbox.take('gradient', step, mb);
        const tb = performance.now();
        const dx = this.backward(step, mb, dy);
        busy += performance.now() - tb;
        if (dx) pending.push(this.link('prev').send({ type: 'gradient', run: this.run, stage: this.index - 1, step, microBatch: mb, dx }));
      }
      // Back-pressure: never more unacknowledged sends than the capacity.
      if (pending.length >= config.capacity) await pending.shift();
      // Let the event loop write what was just sent (a socket write waits for it) before
      // the next action's computation holds the thread.
      if (pending.length > 0 && this.flushAfterSend) await new Promise<void>((r) => setImmediate(r));
    }
    // The W pass: the weight gradients deferred by this step's backwards, before anyone reads them.
    const tw = performance.now();
    this.ready().model.flushDeferredGrads();
    busy += performance.now() - tw;
    await Promise.all(pending);
    const report: StepReport = { losses: Array.from({ length: losses.length }, (_, i) => losses[i] ?? 0), busyMs: busy, wallMs: performance.now() - t0 };
    this.reports.clear();
    this.reports.set(step, report);
    return report;
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

  optimizerStep(step: number, spec: OptimizerSpec, lr: number, gradScale: number): void {
    if (step <= this.lastOptimizerStep) return; // a duplicate step is applied once
    if (!this.optimizer || JSON.stringify(this.optimizer.spec) !== JSON.stringify(spec)) {
      const carried = this.optimizer?.getState() ?? this.restoredOptimizer;
      this.optimizer = createOptimizer(spec);
      if (carried && carried.type === spec.type) this.optimizer.setState(carried);
      this.restoredOptimizer = null;
    }
    const params = this.ready().model.parameters().map(([name, p]) => ({ name, value: p.data, grad: p.grad ? p.grad.data : null }));
    this.optimizer.step(params, { lr, gradScale });
    for (const [, p] of this.ready().model.parameters()) p.zeroGrad();
    this.lastOptimizerStep = step;
  }

  /** Forward without a tape; auxiliary loss terms (e.g. a KL) are collected into `aux`. */
  evaluate(input: Tensor, aux: Tensor[] = []): Tensor {
    const { model, config } = this.ready();
    this.checkInput(input, 'the evaluation batch');
    return noGrad(() => model.forward(new Tensor(input.data, input.shape), { training: false, seed: config.seed, step: 0, microBatch: 0, auxLosses: aux }));
  }

  getState(): StageState {
    const opt = this.optimizer?.getState() ?? null;
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
