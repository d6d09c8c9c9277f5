/**
 * The one seeded PRNG: initialization, shuffling, dropout and noise all draw from it.
 * sfc32 (a small chaotic counter generator): fast, 128 bits of state, and its state
 * can be saved and restored for deterministic resumes.
 */
export type RngState = [number, number, number, number];

/** Mixes any number of integers into a 32-bit seed (for streams per layer, step, micro-batch). */
export function hashSeed(...keys: number[]): number {
  let h = 0x811c9dc5 | 0;
  for (const k of keys) {
    h = Math.imul(h ^ (k | 0), 0x01000193);
    h = Math.imul(h ^ Math.floor(k / 4294967296), 0x01000193);
    h ^= h >>> 15;
  }
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new RangeError(`Rng: seed must be a finite number, got ${seed}`);
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = hashSeed(seed) | 0;
    for (let i = 0; i < 15; i++) this.nextUint32();
  }

  /** A generator for a sub-stream identified by keys, independent of how much this one was used. */
  static derive(...keys: number[]): Rng {
    return new Rng(hashSeed(...keys));
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Standard normal (Box–Muller, caching the second value). */
  normal(): number {
    if (this.spare !== null) { const s = this.spare; this.spare = null; return s; }
    let u = this.float();
    while (u === 0) u = this.float();
    const v = this.float();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Fisher–Yates shuffle in place. */
  shuffle<T extends { length: number; [i: number]: unknown }>(xs: T): T {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = xs[i];
      xs[i] = xs[j];
      xs[j] = t;
    }
    return xs;
  }

  getState(): RngState { this.spare = null; return [this.a, this.b, this.c, this.d]; }

  setState(s: RngState): void { [this.a, this.b, this.c, this.d] = s; this.spare = null; }
}
