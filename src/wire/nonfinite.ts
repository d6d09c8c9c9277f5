/**
 * Where a NaN or an infinity appeared in a step, as a stage reports it in its StepReport: the
 * coordinator picks the earliest one of all actors and stops the run naming it (or, with
 * skipNonFinite, skips the step on every actor).
 *
 * @example
 * describeNonFinite({ kind: 'gradient', layer: 2, layerType: 'dense', param: 'weight', index: 1234, value: 'NaN' }, 'stage 1')
 * // "gradient of layer 2 (dense 'weight') on stage 1 (summed over the step's micro-batches) is not finite: first NaN at index 1234"
 */
import { describeValue } from '../errors.js';

/** What was not finite, in the order a step computes them for one micro-batch. */
export const NON_FINITE_KINDS = ['input', 'activation', 'loss', 'inputGradient', 'gradient'] as const;
export type NonFiniteKind = (typeof NON_FINITE_KINDS)[number];

export interface NonFiniteReport {
  /**
   * `input`: the stage's input; `activation`: a layer's output; `loss`: the loss (with any
   * auxiliary terms) of the last stage; `inputGradient`: the gradient a stage sends back to
   * the previous one; `gradient`: a parameter's gradient (summed over the step's micro-batches).
   */
  kind: NonFiniteKind;
  /** The layer (its index in the whole model) and its type, where one is known. */
  layer?: number;
  layerType?: string;
  /** kind `gradient`: the parameter's own name in its layer ('weight'). */
  param?: string;
  /** The micro-batch (absent for `gradient`). */
  microBatch?: number;
  /** The first element that is not finite (flat index) and its value. */
  index: number;
  value: 'NaN' | 'Infinity' | '-Infinity';
}

export const nonFiniteValue = (v: number): NonFiniteReport['value'] => (Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity');

/** `gradient of layer 2 (dense 'weight') on stage 1, micro-batch 0 is not finite: first NaN at index 1234`. */
export function describeNonFinite(f: NonFiniteReport, actor: string): string {
  const layer = f.layer === undefined ? '' : `layer ${f.layer} (${f.layerType ?? '?'}${f.param === undefined ? '' : ` '${f.param}'`})`;
  const what = {
    input: 'the input',
    activation: `the output of ${layer || 'the stage'}`,
    loss: 'the loss',
    inputGradient: `the input gradient${layer ? ` of ${layer}` : ''} (sent back to the previous stage)`,
    gradient: `the gradient of ${layer || 'a parameter'}`,
  }[f.kind];
  const where = f.microBatch === undefined ? `${actor} (summed over the step's micro-batches)` : `${actor}, micro-batch ${f.microBatch}`;
  return `${what} on ${where} is not finite: first ${f.value} at index ${f.index}`;
}

/**
 * A report as it came over a transport, checked field by field; a string saying what is
 * wrong, or the report.
 */
export function checkNonFiniteReport(v: unknown): NonFiniteReport | string {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return `nonFinite must be an object, got ${describeValue(v, 80)}`;
  const r = v as Record<string, unknown>;
  const count = (k: string, optional: boolean) => (r[k] === undefined && optional) || (Number.isSafeInteger(r[k]) && (r[k] as number) >= 0);
  const text = (k: string) => r[k] === undefined || (typeof r[k] === 'string' && (r[k] as string).length <= 64 && /^[\w.-]*$/.test(r[k] as string));
  if (!(NON_FINITE_KINDS as readonly unknown[]).includes(r.kind)) return `nonFinite.kind must be one of ${NON_FINITE_KINDS.join(', ')}, got ${describeValue(r.kind, 40)}`;
  for (const k of ['layer', 'microBatch']) if (!count(k, true)) return `nonFinite.${k} must be a non-negative integer, got ${describeValue(r[k], 40)}`;
  if (!count('index', false)) return `nonFinite.index must be a non-negative integer, got ${describeValue(r.index, 40)}`;
  for (const k of ['layerType', 'param']) if (!text(k)) return `nonFinite.${k} must be a short name, got ${describeValue(r[k], 40)}`;
  if (r.value !== 'NaN' && r.value !== 'Infinity' && r.value !== '-Infinity') return `nonFinite.value must be NaN, Infinity or -Infinity, got ${describeValue(r.value, 40)}`;
  return r as unknown as NonFiniteReport;
}
