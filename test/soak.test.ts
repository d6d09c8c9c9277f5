/**
 * scripts/soak.ts: its fit and verdict on known series, and a short real run on two node
 * processes (the figures are there; whether they are flat needs the long run, not a test).
 */
import { describe, expect, it } from 'vitest';
import { figures, leastSquaresSlope, noiseBound, soak } from '../scripts/soak.js';

const MB = 1024 * 1024;

describe('soak: the fit and the verdict', () => {
  it('least squares recovers a line exactly, and measures the scatter around it', () => {
    const xs = [0, 1, 2, 3, 4];
    expect(leastSquaresSlope(xs, xs.map((x) => 3 + 2 * x))).toEqual({ slope: 2, intercept: 3, rms: 0 });
    const zigzag = leastSquaresSlope(xs, [1, -1, 1, -1, 1]);
    expect(zigzag.slope).toBeCloseTo(0, 12);
    expect(zigzag.rms).toBeGreaterThan(0.9);
    expect(leastSquaresSlope([5], [7])).toEqual({ slope: 0, intercept: 7, rms: 0 });
  });

  it('a retained 2 KB per step is growing over 20,000 steps; steps of a few MB either way are flat; memory given back is falling, not growing', () => {
    const steps = (f: (step: number) => number) => Array.from({ length: 81 }, (_, i) => ({ step: i * 250, bytes: f(i * 250) }));
    const base = 150 * MB;
    const leak = figures('leaky', 'rss', steps((s) => base + s * 2048), 1000, 20_000);
    expect(leak.trend).toBe('growing');
    expect(leak.slopeMbPer1000).toBeCloseTo(2000 / 1024, 6);
    expect(leak.growthMb).toBeCloseTo(40_000 / 1024, 6);
    // The heap's bound is tighter: 200 bytes a step is 3.8 MB over the run.
    expect(figures('heap', 'heap', steps((s) => 16 * MB + s * 200), 1000, 20_000).trend).toBe('growing');
    const wander = figures('wander', 'rss', steps((s) => base + (Math.floor(s / 3000) % 2) * 6 * MB), 1000, 20_000);
    expect(wander.trend).toBe('flat');
    const giveBack = figures('shrinking', 'rss', steps((s) => base + (s < 13_000 ? 30 * MB : 0)), 1000, 20_000);
    expect(giveBack.trend).toBe('falling');
    expect(giveBack.startMb).toBe(180);
    expect(giveBack.endMb).toBe(150);
    expect(giveBack.peakMb).toBe(180);
    // Samples before the warm-up are left out of the fit: a rise while allocators settle is not growth.
    const settling = figures('settling', 'rss', steps((s) => base + Math.min(s, 1000) * 40 * 1024), 1000, 20_000);
    expect(settling.slopeMbPer1000).toBe(0);
    expect(settling.trend).toBe('flat');
  });

  it('the bound is 20 MB or 5% of the start for a resident set, 2 MB or 5% for a live heap', () => {
    expect(noiseBound('rss', 100)).toBe(20);
    expect(noiseBound('rss', 600)).toBe(30);
    expect(noiseBound('heap', 16)).toBe(2);
    expect(noiseBound('heap', 100)).toBe(5);
  });
});

describe('soak: a short real run', () => {
  it('on two chainrule node processes: samples every process, checkpoints, evaluates, and judges each', async () => {
    const r = await soak({ steps: 200, placement: 'grpc', sampleEvery: 50, warmup: 50, checkpointEvery: 100, evaluateEvery: 100 });
    expect(r.steps).toBe(200);
    expect(r.samples.map((s) => s.step)).toEqual([0, 50, 100, 150, 200]);
    // One of each before the first step, then at steps 100 and 200.
    expect(r.checkpoints).toBe(3);
    expect(r.evaluations).toBe(3);
    expect(r.lastTestAccuracy).toBeGreaterThan(0.5);
    expect(r.heap.name).toBe('coordinator heapUsed');
    expect(r.processes[0]!.name).toBe('coordinator');
    expect(r.processes[0]!.pid).toBe(process.pid);
    if (process.platform === 'linux') {
      expect(r.processes).toHaveLength(3);
      for (const s of r.samples) for (const b of s.nodes) expect(b).toBeGreaterThan(10 * MB);
      expect(r.processes[1]!.name).toMatch(/^node 0 \(127\.0\.0\.1:\d+\)$/);
    } else {
      expect(r.note).toMatch(/not sampled/);
    }
    for (const f of [...r.processes, r.heap]) expect(['flat', 'falling', 'growing']).toContain(f.trend);
    expect(r.verdict).toMatch(/^(flat|GROWING)/);
  });
});
