/**
 * The layer contract and registry. A layer is built from a JSON spec (so any host can
 * rebuild it), owns named parameters, and maps a batch [n, ...inShape] to [n, ...outShape].
 */
import type { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
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

export const layerRegistry = new Map<string, LayerBuilder>();

/** Registers a layer type; a new layer is one file plus one line in nn/index.ts. */
export function registerLayer(type: string, build: LayerBuilder): void {
  if (layerRegistry.has(type)) throw new Error(`registerLayer: '${type}' is already registered`);
  layerRegistry.set(type, build);
}

export function buildLayer(spec: LayerSpec, ctx: BuildContext): Layer {
  if (spec === null || typeof spec !== 'object' || typeof spec.type !== 'string') {
    throw new SpecError(`${ctx.where}: a layer spec must be an object with a string 'type', got ${JSON.stringify(spec)}`);
  }
  const build = layerRegistry.get(spec.type);
  if (!build) {
    throw new SpecError(`${ctx.where}: unknown layer type '${spec.type}'; known types: ${[...layerRegistry.keys()].join(', ')}`);
  }
  return build(spec, ctx);
}
