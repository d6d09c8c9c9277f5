/**
 * The actors of one run: R replicas × K stages, actor r·K + k being stage k of replica r.
 * Requests go out with the run's header; replies are unwrapped (a remote error is rethrown
 * naming the actor). Parameters live on every replica identically, so reads go to replica 0.
 */
import { createHash } from 'node:crypto';
import { Tensor } from '../src/tensor/tensor.js';
import { ChainruleError } from '../src/errors.js';
import { expectReply, type NamedTensors, type Reply, type Request, type StageConfig, type StageState } from '../src/wire/index.js';
import type { StageHandle, Transport } from './transports/index.js';

type Body<T extends Request['type']> = { type: T } & Omit<Extract<Request, { type: T }>, 'run' | 'stage' | 'replica' | 'step' | 'microBatch' | 'type'>;

export interface ParamSlot { stage: number; name: string; shape: readonly number[]; size: number }

export class StageGroup {
  private handles: StageHandle[] = [];
  /** Every parameter in the model's fixed order, with its stage. */
  layout: ParamSlot[] = [];
  /** The step number sent with every request. */
  step = 0;

  /** `virtualStages`: stages per device (an interleaved schedule's chunks); `stages` counts them all, K·V. */
  constructor(readonly run: string, readonly replicas: number, readonly stages: number, readonly virtualStages = 1) {}

  get size(): number { return this.replicas * this.stages; }
  /** Devices per replica (K): the stages, or the stages over the virtual stages per device. */
  get devices(): number { return this.stages / this.virtualStages; }
  /** Each actor's name, as its transport gives it (`stage 1 (threads)`), in actor order. */
  get names(): string[] { return this.handles.map((h) => h.name); }
  get parameterCount(): number { return this.layout.reduce((n, l) => n + l.size, 0); }

  /** Starts the actors, configures each with its layers, and reads the parameter layout. */
  async open(transport: Transport, config: (stage: number) => StageConfig, parameterCounts?: readonly number[]): Promise<void> {
    if (this.virtualStages > 1 && !transport.hostsVirtualStages) {
      throw new ChainruleError('VIRTUAL_STAGES_PLACEMENT', `--virtual-stages ${this.virtualStages} (options.virtualStages) is not supported with the ${transport.kind} placement: its chunks of one device must share a thread or process`,
        { hint: 'use --placement local or threads, or --virtual-stages 1' });
    }
    this.handles = await transport.open({ replicas: this.replicas, stages: this.stages, parameterCounts, virtualStages: this.virtualStages }, this.run);
    await this.all((_, k) => ({ type: 'configure', config: config(k) }), 'configured');
    this.layout = [];
    for (let k = 0; k < this.stages; k++) {
      for (const [name, t] of Object.entries((await this.ask(k, { type: 'getParams' }, 'tensors')).tensors)) {
        this.layout.push({ stage: k, name, shape: t.shape, size: t.size });
      }
    }
  }

  /** One request to actor `a` (replica-major index); the reply unwrapped as `type`. */
  async request<T extends Request['type'], R extends Reply['type']>(a: number, body: Body<T>, type: R, microBatch = -1): Promise<Extract<Reply, { type: R }>> {
    const h = this.handles[a]!;
    const req = { run: this.run, stage: a % this.stages, replica: Math.floor(a / this.stages), step: this.step, microBatch, ...body } as unknown as Request;
    return expectReply(await h.request(req), type, h.name);
  }

  /** A request to stage k of replica 0 (which holds the same parameters as every other replica). */
  ask<T extends Request['type'], R extends Reply['type']>(k: number, body: Body<T>, type: R): Promise<Extract<Reply, { type: R }>> {
    return this.request(k, body, type);
  }

  /** The same kind of request to every actor at once, replies in actor order. */
  all<T extends Request['type'], R extends Reply['type']>(body: (replica: number, stage: number) => Body<T>, type: R): Promise<Extract<Reply, { type: R }>[]> {
    return Promise.all(Array.from({ length: this.size }, (_, a) => this.request(a, body(Math.floor(a / this.stages), a % this.stages), type)));
  }

  /** Every parameter, by name, in the model's fixed order. */
  async parameters(): Promise<NamedTensors> {
    const out: NamedTensors = {};
    for (let k = 0; k < this.stages; k++) Object.assign(out, (await this.ask(k, { type: 'getParams' }, 'tensors')).tensors);
    return out;
  }

  /** SHA-256 over every parameter (name, shape, raw bytes) in the fixed order: equal only for bit-identical weights. */
  async weightsSha256(): Promise<string> {
    const hash = createHash('sha256');
    for (const [name, t] of Object.entries(await this.parameters())) {
      hash.update(`${name}:${t.shape.join('x')}:${t.dtype};`);
      hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
    return hash.digest('hex');
  }

  /** Every parameter as one float64 vector, in the layout's order. */
  async flatParameters(): Promise<Float64Array> {
    return this.flatten(await this.parameters());
  }

  /** Named tensors as one float64 vector in the layout's order, each value divided by `divisor`. */
  flatten(named: NamedTensors, divisor = 1): Float64Array {
    const x = new Float64Array(this.parameterCount);
    let off = 0;
    for (const l of this.layout) {
      const d = named[l.name]!.data;
      if (divisor === 1) x.set(d, off);
      else for (let i = 0; i < l.size; i++) x[off + i] = d[i]! / divisor;
      off += l.size;
    }
    return x;
  }

  /** Writes a flat vector back into every replica's parameters. */
  async setFlatParameters(x: Float64Array): Promise<void> {
    const perStage: NamedTensors[] = Array.from({ length: this.stages }, () => ({}));
    let off = 0;
    for (const l of this.layout) {
      perStage[l.stage]![l.name] = new Tensor(Float32Array.from(x.subarray(off, off + l.size)), l.shape);
      off += l.size;
    }
    await this.all((_, k) => ({ type: 'setParams', params: perStage[k]! }), 'ok');
  }

  /** Parameter gradients summed over the step (and reduced across replicas), by name. */
  async gradients(): Promise<NamedTensors> {
    const out: NamedTensors = {};
    for (let k = 0; k < this.stages; k++) Object.assign(out, (await this.ask(k, { type: 'gradients' }, 'tensors')).tensors);
    return out;
  }

  /** Every stage's state (parameters, buffers, optimizer slots) merged by name: independent of the layout. */
  async state(): Promise<StageState> {
    const states: StageState[] = [];
    for (let k = 0; k < this.stages; k++) states.push((await this.ask(k, { type: 'getState' }, 'state')).state);
    return mergeStates(states);
  }

  /** Restores a merged state into every actor, each taking its own stage's share. */
  async setState(state: StageState): Promise<void> {
    await this.all((_, k) => {
      const own = this.layout.filter((l) => l.stage === k).map((l) => l.name);
      const pick = <T>(m: Record<string, T>) => Object.fromEntries(own.filter((n) => Object.hasOwn(m, n)).map((n) => [n, m[n]!]));
      return {
        type: 'setState',
        state: {
          params: pick(state.params),
          buffers: state.buffers,
          optimizer: state.optimizer ? { type: state.optimizer.type, t: state.optimizer.t, slots: pick(state.optimizer.slots) } : null,
          lastStep: state.lastStep,
        },
      };
    }, 'ok');
  }
}

/** Stage states merged by name (a state independent of the layout that held it). */
export function mergeStates(states: readonly StageState[]): StageState {
  const merged: StageState = { params: {}, buffers: {}, optimizer: null, lastStep: -1 };
  for (const st of states) {
    Object.assign(merged.params, st.params);
    Object.assign(merged.buffers, st.buffers);
    merged.lastStep = Math.max(merged.lastStep, st.lastStep);
    if (st.optimizer) {
      merged.optimizer ??= { type: st.optimizer.type, t: st.optimizer.t, slots: {} };
      Object.assign(merged.optimizer.slots, st.optimizer.slots);
    }
  }
  return merged;
}
