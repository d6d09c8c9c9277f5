/**
 * One pipelined step over every actor: each replica takes its contiguous shard of the
 * minibatch, cut into micro-batches; the stages run the schedule, sum their gradients in
 * micro-batch order and reduce them across replicas among themselves; then the optimizer
 * steps, in the same request when nothing global (a clipping norm, the decision to skip a step
 * with a NaN or infinity) is needed first.
 */
import { splitMicroBatches, type MicroBatch, type Targets } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { clipScale } from '../src/optim/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { epochNow, formatAction, type OptimizerStepArgs, type Request, type Schedule, type StepReport, type StepWork } from '../src/wire/index.js';
import { targetsOf } from './evaluate.js';
import type { StageGroup } from './stage-group.js';
import type { BubbleMeter } from './summary.js';
import type { StepTracer } from './trace.js';
import { NonFiniteError, earliestNonFinite, type NonFiniteAt } from './nonfinite.js';

/** Shard r of the minibatch (`y`: labels or float targets) as micro-batches: parts[r][m]. */
export function shardMinibatch(x: Tensor, y: Targets, replicas: number, microBatches: number): MicroBatch[][] {
  const flat = splitMicroBatches(x, y, replicas * microBatches);
  return Array.from({ length: replicas }, (_, r) => flat.slice(r * microBatches, (r + 1) * microBatches));
}

/** What stage k of a replica is asked for one step: its actions, the replica's inputs (first stage) and targets (last), the update and the commit. */
function stepWork(spec: ModelSpec, K: number, actions: string[], parts: MicroBatch[], k: number, optimize?: OptimizerStepArgs, commit?: 'whole' | 'share'): StepWork {
  return {
    actions,
    inputs: k === 0 ? parts.map((p) => p.x) : undefined,
    targets: k === K - 1 ? parts.map((p) => targetsOf(spec, p.x, p.y)) : undefined,
    ...(optimize ? { optimize } : {}),
    ...(commit ? { commit } : {}),
  };
}

/** A step's summed loss from its reports (actor r·K + k), in (replica, micro-batch, stage) order: the order of one replica with R·M micro-batches. */
function stepLoss(reports: readonly StepReport[], K: number, parts: MicroBatch[][]): number {
  let loss = 0;
  for (let r = 0; r < parts.length; r++) {
    for (let m = 0; m < parts[r]!.length; m++) for (let k = 0; k < K; k++) loss += reports[r * K + k]!.losses[m] ?? 0;
  }
  return loss;
}

/** Which steps to trace, and the epoch to label them with. */
export interface TraceAsk { tracer: StepTracer; epoch: number }

/**
 * Runs the schedule on every actor; returns the summed loss of all stages (auxiliary
 * terms included) in (replica, micro-batch) order: the order of one replica with R·M micro-batches.
 * NaN when a NaN or infinity appeared anywhere in the step (the stages then passed zeros on in
 * its place, so the loss they computed means nothing): a full-batch minimizer refuses it,
 * naming its iteration.
 */
export async function pipelineStep(group: StageGroup, spec: ModelSpec, parts: MicroBatch[][], schedule: Schedule, meter: BubbleMeter, optimize?: OptimizerStepArgs, trace?: TraceAsk, commit?: 'whole' | 'share'): Promise<number> {
  const r = await runSchedule(group, spec, parts, schedule, meter, optimize, trace, commit);
  return r.nonFinite ? NaN : r.loss;
}

/** pipelineStep, with the earliest NaN or infinity of the step returned rather than thrown. */
async function runSchedule(group: StageGroup, spec: ModelSpec, parts: MicroBatch[][], schedule: Schedule, meter: BubbleMeter, optimize?: OptimizerStepArgs, trace?: TraceAsk, commit?: 'whole' | 'share'): Promise<{ loss: number; nonFinite: NonFiniteAt | null }> {
  const K = group.stages;
  const tracing = trace?.tracer.wants(group.step) === true;
  // The schedule's lists are per device: a stage's own actions, and with virtual stages its
  // device's whole list, in which each of them waits its turn.
  const V = group.virtualStages;
  const own = Array.from({ length: K }, (_, k) => (V === 1 ? schedule[k]! : schedule[k % group.devices]!.filter((a) => a.stage === k)).map(formatAction));
  const orders = V === 1 ? null : schedule.map((list) => list.map(formatAction));
  const body = (r: number, k: number) => ({
    type: 'runStep' as const,
    ...stepWork(spec, K, own[k]!, parts[r]!, k, optimize, commit),
    ...(orders ? { order: orders[k % group.devices]! } : {}),
    ...(tracing ? { trace: true } : {}),
  }) satisfies Partial<Extract<Request, { type: 'runStep' }>>;
  let replies;
  if (tracing) {
    // Each actor's send and reply time: its runStep doubles as a clock ping (coordinator/trace.ts).
    const sent: number[] = [];
    const received: number[] = [];
    replies = await Promise.all(Array.from({ length: group.size }, (_, a) => {
      sent[a] = epochNow();
      return group.request(a, body(Math.floor(a / K), a % K), 'stepDone').then((reply) => { received[a] = epochNow(); return reply; });
    }));
    trace!.tracer.record(group.step, trace!.epoch, sent, received, replies.map((r) => r.report));
  } else {
    replies = await group.all(body, 'stepDone');
  }
  const reports = replies.map((r) => r.report);
  meter.add(reports, group.replicas * group.devices);
  return { loss: stepLoss(reports, K, parts), nonFinite: earliestNonFinite(reports, K, parts[0]!.length, group.names) };
}

export interface StepPlan {
  optimizer: OptimizerStepArgs['optimizer'];
  lr: number;
  /** 1/batch size: turns the summed gradients into means. */
  gradScale: number;
  clipNorm?: number;
  trace?: TraceAsk;
  /** The actors first keep their state (or each replica its share) as this step's recovery commit. */
  commit?: 'whole' | 'share';
  /**
   * Skip a step with a NaN or infinity (every actor drops it) instead of stopping. The optimizer
   * then waits for every actor's report: one more round of requests per step, as clipping.
   */
  skipNonFinite?: boolean;
  /** For messages: the epoch (1-based) the step belongs to. */
  epoch?: number;
}

/**
 * One optimizer step on one minibatch (sharded already); returns the summed loss, and with
 * clipping the global gradient norm (of the mean gradient, before clipping). With
 * `skipNonFinite`, a step in which a NaN or infinity appeared is dropped by every actor and
 * returned as `skipped` (where it appeared first).
 * @throws NonFiniteError without `skipNonFinite`
 */
export async function trainStep(group: StageGroup, spec: ModelSpec, parts: MicroBatch[][], schedule: Schedule, meter: BubbleMeter, plan: StepPlan): Promise<{ loss: number; gradNorm?: number; skipped?: NonFiniteAt }> {
  const { optimizer, lr, clipNorm } = plan;
  const fused = clipNorm === undefined && !plan.skipNonFinite;
  const { loss, nonFinite } = await runSchedule(group, spec, parts, schedule, meter, fused ? { optimizer, lr, gradScale: plan.gradScale } : undefined, plan.trace, plan.commit);
  if (nonFinite) {
    if (!plan.skipNonFinite) throw new NonFiniteError(group.step, plan.epoch, nonFinite);
    // Decided here, where every actor's report meets: all of them drop the step, or none.
    await group.all(() => ({ type: 'skipStep' }), 'ok');
    return { loss, skipped: nonFinite };
  }
  if (fused) return { loss };
  if (clipNorm === undefined) {
    await group.all(() => ({ type: 'optimizerStep', optimizer, lr, gradScale: plan.gradScale }), 'ok');
    return { loss };
  }
  // The global norm needs every stage's share (of the reduced gradients: replica 0's suffice).
  let squares = 0;
  for (let k = 0; k < group.stages; k++) squares += (await group.ask(k, { type: 'gradSquares' }, 'value')).value;
  const gradScale = plan.gradScale * clipScale(squares * plan.gradScale * plan.gradScale, clipNorm);
  await group.all(() => ({ type: 'optimizerStep', optimizer, lr, gradScale }), 'ok');
  return { loss, gradNorm: Math.sqrt(squares) * plan.gradScale };
}

/** One step of a multi-step request: its shards, its learning rate and 1/batch size, and (first step only) the recovery commit. */
export interface QueuedStep { parts: MicroBatch[][]; lr: number; gradScale: number; commit?: 'whole' | 'share' }

/**
 * Several fused steps (no clipping, no skip decision, no trace, no virtual stages) in one
 * runSteps request per actor: the same actions, inputs and updates as that many trainSteps,
 * so the same bits. Returns each step's summed loss.
 * @throws NonFiniteError naming the earliest step of the request in which a NaN or infinity
 * appeared (the actors ran the request to its end, as a fused step runs to its end)
 */
export async function trainSteps(group: StageGroup, spec: ModelSpec, steps: QueuedStep[], schedule: Schedule, meter: BubbleMeter, optimizer: OptimizerStepArgs['optimizer'], epoch?: number): Promise<number[]> {
  const K = group.stages;
  if (group.virtualStages !== 1) throw new Error('trainSteps: virtual stages need the device order of runStep');
  const own = schedule.map((list) => list.map(formatAction));
  const replies = await group.all((r, k) => ({
    type: 'runSteps',
    steps: steps.map((s) => stepWork(spec, K, own[k]!, s.parts[r]!, k, { optimizer, lr: s.lr, gradScale: s.gradScale }, s.commit)),
  }), 'stepsDone');
  const first = group.step;
  const losses: number[] = [];
  for (const [i, s] of steps.entries()) {
    const reports = replies.map((r) => r.reports[i]);
    if (!reports.every((r): r is StepReport => r !== undefined)) throw new Error(`trainSteps: an actor answered ${steps.length} steps with fewer reports`);
    meter.add(reports, group.replicas * group.devices);
    losses.push(stepLoss(reports, K, s.parts));
    const nonFinite = earliestNonFinite(reports, K, s.parts[0]!.length, group.names);
    if (nonFinite) throw new NonFiniteError(first + i, epoch, nonFinite);
  }
  return losses;
}
