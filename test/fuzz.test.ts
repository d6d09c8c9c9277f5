/**
 * A short fuzz run of every decoder of outside input (the long one is `npm run fuzz`): each
 * generated input is decoded or refused with a ChainruleError naming where, without hanging,
 * without allocating beyond a small multiple of its size, and without touching the prototypes.
 */
import { describe, expect, it } from 'vitest';
import { fuzzTargets } from './fuzz/targets.js';
import { defaultBounds, fuzz } from './fuzz/harness.js';

// A fixed seed keeps the run the same every time; `npm run fuzz` draws a new one each run.
const SEED = 0x5eed;
const RUNS = 1200;

describe('fuzzing the decoders (short run)', () => {
  for (const target of fuzzTargets) {
    it(`${target.name}: ${RUNS} hostile inputs, no crash, no hang`, () => {
      // The time bound only catches runaway inputs (a normal one takes well under a millisecond): generous on a shared machine.
      const stats = fuzz(target, { runs: RUNS, seed: SEED, bounds: { ...defaultBounds, hangMs: 10_000 } });
      const report = stats.failures.map((f) => `#${f.index} ${f.kind}: ${f.reason}\n  input: ${f.input}`).join('\n');
      expect(stats.inputs).toBe(RUNS);
      expect(stats.crashes + stats.hangs, report).toBe(0);
      // Some inputs must get through, or the generators only test the first check.
      expect(stats.accepted).toBeGreaterThan(0);
    });
  }
});
