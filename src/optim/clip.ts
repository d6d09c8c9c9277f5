/**
 * Global-norm gradient clipping across actors: each actor reports the sum of squares of
 * its gradients, the coordinator adds them in one fixed order and asks for the factor
 * that every actor then multiplies its gradients by (e.g. folded into gradScale).
 */

/**
 * Sum of squares of values, accumulated in float64 in index order (what an actor reports).
 * @example sumOfSquares(Float32Array.of(3, 4)) // 25
 */
export function sumOfSquares(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]! * values[i]!;
  return s;
}

/**
 * The factor to multiply gradients by so that their global norm is at most maxNorm,
 * PyTorch's clip_grad_norm_: min(1, maxNorm / (norm + 1e-6)).
 * Throws when the norm is not finite (a NaN or overflowing gradient must not be scaled
 * into the weights).
 * @example clipScale(25, 1) // ≈ 0.2: the norm is 5
 */
export function clipScale(sumOfSquares: number, maxNorm: number): number {
  if (!(Number.isFinite(maxNorm) && maxNorm > 0)) throw new Error(`clip: maxNorm must be a positive number, got ${maxNorm}`);
  if (sumOfSquares < 0) throw new Error(`clip: the sum of squares of the gradients must be non-negative, got ${sumOfSquares}`);
  const norm = Math.sqrt(sumOfSquares);
  if (!Number.isFinite(norm)) throw new Error(`clip: the gradient norm is not finite (sum of squares ${sumOfSquares}); a gradient holds NaN or Infinity or overflowed — lower the learning rate or check the loss`);
  return Math.min(1, maxNorm / (norm + 1e-6));
}
