/**
 * The convolutional layer families and the built-in small CNN. Importing this file
 * registers conv2d, maxPool2d, avgPool2d, reshape, flatten, dropout, layerNorm and batchNorm.
 */
import './conv.js';
import './reshape.js';
import './dropout.js';
import './norm.js';
import type { ModelSpec } from './sequential.js';

export { Conv2d, Pool2d, sizePair, type Conv2dConfig } from './conv.js';
export { Reshape, Flatten } from './reshape.js';
export { Dropout } from './dropout.js';
export { LayerNorm, BatchNorm, layerNormalize, batchNormalize, type BatchStats } from './norm.js';

/**
 * Two 3×3 conv blocks and two dense layers for 28×28 digits given as 784 floats per sample:
 * reshape [1,28,28] → conv 1→16 (pad 1) → relu → maxpool 2 → conv 16→32 (pad 1) → relu →
 * maxpool 2 → flatten (32·7·7) → dense 128 → relu → dense classes.
 * @example Sequential.fromSpec(cnnSpec(), 42)
 */
export function cnnSpec(classes = 10): ModelSpec {
  return {
    inputShape: [784],
    layers: [
      { type: 'reshape', shape: [1, 28, 28] },
      { type: 'conv2d', inChannels: 1, outChannels: 16, kernel: 3, padding: 1, init: 'he' },
      { type: 'relu' },
      { type: 'maxPool2d', kernel: 2 },
      { type: 'conv2d', inChannels: 16, outChannels: 32, kernel: 3, padding: 1, init: 'he' },
      { type: 'relu' },
      { type: 'maxPool2d', kernel: 2 },
      { type: 'flatten' },
      { type: 'dense', inputs: 32 * 7 * 7, units: 128, init: 'he' },
      { type: 'relu' },
      { type: 'dense', inputs: 128, units: classes, init: 'xavier' },
    ],
    loss: 'softmaxCrossEntropy',
  };
}
