/**
 * A node's limits on what a `configure` may make it allocate, checked before anything is built:
 * the parameters of the model (every stage builds all of the model's layers, to infer its
 * shapes, and keeps its own), and the parameters this node would hold in all, its other actors'
 * included, against `--max-params`; then, once the (bounded) layers exist, what one sample
 * needs per layer (an output, a convolution's unfolded patches) against what one message
 * may carry. A refusal names the layer, its size and the cap; the node keeps serving.
 *
 * @example
 * checkSpecCaps(config, { maxParams: 2 ** 28 }, 0, 'stage 1');   // or throws TOO_LARGE
 */
import { ChainruleError } from '../src/errors.js';
import { Conv2d, layerSpecParameters, type Sequential } from '../src/nn/index.js';
import { sizeOf } from '../src/tensor/tensor.js';
import { MAX_TENSOR_ELEMENTS, type StageConfig } from '../src/wire/index.js';

/** Enough for a 784-4096×8-10 MLP (121 million) twice over: 1 GiB of float32 weights (4 with gradients and Adam's slots). */
export const DEFAULT_MAX_PARAMS = 2 ** 28;

export interface NodeCaps {
  /** Parameters this node allocates for one configure, and holds for all its actors together. */
  maxParams: number;
  /**
   * The most kernel threads an actor here splits its products among, whatever a configure
   * asks (this host's cores): more only oversubscribe them, and any count gives the same bits.
   */
  maxKernelThreads?: number;
}

const fmt = (v: number) => (Number.isSafeInteger(v) ? v.toLocaleString('en-US') : v.toExponential(3));
const tooLarge = (message: string, hint: string) => new ChainruleError('TOO_LARGE', message, { hint });
const layerName = (spec: StageConfig['model']['layers'][number], i: number) => `layer ${i} (${String(spec?.type)})`;

/**
 * Before building: the model's parameters, read from its spec, and what this stage would add
 * to the `held` parameters of the node's other actors.
 * @throws ChainruleError TOO_LARGE naming the largest layer and the cap
 */
export function checkSpecCaps(config: StageConfig, caps: NodeCaps, held: number, where: string): void {
  const layers = Array.isArray(config?.model?.layers) ? config.model.layers : [];
  const counts = layers.map((l) => layerSpecParameters(l) ?? 0);
  const total = counts.reduce((a, b) => a + b, 0);
  const hint = 'a smaller model, or a node started with a larger --max-params N';
  if (total > caps.maxParams) {
    const big = counts.indexOf(Math.max(...counts));
    throw tooLarge(`${where}: the model has ${fmt(total)} parameters (${layerName(layers[big]!, big)} alone ${fmt(counts[big]!)}), above this node's cap of ${fmt(caps.maxParams)} (--max-params); every stage builds all the model's layers`, hint);
  }
  const start = Number.isSafeInteger(config.start) ? config.start : 0;
  const end = Number.isSafeInteger(config.end) ? config.end : layers.length;
  const own = counts.slice(start, end).reduce((a, b) => a + b, 0);
  if (held + own > caps.maxParams) {
    throw tooLarge(`${where}: layers [${start}, ${end}) have ${fmt(own)} parameters, and this node's other actors hold ${fmt(held)}: ${fmt(held + own)} in all, above its cap of ${fmt(caps.maxParams)} (--max-params)`,
      'fewer actors per node (more nodes in --nodes), or a node started with a larger --max-params N');
  }
}

/**
 * After building, before any forward: no layer may need, for one sample, more values than one
 * message carries (its output, or a convolution's unfolded patches, oh·ow × c·kh·kw).
 * @throws ChainruleError TOO_LARGE naming the layer
 */
export function checkShapeCaps(model: Sequential, where: string): void {
  for (const [i, layer] of model.layers.entries()) {
    const index = model.offset + i;
    const out = sizeOf(model.shapes[i + 1]!);
    let need = out;
    let what = `its output [${model.shapes[i + 1]!.join(', ')}]`;
    if (layer instanceof Conv2d) {
      const [c] = model.shapes[i]!;
      const [, oh, ow] = model.shapes[i + 1]!;
      const unfolded = oh! * ow! * c! * layer.config.kernel[0] * layer.config.kernel[1];
      if (unfolded > need) { need = unfolded; what = `its unfolded patches (${oh}×${ow} positions × ${c}·${layer.config.kernel.join('×')})`; }
    }
    if (need > MAX_TENSOR_ELEMENTS) {
      throw tooLarge(`${where}: layer ${index} (${layer.type}) needs ${fmt(need)} values per sample for ${what}, above the cap of ${fmt(MAX_TENSOR_ELEMENTS)} (what one message carries)`,
        'check its sizes (kernel, stride, padding, dilation, units)');
    }
  }
}
