/**
 * A step in which a NaN or an infinity appeared, decided where every actor's report meets:
 * the earliest finding over all actors names the step, the actor, the layer, the micro-batch
 * and the first bad element. The run stops with a NonFiniteError (exit 2), or, with
 * `skipNonFinite`, every actor drops the step (no update anywhere) and training goes on.
 *
 * @example
 * const bad = earliestNonFinite(reports, 2, 4);
 * if (bad) throw nonFiniteError(17, 1, bad);
 * // NONFINITE: step 17 (epoch 1): the gradient of layer 2 (dense 'weight') on stage 1 (summed over the step's micro-batches) is not finite: first NaN at index 1234
 */
import { ChainruleError } from '../src/errors.js';
import { RemoteError, checkNonFiniteReport, describeNonFinite, type NonFiniteReport, type StepReport } from '../src/wire/index.js';
import { actorName } from './transports/index.js';

export interface NonFiniteAt {
  stage: number;
  replica: number;
  replicas: number;
  report: NonFiniteReport;
}

/**
 * The earliest finding of a step over `reports` (in actor order, a = r·K + k): by stream
 * (replica·M + micro-batch, as one replica of R·M micro-batches would run them), then along
 * that micro-batch's way (the stages' forwards up, the loss, the backwards down); parameter
 * gradients, summed over every micro-batch, last. Null when every actor's step was finite.
 * @throws RemoteError BAD_REPLY for a malformed report
 */
export function earliestNonFinite(reports: readonly StepReport[], stages: number, microBatches: number, names: readonly string[] = []): NonFiniteAt | null {
  const K = stages;
  const replicas = reports.length / K;
  let best: { key: [number, number, number]; at: NonFiniteAt } | null = null;
  for (const [a, rep] of reports.entries()) {
    if (rep.nonFinite === undefined) continue;
    const f = checkNonFiniteReport(rep.nonFinite);
    if (typeof f === 'string') throw new RemoteError('BAD_REPLY', `${names[a] ?? `actor ${a}`}: stepDone report: ${f}`);
    const [r, k] = [Math.floor(a / K), a % K];
    const stream = f.microBatch === undefined ? Infinity : r * microBatches + f.microBatch;
    const pos = f.kind === 'input' || f.kind === 'activation' ? 2 * k : f.kind === 'loss' ? 2 * k + 1 : 2 * K + (K - 1 - k);
    const key: [number, number, number] = [stream, pos, r];
    if (!best || key[0] < best.key[0] || (key[0] === best.key[0] && (key[1] < best.key[1] || (key[1] === best.key[1] && key[2] < best.key[2])))) {
      best = { key, at: { stage: k, replica: r, replicas, report: f } };
    }
  }
  return best?.at ?? null;
}

/** `step 17 (epoch 1): the output of layer 3 (dense) on stage 1, micro-batch 0 is not finite: first Infinity at index 12`. */
export function describeNonFiniteStep(step: number, epoch: number | undefined, at: NonFiniteAt): string {
  return `step ${step}${epoch === undefined ? '' : ` (epoch ${epoch})`}: ${describeNonFinite(at.report, actorName(at.stage, at.replica, at.replicas))}`;
}

/** The run stopped at a step with a NaN or infinity; `at` says where it appeared first. */
export class NonFiniteError extends ChainruleError {
  constructor(readonly step: number, readonly epoch: number | undefined, readonly at: NonFiniteAt) {
    super('NONFINITE', describeNonFiniteStep(step, epoch, at), {
      hint: 'lower --lr, clip with --clip-norm X, check the data; or --skip-nonfinite to skip such steps. The stages that met it applied no update; others may have: go on from a checkpoint, not from these weights',
    });
  }
}
