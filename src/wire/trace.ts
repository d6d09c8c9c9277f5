/**
 * What an actor records of a step when its runStep asks for a trace: a flat array of
 * numbers, four per span — [kind, microBatch, t0, t1] — with times in milliseconds on the
 * actor's epoch clock (`performance.timeOrigin + performance.now()`). Cheap to record (no
 * objects, no extra clock reads) and to carry over any transport.
 *
 * @example
 * const spans = [SPAN.forward, 0, 1.7e12, 1.7e12 + 0.4];   // micro-batch 0's forward, 0.4 ms
 * decodeSpans(spans)[0]!.kind                                // 'forward'
 */
export const spanKinds = ['forward', 'backward', 'send', 'wait', 'reduce', 'optimizer', 'weight'] as const;
export type SpanKind = (typeof spanKinds)[number];

/** The code of each span kind in a trace array. */
export const SPAN = { forward: 0, backward: 1, send: 2, wait: 3, reduce: 4, optimizer: 5, weight: 6 } as const satisfies Record<SpanKind, number>;

export interface Span { kind: SpanKind; microBatch: number; t0: number; t1: number }

/**
 * Milliseconds since the Unix epoch at sub-microsecond resolution. Every thread and process
 * of one host reads the same system clock through it (measured within ~2 µs across worker
 * threads and processes), unlike `performance.now()`, whose origin is per thread.
 */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Reads a trace array that crossed a transport; anything malformed (wrong length, unknown
 * kind, a span ending before it starts, non-finite times) yields null rather than a bad span.
 */
export function decodeSpans(flat: unknown): Span[] | null {
  if (!Array.isArray(flat) || flat.length % 4 !== 0) return null;
  const out: Span[] = [];
  for (let i = 0; i < flat.length; i += 4) {
    const [k, mb, t0, t1] = [flat[i], flat[i + 1], flat[i + 2], flat[i + 3]] as unknown[];
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k >= spanKinds.length) return null;
    if (typeof mb !== 'number' || !Number.isSafeInteger(mb) || mb < -1) return null;
    if (typeof t0 !== 'number' || typeof t1 !== 'number' || !Number.isFinite(t0) || !Number.isFinite(t1) || t1 < t0) return null;
    out.push({ kind: spanKinds[k]!, microBatch: mb, t0, t1 });
  }
  return out;
}
