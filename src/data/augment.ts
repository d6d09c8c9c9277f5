/**
 * Data augmentation, drawn afresh for every minibatch of every epoch: random integer shifts
 * and small rotations of images (zero fill outside), and Gaussian noise.
 * Each minibatch's draws come from `augmentStream(seed, epoch, batchIndex)`, so any batch can be
 * reproduced on its own, on any host, without replaying the ones before it.
 */
import { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import type { Batcher, IndexedBatch } from './batcher.js';
import type { Dataset, TargetsOf } from './dataset.js';
import { sampleSize } from './dataset.js';
import { DataError, describe } from './errors.js';

export interface AugmentOptions {
  /** Largest shift in pixels, a non-negative integer; each sample moves by integers dx, dy in [-shift, shift]. */
  shift?: number;
  /** Largest rotation in degrees, in [0, 180]; each sample turns by an angle uniform in [-rotate, rotate]. */
  rotate?: number;
  /** Standard deviation of the Gaussian noise added to every value (after shift and rotation). */
  noise?: number;
  /** How rotated images are resampled (default 'bilinear'). Pure shifts are exact either way. */
  sampling?: 'bilinear' | 'nearest';
}

const OPTION_KEYS = ['shift', 'rotate', 'noise', 'sampling'];

/** Keys augmentation's stream apart from the batcher's and dropout's uses of (seed, epoch). */
export const AUGMENT_STREAM = 0x61756720; // 'aug '

/**
 * The generator for minibatch `batchIndex` of epoch `epoch`: depends on these three numbers only.
 * @example const x2 = augmentBatch(x, [784], { shift: 2 }, augmentStream(seed, epoch, b));
 */
export function augmentStream(seed: number, epoch: number, batchIndex: number): Rng {
  if (typeof seed !== 'number' || !Number.isFinite(seed)) {
    throw new DataError('BAD_OPTION', `augmentStream: seed must be a finite number, got ${describe(seed)}`);
  }
  for (const [name, v] of [['epoch', epoch], ['batchIndex', batchIndex]] as const) {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw new DataError('BAD_OPTION', `augmentStream: ${name} must be a non-negative integer, got ${describe(v)}`);
    }
  }
  return Rng.derive(seed, AUGMENT_STREAM, epoch, batchIndex);
}

interface Geometry { c: number; h: number; w: number }

/**
 * How a sample of `inputShape` is laid out as channels × rows × columns: `[c, h, w]`
 * (channels first), `[h, w]`, or a flat square such as `[784]` (28 × 28); null otherwise.
 */
export function imageGeometry(inputShape: readonly number[]): Geometry | null {
  if (inputShape.length === 3) return { c: inputShape[0]!, h: inputShape[1]!, w: inputShape[2]! };
  if (inputShape.length === 2) return { c: 1, h: inputShape[0]!, w: inputShape[1]! };
  if (inputShape.length === 1) {
    const s = Math.round(Math.sqrt(inputShape[0]!));
    if (s > 1 && s * s === inputShape[0]) return { c: 1, h: s, w: s };
  }
  return null;
}

/** Checks augmentation options at the boundary; returns them with defaults filled in. */
export function validateAugmentOptions(opts: unknown): Required<AugmentOptions> {
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw new DataError('BAD_OPTION', `augment: options must be an object, got ${describe(opts)}`);
  }
  for (const key of Object.keys(opts)) {
    if (!OPTION_KEYS.includes(key)) {
      throw new DataError('BAD_OPTION', `augment: unknown option ${JSON.stringify(key)}`, `the options are ${OPTION_KEYS.join(', ')}`);
    }
  }
  const { shift = 0, rotate = 0, noise = 0, sampling = 'bilinear' } = opts as AugmentOptions;
  if (typeof shift !== 'number' || !Number.isSafeInteger(shift) || shift < 0) {
    throw new DataError('BAD_OPTION', `augment: options.shift must be a non-negative integer (pixels), got ${describe(shift)}`);
  }
  if (typeof rotate !== 'number' || !Number.isFinite(rotate) || rotate < 0 || rotate > 180) {
    throw new DataError('BAD_OPTION', `augment: options.rotate must be a number of degrees in [0, 180], got ${describe(rotate)}`);
  }
  if (typeof noise !== 'number' || !Number.isFinite(noise) || noise < 0) {
    throw new DataError('BAD_OPTION', `augment: options.noise must be a finite non-negative number (a standard deviation), got ${describe(noise)}`);
  }
  if (sampling !== 'bilinear' && sampling !== 'nearest') {
    throw new DataError('BAD_OPTION', `augment: options.sampling must be 'bilinear' or 'nearest', got ${describe(sampling)}`);
  }
  return { shift, rotate, noise, sampling };
}

/**
 * A new buffer with every sample of `x` (`n × prod(inputShape)` values) augmented.
 * Per sample, in this order, it draws dx then dy (if `shift` > 0), the angle (if `rotate` > 0),
 * then one normal per value (if `noise` > 0). Positive dx moves the image right, positive dy
 * down, a positive angle turns it counterclockwise as displayed (row 0 at the top), about the
 * image centre; all channels of a sample move together. Pixels from outside are 0.
 * @example
 * for (const [b, { x, y }] of [...batcher.epoch(e)].entries()) {
 *   const xa = augmentBatch(x.data as Float32Array, [784], { shift: 2, rotate: 10 }, augmentStream(seed, e, b));
 * }
 */
export function augmentBatch(x: Float32Array, inputShape: readonly number[], opts: AugmentOptions, rng: Rng): Float32Array {
  const { shift, rotate, noise, sampling } = validateAugmentOptions(opts);
  if (!(x instanceof Float32Array)) {
    throw new DataError('BAD_OPTION', `augmentBatch: x must be a Float32Array, got ${Object.prototype.toString.call(x)}`);
  }
  if (!(rng instanceof Rng)) {
    throw new DataError('BAD_OPTION', `augmentBatch: rng must be an Rng (e.g. augmentStream(seed, epoch, batchIndex)), got ${describe(rng)}`);
  }
  if (!Array.isArray(inputShape) || inputShape.length === 0 || !inputShape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new DataError('BAD_SHAPE', `augmentBatch: inputShape must be a non-empty array of positive integers, got ${describe(inputShape)}`);
  }
  const per = sampleSize({ inputShape: [...inputShape] });
  if (x.length % per !== 0) {
    throw new DataError('BAD_SHAPE', `augmentBatch: x has ${x.length} values, not a whole number of samples of shape [${inputShape.join(', ')}] (${per} values each)`);
  }
  const geometric = shift > 0 || rotate > 0;
  const g = imageGeometry(inputShape);
  if (geometric && g === null) {
    throw new DataError('BAD_SHAPE', `augmentBatch: shift and rotate need images, but inputShape is [${inputShape.join(', ')}]`,
      'use [c, h, w], [h, w] or a flat square such as [784]; noise alone works on any shape');
  }

  const n = x.length / per;
  const out = new Float32Array(x.length);
  for (let s = 0; s < n; s++) {
    const base = s * per;
    if (geometric) {
      const dx = shift > 0 ? rng.int(2 * shift + 1) - shift : 0;
      const dy = shift > 0 ? rng.int(2 * shift + 1) - shift : 0;
      const angle = rotate > 0 ? (2 * rng.float() - 1) * rotate : 0;
      if (angle === 0) shiftSample(x, out, base, g!, dx, dy);
      else warpSample(x, out, base, g!, dx, dy, (angle * Math.PI) / 180, sampling);
    } else {
      out.set(x.subarray(base, base + per), base);
    }
    if (noise > 0) {
      for (let k = base; k < base + per; k++) out[k] = out[k]! + noise * rng.normal();
    }
  }
  return out;
}

/** Exact integer shift: out(i, j) = in(i - dy, j - dx), 0 outside. `out` is zero on entry. */
function shiftSample(x: Float32Array, out: Float32Array, base: number, { c, h, w }: Geometry, dx: number, dy: number): void {
  const j0 = Math.max(0, dx);
  const j1 = Math.min(w, w + dx);
  if (j1 <= j0) return;
  for (let ch = 0; ch < c; ch++) {
    const plane = base + ch * h * w;
    for (let i = Math.max(0, dy); i < Math.min(h, h + dy); i++) {
      const src = plane + (i - dy) * w;
      out.set(x.subarray(src + j0 - dx, src + j1 - dx), plane + i * w + j0);
    }
  }
}

/**
 * Rotation about the centre plus a shift, by inverse mapping: each output pixel reads the
 * input at the point that lands on it. `out` is zero on entry.
 */
function warpSample(
  x: Float32Array, out: Float32Array, base: number, { c, h, w }: Geometry,
  dx: number, dy: number, theta: number, sampling: 'bilinear' | 'nearest',
): void {
  const cos = Math.cos(theta);
  const sin = Math.sin(theta);
  const cx = (w - 1) / 2;
  const cy = (h - 1) / 2;
  const hw = h * w;
  for (let i = 0; i < h; i++) {
    const v = i - cy - dy;
    for (let j = 0; j < w; j++) {
      const u = j - cx - dx;
      // Inverse of the displayed-counterclockwise turn (y grows downward).
      const sx = cos * u - sin * v + cx;
      const sy = sin * u + cos * v + cy;
      const o = base + i * w + j;
      if (sampling === 'nearest') {
        const xi = Math.round(sx);
        const yi = Math.round(sy);
        if (xi < 0 || xi >= w || yi < 0 || yi >= h) continue;
        for (let ch = 0; ch < c; ch++) out[o + ch * hw] = x[base + ch * hw + yi * w + xi]!;
      } else {
        const x0 = Math.floor(sx);
        const y0 = Math.floor(sy);
        if (x0 < -1 || x0 >= w || y0 < -1 || y0 >= h) continue;
        const fx = sx - x0;
        const fy = sy - y0;
        const w00 = (1 - fx) * (1 - fy);
        const w01 = fx * (1 - fy);
        const w10 = (1 - fx) * fy;
        const w11 = fx * fy;
        const inX0 = x0 >= 0;
        const inX1 = x0 + 1 < w;
        const inY0 = y0 >= 0;
        const inY1 = y0 + 1 < h;
        for (let ch = 0; ch < c; ch++) {
          const p = base + ch * hw;
          let acc = 0;
          if (inY0 && inX0) acc += w00 * x[p + y0 * w + x0]!;
          if (inY0 && inX1) acc += w01 * x[p + y0 * w + x0 + 1]!;
          if (inY1 && inX0) acc += w10 * x[p + (y0 + 1) * w + x0]!;
          if (inY1 && inX1) acc += w11 * x[p + (y0 + 1) * w + x0 + 1]!;
          out[o + ch * hw] = acc;
        }
      }
    }
  }
}

/**
 * Epoch `epoch` of `batcher` with each minibatch's inputs augmented from
 * `augmentStream(seed, epoch, batchIndex)` (seed defaults to the batcher's).
 * @example for (const { x, y } of augmentEpoch(batcher, e, { shift: 2, noise: 0.05 })) step(x, y);
 */
export function* augmentEpoch<D extends Dataset>(
  batcher: Batcher<D>, epoch: number, opts: AugmentOptions, seed: number = batcher.seed,
): Generator<IndexedBatch<TargetsOf<D>>, void, undefined> {
  validateAugmentOptions(opts);
  const shape = batcher.dataset.inputShape;
  let b = 0;
  for (const batch of batcher.epoch(epoch)) {
    const data = augmentBatch(batch.x.data as Float32Array, shape, opts, augmentStream(seed, epoch, b++));
    yield { ...batch, x: new Tensor(data, batch.x.shape) };
  }
}
