/**
 * Input transforms whose statistics are fitted on the training split only and kept as plain
 * JSON (a `TransformSpec`), so the same numbers are stored with the model and applied at
 * evaluation and in later runs. Fitting on anything that includes the test split would leak
 * it into training.
 */
import { checkFinite } from './check.js';
import { type Dataset, type LabeledDataset, type TargetDataset, hasTargets, sampleSize } from './dataset.js';
import { DataError, describe } from './errors.js';

export type TransformKind = 'minmax' | 'standardize' | 'none';

export const TRANSFORM_KINDS: readonly TransformKind[] = ['minmax', 'standardize', 'none'];

/** The default `floor` of `fitTransform`: spreads below it count as constant. */
export const DEFAULT_SCALE_FLOOR = 1e-6;

export interface NoTransformSpec {
  kind: 'none';
}

/** `x' = (x - min) / (max - min)` per feature (or with one global min and max). */
export interface MinMaxSpec {
  kind: 'minmax';
  /** One statistic per feature (length `features`) if true, one global statistic (length 1) if false. */
  perFeature: boolean;
  /** Elements per sample (prod(inputShape)) of the data it was fitted on. */
  features: number;
  min: number[];
  max: number[];
  /** Spreads `max - min` below this were treated as constant: those features are only shifted. */
  floor: number;
  /** Name of the dataset it was fitted on (for reports; e.g. `mnist/train`). */
  fittedOn: string;
}

/** `x' = (x - mean) / std` per feature (or with one global mean and std); std is the population std. */
export interface StandardizeSpec {
  kind: 'standardize';
  perFeature: boolean;
  features: number;
  mean: number[];
  std: number[];
  /** Stds below this were treated as constant features: stored as 1, so those features are only centred. */
  floor: number;
  fittedOn: string;
}

/** JSON-serializable: `JSON.parse(JSON.stringify(spec))` is an equal spec. */
export type TransformSpec = NoTransformSpec | MinMaxSpec | StandardizeSpec;

export interface FitOptions {
  /** Statistics per feature (default true) or one over all features. */
  perFeature?: boolean;
  /**
   * Spread below which a feature counts as constant (default 1e-6). NOTE: such a feature is
   * divided by 1 instead of by its tiny spread, the way scikit-learn does it: a border pixel that
   * is 0 in every training image would otherwise turn a test value of 0.1 into 100,000.
   */
  floor?: number;
}

/**
 * Fits a transform on the training split (only: pass the training dataset, never the test one).
 * Statistics are computed in float64.
 * @example
 * const spec = fitTransform('standardize', train, { perFeature: true });
 * const [trainN, testN] = [applyTransform(spec, train), applyTransform(spec, test)];
 * save('model.json', { ...model, transform: spec });   // plain JSON
 */
export function fitTransform(kind: TransformKind, train: Dataset, options: FitOptions = {}): TransformSpec {
  if (!TRANSFORM_KINDS.includes(kind)) {
    throw new DataError('BAD_OPTION', `fitTransform: kind must be one of ${TRANSFORM_KINDS.map((k) => `'${k}'`).join(', ')}, got ${describe(kind)}`);
  }
  if (options === null || typeof options !== 'object') {
    throw new DataError('BAD_OPTION', `fitTransform: options must be an object, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (key !== 'perFeature' && key !== 'floor') {
      throw new DataError('BAD_OPTION', `fitTransform: unknown option ${JSON.stringify(key)}`, 'the options are perFeature and floor');
    }
  }
  const { perFeature = true, floor = DEFAULT_SCALE_FLOOR } = options;
  if (typeof perFeature !== 'boolean') {
    throw new DataError('BAD_OPTION', `fitTransform: options.perFeature must be a boolean, got ${describe(perFeature)}`);
  }
  if (typeof floor !== 'number' || !Number.isFinite(floor) || floor < 0) {
    throw new DataError('BAD_OPTION', `fitTransform: options.floor must be a finite non-negative number, got ${describe(floor)}`);
  }
  if (kind === 'none') return { kind: 'none' };
  if (train.size === 0) {
    throw new DataError('BAD_DATASET', `fitTransform: dataset ${JSON.stringify(train.name)} is empty; there is nothing to fit ${kind} on`);
  }
  checkFinite(train, 'fitTransform');

  const per = sampleSize(train);
  const x = train.inputs;
  const n = train.size;
  const groups = perFeature ? per : 1;
  const count = perFeature ? n : n * per;
  const feature = perFeature ? (k: number) => k % per : () => 0;

  if (kind === 'minmax') {
    const min = new Array<number>(groups).fill(Infinity);
    const max = new Array<number>(groups).fill(-Infinity);
    for (let k = 0; k < x.length; k++) {
      const f = feature(k);
      const v = x[k]!;
      if (v < min[f]!) min[f] = v;
      if (v > max[f]!) max[f] = v;
    }
    return { kind, perFeature, features: per, min, max, floor, fittedOn: train.name };
  }

  // Two passes (mean, then squared deviations) rather than sum of squares: no cancellation.
  const mean = new Array<number>(groups).fill(0);
  for (let k = 0; k < x.length; k++) mean[feature(k)] += x[k]!;
  for (let f = 0; f < groups; f++) mean[f] = mean[f]! / count;
  const ss = new Array<number>(groups).fill(0);
  for (let k = 0; k < x.length; k++) {
    const f = feature(k);
    const d = x[k]! - mean[f]!;
    ss[f] += d * d;
  }
  const std = ss.map((s) => {
    const sd = Math.sqrt(s / count);
    return sd < floor || sd === 0 ? 1 : sd;
  });
  return { kind, perFeature, features: per, mean, std, floor, fittedOn: train.name };
}

/**
 * Checks a spec (for example one just read from JSON) and returns it typed; throws
 * `BAD_OPTION` naming the field that is wrong.
 * @example const spec = parseTransformSpec(JSON.parse(readFileSync('transform.json', 'utf8')));
 */
export function parseTransformSpec(value: unknown): TransformSpec {
  validateTransformSpec(value);
  return value;
}

/** Throws `BAD_OPTION` unless `spec` is a well-formed `TransformSpec`. */
export function validateTransformSpec(spec: unknown): asserts spec is TransformSpec {
  const bad = (what: string, hint?: string): never => {
    throw new DataError('BAD_OPTION', `transform spec: ${what}`, hint);
  };
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) bad(`must be an object, got ${describe(spec)}`);
  const s = spec as Record<string, unknown>;
  if (!TRANSFORM_KINDS.includes(s.kind as TransformKind)) {
    bad(`kind must be one of ${TRANSFORM_KINDS.map((k) => `'${k}'`).join(', ')}, got ${describe(s.kind)}`);
  }
  if (s.kind === 'none') return;
  const [a, b] = s.kind === 'minmax' ? ['min', 'max'] : ['mean', 'std'];
  if (typeof s.perFeature !== 'boolean') bad(`${s.kind}: perFeature must be a boolean, got ${describe(s.perFeature)}`);
  if (typeof s.features !== 'number' || !Number.isSafeInteger(s.features) || s.features <= 0) {
    bad(`${s.kind}: features must be a positive integer, got ${describe(s.features)}`);
  }
  if (typeof s.floor !== 'number' || !Number.isFinite(s.floor) || s.floor < 0) {
    bad(`${s.kind}: floor must be a finite non-negative number, got ${describe(s.floor)}`);
  }
  if (typeof s.fittedOn !== 'string') bad(`${s.kind}: fittedOn must be a string, got ${describe(s.fittedOn)}`);
  const len = s.perFeature ? (s.features as number) : 1;
  for (const field of [a, b]) {
    const arr = s[field];
    if (!Array.isArray(arr)) bad(`${s.kind}: ${field} must be an array of numbers, got ${describe(arr)}`);
    const xs = arr as unknown[];
    if (xs.length !== len) {
      bad(`${s.kind}: ${field} has ${xs.length} values, expected ${len} (${s.perFeature ? `perFeature with ${s.features} features` : 'one global value'})`);
    }
    for (let i = 0; i < xs.length; i++) {
      const v = xs[i];
      if (typeof v !== 'number' || !Number.isFinite(v)) bad(`${s.kind}: ${field}[${i}] must be a finite number, got ${describe(v)}`);
    }
  }
  const lo = s[a] as number[];
  const hi = s[b] as number[];
  for (let i = 0; i < len; i++) {
    if (s.kind === 'minmax' && hi[i]! < lo[i]!) bad(`minmax: max[${i}] = ${hi[i]} is below min[${i}] = ${lo[i]}`);
    if (s.kind === 'standardize' && !(hi[i]! > 0)) bad(`standardize: std[${i}] must be positive, got ${hi[i]}`);
  }
}

/**
 * Returns the transformed copy of flat inputs (`n × prod(inputShape)` values); for batches,
 * e.g. at inference. Throws if `spec` was fitted on samples of another size.
 */
export function transformInputs(spec: TransformSpec, inputs: Float32Array, inputShape: readonly number[]): Float32Array {
  return transform(spec, inputs, inputShape, 'transformInputs');
}

function transform(spec: TransformSpec, inputs: Float32Array, inputShape: readonly number[], where: string): Float32Array {
  try {
    validateTransformSpec(spec);
  } catch (e) {
    if (e instanceof DataError) throw new DataError(e.code, `${where}: ${e.message}`);
    throw e;
  }
  const per = sampleSize({ inputShape: [...inputShape] });
  if (inputs.length % per !== 0) {
    throw new DataError('BAD_SHAPE', `${where}: ${inputs.length} values are not a whole number of samples of shape [${inputShape.join(', ')}] (${per} values each)`);
  }
  const out = new Float32Array(inputs.length);
  if (spec.kind === 'none') {
    out.set(inputs);
    return out;
  }
  if (spec.features !== per) {
    throw new DataError('BAD_SHAPE',
      `${where}: transform spec (${spec.kind}) was fitted on samples of ${spec.features} features (dataset ${JSON.stringify(spec.fittedOn)}), but these samples have ${per} (shape [${inputShape.join(', ')}])`,
      'fit the transform on the training split of the same data');
  }
  // Per group: x' = (x - offset) * scale, with scale = 1 for a spread under the floor.
  const groups = spec.perFeature ? per : 1;
  const offset = new Float64Array(groups);
  const scale = new Float64Array(groups);
  for (let f = 0; f < groups; f++) {
    if (spec.kind === 'minmax') {
      const range = spec.max[f]! - spec.min[f]!;
      offset[f] = spec.min[f]!;
      scale[f] = range < spec.floor || range === 0 ? 1 : 1 / range;
    } else {
      offset[f] = spec.mean[f]!;
      scale[f] = 1 / spec.std[f]!;
    }
  }
  if (spec.perFeature) {
    for (let k = 0, f = 0; k < inputs.length; k++) {
      out[k] = (inputs[k]! - offset[f]!) * scale[f]!;
      if (++f === per) f = 0;
    }
  } else {
    const o = offset[0]!;
    const s = scale[0]!;
    for (let k = 0; k < inputs.length; k++) out[k] = (inputs[k]! - o) * s;
  }
  return out;
}

/**
 * A new dataset (same name, shape and labels or targets; inputs transformed) with the spec's
 * statistics; the given dataset is left as it was.
 * NOTE: only inputs are transformed; float targets (regression) keep their own scale.
 * @example const testN = applyTransform(spec, test);   // spec fitted on train
 */
export function applyTransform<D extends Dataset>(spec: TransformSpec, ds: D): D {
  const inputs = transform(spec, ds.inputs, ds.inputShape, `applyTransform to dataset ${JSON.stringify(ds.name)}`);
  const base = { name: ds.name, inputShape: [...ds.inputShape], size: ds.size, inputs };
  if (hasTargets(ds)) return { ...base, targetShape: [...ds.targetShape], targets: ds.targets.slice() } as TargetDataset as D;
  const lds = ds as LabeledDataset;
  return { ...base, numClasses: lds.numClasses, labels: lds.labels.slice() } as LabeledDataset as D;
}
