/**
 * What a model spec would allocate, read from the spec alone (nothing is built): each layer's
 * parameter count, from its fields. A node checks it against its caps before building a layer
 * (a spec asking for a dense layer of a billion units is refused, not attempted).
 * test/caps.test.ts builds every registered layer type and compares.
 *
 * @example layerSpecParameters({ type: 'dense', inputs: 784, units: 256 }) // 200960
 */
import type { LayerSpec } from './spec.js';

/** A field as a count; 0 when it is not a positive integer (building the layer then refuses it, naming the field). */
const n = (s: LayerSpec, field: string, fallback?: number): number => {
  const v = s[field] ?? fallback;
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : 0;
};
/** A size that is a number or a [height, width] pair: its area. */
const area = (s: LayerSpec, field: string): number => {
  const v = s[field];
  if (Array.isArray(v) && v.length === 2) return n({ type: '', a: v[0] }, 'a') * n({ type: '', a: v[1] }, 'a');
  const d = n(s, field);
  return d * d;
};
const recurrent = (gates: number) => (s: LayerSpec) => {
  const h = n(s, 'hidden');
  return gates * h * (n(s, 'inputs') + h) + 2 * gates * h;
};

/** Parameter counts by layer type, from the spec's fields. */
const parameterCounts: Readonly<Record<string, (s: LayerSpec) => number>> = {
  dense: (s) => n(s, 'inputs') * n(s, 'units') + n(s, 'units'),
  conv2d: (s) => n(s, 'outChannels') * n(s, 'inChannels') * area(s, 'kernel') + (s['bias'] === false ? 0 : n(s, 'outChannels')),
  layerNorm: (s) => 2 * n(s, 'features'),
  batchNorm: (s) => 2 * n(s, 'channels'),
  rnn: recurrent(1),
  gru: recurrent(3),
  lstm: recurrent(4),
  embedding: (s) => n(s, 'vocab') * n(s, 'dim'),
};

/** The layer types that hold no parameters. */
export const PARAMETER_FREE_LAYERS: readonly string[] = [
  'relu', 'leakyRelu', 'sigmoid', 'tanh', 'softplus', 'softmax', 'logSoftmax', 'maxPool2d', 'avgPool2d', 'reshape', 'flatten', 'dropout', 'gaussianSample',
];

/**
 * The parameters a layer spec would allocate; undefined for a type this table does not know
 * (a new parametric layer must be added here: test/caps.test.ts fails until it is).
 */
export function layerSpecParameters(spec: LayerSpec): number | undefined {
  if (spec === null || typeof spec !== 'object' || typeof spec.type !== 'string') return undefined;
  if (PARAMETER_FREE_LAYERS.includes(spec.type)) return 0;
  return Object.hasOwn(parameterCounts, spec.type) ? parameterCounts[spec.type]!(spec) : undefined;
}
