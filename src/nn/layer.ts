/**
 * The layer contract and registry. A layer is built from a JSON spec (so any host can
 * rebuild it), owns named parameters, and maps a batch [n, ...inShape] to [n, ...outShape].
 */
import type { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { describeValue, lookup } from '../errors.js';
import { SpecError, type LayerSpec } from './spec.js';

export interface ForwardContext {
  training: boolean;
  /** The run's seed, and where we are: stochastic layers derive their stream from these. */
  seed: number;
  step: number;
  microBatch: number;
  /**
   * Extra loss terms a layer adds (e.g. the KL term of a sampling layer), each a scalar
   * summed over the batch. Whoever runs the backward adds them to the objective.
   */
  auxLosses?: Tensor[];
  /**
   * The step runs several micro-batches on weights fixed until its gradients are read (a
   * pipeline stage): layers may share work across them (see SharedWeight). Set by Sequential.
   */
  microBatching?: boolean;
}

export interface LayerContext extends ForwardContext {
  /** The layer's index in the whole model (not in its stage). */
  index: number;
}

export abstract class Layer {
  abstract readonly type: string;
  /** Named parameters in a fixed order, e.g. [['weight', W], ['bias', b]]. */
  params: [string, Tensor][] = [];
  /** Named non-trainable state (e.g. BatchNorm running statistics), saved with checkpoints. */
  buffers: [string, Tensor][] = [];
  abstract forward(x: Tensor, ctx: LayerContext): Tensor;
  abstract toSpec(): LayerSpec;
  /** The per-sample output shape for a per-sample input shape (throws on a mismatch). */
  abstract outputShape(inputShape: readonly number[]): number[];
  /**
   * Adds the weight gradients this layer deferred (micro-batches up to `through`, all by
   * default) into its parameters' `.grad`: the W pass. Reading `.grad` does it too.
   */
  flushDeferredGrads(_through?: number): void {}
  /** A stream unique to this layer, step and micro-batch, wherever the layer runs. */
  protected rngFor(ctx: LayerContext): Rng {
    return Rng.derive(ctx.seed, ctx.index, ctx.step, ctx.microBatch);
  }
}

export interface BuildContext {
  /** Seeded stream for this layer's initialization. */
  rng: Rng;
  /** Where the layer sits, for error messages: `layer 2 (dense)`. */
  where: string;
}

export type LayerBuilder = (spec: LayerSpec, ctx: BuildContext) => Layer;

export interface LayerEntry {
  build: LayerBuilder;
  /** Every field its spec may have besides `type`: any other is refused, never ignored. */
  fields: readonly string[];
}

export const layerRegistry = new Map<string, LayerEntry>();

/**
 * Registers a layer type with the fields its spec may hold; a new layer is one file plus one
 * line in nn/index.ts.
 * @example registerLayer('dropout', ['rate'], (spec, { where }) => new Dropout(...));
 */
export function registerLayer(type: string, fields: readonly string[], build: LayerBuilder): void {
  if (layerRegistry.has(type)) throw new Error(`registerLayer: '${type}' is already registered`);
  layerRegistry.set(type, { build, fields: Object.freeze([...fields]) });
}

/**
 * Checks a layer spec's type and that it has no field its layer does not know (a typo or
 * an option of another library, such as `"activation": "relu"` on a dense layer, would
 * otherwise be silently ignored). Field values are checked when the layer is built.
 */
export function checkLayerSpec(spec: LayerSpec, where: string): LayerEntry {
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec) || typeof spec.type !== 'string') {
    throw new SpecError(`${where}: a layer spec must be an object with a string 'type', got ${describeValue(spec, 80)}`);
  }
  const entry = lookup(layerRegistry, spec.type);
  if (!entry) {
    throw new SpecError(`${where}: unknown layer type '${spec.type}'; known types: ${[...layerRegistry.keys()].join(', ')}`);
  }
  for (const field of Object.keys(spec)) {
    if (field !== 'type' && !entry.fields.includes(field)) {
      const known = entry.fields.length ? `its fields are type, ${entry.fields.join(', ')}` : 'its only field is type';
      throw new SpecError(`${where}: unknown field '${field}' in a ${spec.type} layer; ${known}`,
        field === 'activation' ? `activations are layers of their own: put { "type": ${describeValue(String(spec[field]), 40)} } after this layer` : undefined);
    }
  }
  return entry;
}

export function buildLayer(spec: LayerSpec, ctx: BuildContext): Layer {
  return checkLayerSpec(spec, ctx.where).build(spec, ctx);
}
