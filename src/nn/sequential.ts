/**
 * A model: an input shape, a list of layer specs and a loss. `Sequential` builds all of
 * it or a contiguous range of it (a pipeline stage); parameter names carry the layer's
 * index in the whole model (`2.weight`), so they are the same however the model is cut.
 */
import { Tensor, fmtShape } from '../tensor/tensor.js';
import { describeValue, lookup } from '../errors.js';
import { Rng } from '../tensor/rng.js';
import { buildLayer, checkLayerSpec, type ForwardContext, type Layer } from './layer.js';
import { SpecError, type LayerSpec } from './spec.js';
import { losses } from './losses.js';

export interface ModelSpec {
  inputShape: number[];
  layers: LayerSpec[];
  /** A key of `losses` (default softmaxCrossEntropy). */
  loss?: string;
  /** The targets are the inputs themselves (autoencoders, e.g. the VAE). */
  autoencoder?: boolean;
}

/** The fields a model spec may have; any other is refused, never ignored. */
export const MODEL_SPEC_FIELDS: readonly string[] = ['inputShape', 'layers', 'loss', 'autoencoder'];

/**
 * Checks a model spec's fields and types, and each layer's type and field names (values are
 * checked when the layers are built), naming what is wrong: the layer's index, the field,
 * and the fields it knows.
 * @example validateModelSpec(JSON.parse(readFileSync('model.json', 'utf8')), 'model.json')
 */
export function validateModelSpec(spec: unknown, where = 'model spec'): ModelSpec {
  const s = spec as ModelSpec;
  if (s === null || typeof s !== 'object' || Array.isArray(s)) throw new SpecError(`${where}: must be an object with inputShape and layers, got ${describeValue(spec, 80)}`);
  for (const field of Object.keys(s)) {
    if (!MODEL_SPEC_FIELDS.includes(field)) {
      throw new SpecError(`${where}: unknown field '${field}'; a model spec's fields are ${MODEL_SPEC_FIELDS.join(', ')}`);
    }
  }
  if (!Array.isArray(s.inputShape) || s.inputShape.length === 0 || !s.inputShape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new SpecError(`${where}: 'inputShape' must be a non-empty array of positive integers, got ${describeValue(s.inputShape, 80)}`);
  }
  if (!Array.isArray(s.layers) || s.layers.length === 0) throw new SpecError(`${where}: 'layers' must be a non-empty array, got ${describeValue(s.layers, 80)}`);
  s.layers.forEach((l, i) => checkLayerSpec(l, `${where}: layer ${i} (${String((l as LayerSpec | null)?.type)})`));
  if (s.loss !== undefined && lookup(losses, s.loss) === undefined) {
    throw new SpecError(`${where}: unknown loss ${typeof s.loss === 'string' ? `'${s.loss}'` : describeValue(s.loss, 80)}; known losses: ${Object.keys(losses).join(', ')}`);
  }
  if (s.autoencoder !== undefined && typeof s.autoencoder !== 'boolean') {
    throw new SpecError(`${where}: 'autoencoder' must be true or false, got ${describeValue(s.autoencoder, 80)}`);
  }
  return s;
}

/** The stream a layer's initialization draws from: the same on every host and in every stage. */
export function initRng(seed: number, layerIndex: number): Rng {
  return Rng.derive(seed, 0x1a7e5, layerIndex);
}

export class Sequential {
  /** Per-sample shape entering each layer, and leaving the last one. */
  readonly shapes: number[][];

  private constructor(readonly layers: Layer[], readonly offset: number, inputShape: number[]) {
    this.shapes = [inputShape];
    for (const [i, l] of layers.entries()) {
      try {
        this.shapes.push(l.outputShape(this.shapes[i]!));
      } catch (e) {
        throw new SpecError(`layer ${offset + i} (${l.type}): ${(e as Error).message}`);
      }
    }
  }

  /**
   * Builds layers [start, end) of the model, initialized from the seed.
   * @example const model = Sequential.fromSpec(mlpSpec(), 42);
   */
  static fromSpec(spec: ModelSpec, seed: number, start = 0, end = spec.layers.length): Sequential {
    validateModelSpec(spec);
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= spec.layers.length)) {
      throw new SpecError(`layer range [${start}, ${end}) is not within the model's ${spec.layers.length} layers`);
    }
    // Shapes are inferred over the whole model so a stage knows its input shape.
    const all = spec.layers.map((l, i) => buildLayer(l, { rng: initRng(seed, i), where: `layer ${i} (${String(l?.type)})` }));
    const full = new Sequential(all, 0, spec.inputShape);
    return new Sequential(all.slice(start, end), start, full.shapes[start]!);
  }

  /**
   * Micro-batch mode, for a pipeline stage: each step runs several forwards and backwards
   * (micro-batches) on weights that stay fixed from `zeroGrad()` until the gradients are
   * read, so layers share work across them (dense layers pack each weight once a step and
   * compute its gradient in one product over all the micro-batches; see SharedWeight). The
   * gradients are the same sums, in a different rounding when a step has several micro-batches.
   */
  microBatching = false;

  get inputShape(): number[] { return this.shapes[0]!; }
  get outputShape(): number[] { return this.shapes[this.shapes.length - 1]!; }

  forward(x: Tensor, ctx: ForwardContext): Tensor {
    let h = x;
    const microBatching = ctx.microBatching ?? this.microBatching;
    for (const [i, layer] of this.layers.entries()) h = layer.forward(h, { ...ctx, microBatching, index: this.offset + i });
    return h;
  }

  /**
   * The W pass: every weight gradient the layers deferred (micro-batches up to `through`, all
   * by default) added into `.grad`. A stage calls it after the last backward of a step, so
   * the work counts there; a zero-bubble schedule can run it as an action of its own.
   * @example model.flushDeferredGrads(); // then read the gradients
   */
  flushDeferredGrads(through?: number): void {
    for (const layer of this.layers) layer.flushDeferredGrads(through);
  }

  /** Named parameters in a fixed order: by layer, then the layer's own order. */
  parameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [i, layer] of this.layers.entries()) {
      for (const [name, t] of layer.params) out.push([`${this.offset + i}.${name}`, t]);
    }
    return out;
  }

  layerSpecs(): LayerSpec[] { return this.layers.map((l) => l.toSpec()); }

  parameterCount(): number {
    return this.parameters().reduce((n, [, t]) => n + t.size, 0);
  }

  describe(): string {
    return this.layers.map((l, i) => `${this.offset + i}: ${l.type} → ${fmtShape(this.shapes[i + 1]!)}`).join('\n');
  }
}

/**
 * The per-sample shape entering each layer and leaving the last, inferred from the spec
 * (throws a SpecError naming the layer that does not fit).
 * @example modelShapes(mlpSpec()).at(-1) // [10]
 */
export function modelShapes(spec: ModelSpec): number[][] {
  return Sequential.fromSpec(spec, 0).shapes;
}

/** Parameter counts per layer, for balancing stages without building them. */
export function layerParameterCounts(spec: ModelSpec): number[] {
  return Sequential.fromSpec(spec, 0).layers.map((l) => l.params.reduce((n, [, t]) => n + t.size, 0));
}
