/**
 * The progress bar as a user sees it: in a real terminal (a tmux pane) a bar that moves
 * through each epoch's steps and is cleared before the epoch's line; on a pipe, none of it.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../src/tensor/rng.js';

const root = join(import.meta.dirname, '..');
const bin = join(root, 'coordinator', 'bin.ts');
const dir = mkdtempSync(join(tmpdir(), 'chainrule-progress-'));
const hasTmux = spawnSync('tmux', ['-V']).status === 0;
if (!hasTmux) console.warn('progress.test.ts: skipping the terminal check: tmux is not installed (apt-get install -y tmux)');

const rng = new Rng(9);
const rows = ['a,b,c,label'];
for (let i = 0; i < 300; i++) rows.push([0, 1, 2].map((j) => (rng.normal() * 0.3 + (j === i % 3 ? 2 : 0)).toFixed(4)).join(',') + `,${i % 3}`);
const csv = join(dir, 'toy.csv');
writeFileSync(csv, rows.join('\n') + '\n');

/** Anything a bar draws: carriage returns, escape sequences, the bar's block characters. */
const barMarks = /\r|\x1b\[|[\u2588\u2591]/;

describe('progress', () => {
  it('piped, there is no bar: plain lines only, with and without --json', () => {
    const plain = spawnSync(process.execPath, ['--import', 'tsx', bin, 'train', '--dataset', `csv:${csv}`, '--epochs', '2', '--batch-size', '20'], { encoding: 'utf8', timeout: 120_000 });
    expect(plain.status).toBe(0);
    expect(plain.stdout).not.toMatch(barMarks);
    expect(plain.stderr).toBe('');
    expect(plain.stdout.split('\n').filter((l) => /^epoch [12]\/2  train loss/.test(l)).length).toBe(2);
    const json = spawnSync(process.execPath, ['--import', 'tsx', bin, 'train', '--dataset', `csv:${csv}`, '--epochs', '2', '--batch-size', '20', '--json'], { encoding: 'utf8', timeout: 120_000 });
    expect(json.status).toBe(0);
    expect(json.stderr).not.toMatch(barMarks);
    expect(json.stdout.trim().split('\n').length).toBe(1);
    const s = JSON.parse(json.stdout);
    expect(s.history.length).toBe(2);
    expect(s.versions.node).toBe(process.versions.node);
  });

  describe.skipIf(!hasTmux)('in a terminal (tmux)', () => {
    // A tmux server of our own (its own socket), so that nothing else's sessions are touched.
    const socket = `chainrule-test-${process.pid}`;
    const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
    afterAll(() => { spawnSync('tmux', ['-L', socket, 'kill-server']); });

    it('a bar moves through each epoch and is cleared before the epoch line', async () => {
      const cmd = [process.execPath, '--import', 'tsx', bin, 'train', '--placement', 'threads', '--stages', '2', '--micro-batches', '4', '--epochs', '2', '--batch-size', '32']
        .map((a) => `'${a}'`).join(' ');
      tmux('new-session', '-d', '-s', 'bar', '-x', '160', '-y', '15', '-c', root, `${cmd}; echo "EXIT $?"; sleep 600`);
      const seen = new Set<string>();
      const partial: string[] = [];
      let screen = '';
      const deadline = Date.now() + 240_000;
      while (Date.now() < deadline) {
        screen = tmux('capture-pane', '-p', '-t', 'bar');
        for (const m of screen.matchAll(/^epoch (\d)\/2 [\u2588\u2591]{24} (\d+)\/250 steps \| ETA \S+ \| loss \d+\.\d{4} \| \d+ samples\/s/gm)) {
          seen.add(`${m[1]}:${m[2]}`);
          if (Number(m[2]) < 250) partial.push(m[0]);
        }
        if (/^EXIT \d+/m.test(screen)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(screen).toMatch(/^EXIT 0/m);
      // Moving: the bar was seen part-way, at more than one position.
      expect(partial.length).toBeGreaterThan(0);
      expect(seen.size).toBeGreaterThanOrEqual(2);
      // Cleared: the final screen holds the epoch lines and no bar.
      expect(screen.split('\n').filter((l) => /^epoch [12]\/2  train loss/.test(l)).length).toBe(2);
      expect(screen).not.toMatch(/[\u2588\u2591]/);
      console.log(`progress.test.ts: saw the bar at ${seen.size} positions, e.g. "${partial[Math.floor(partial.length / 2)]}"`);
    });
  });
});
