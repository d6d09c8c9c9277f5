/**
 * `chainrule train --log-dir DIR` then `chainrule report DIR`, as a user runs them (real
 * processes, worker threads), and the report rendered by headless Chromium: no console or
 * page errors, no request beyond the file itself, one timeline row per actor, the measured
 * bubble the summary printed, and a screenshot.
 * Needs Debian's chromium (apt-get install -y chromium); skipped, saying so, without it.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TrainSummary } from '../coordinator/summary.js';
import type { RunRecord } from '../coordinator/run-log.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`report.test.ts: skipping the browser checks: ${CHROMIUM} is absent (install it with: apt-get install -y chromium)`);

const bin = join(import.meta.dirname, '..', 'coordinator', 'bin.ts');
const chainrule = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

describe('chainrule report', () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'chainrule-report-')), 'runs', 'a');

  it.skipIf(!haveChromium)('renders in headless Chromium with one timeline row per actor and the summary\'s measured bubble', async () => {
    // The command, one epoch of the built-in digits.
    const train = chainrule('train', '--placement', 'threads', '--stages', '2', '--micro-batches', '4', '--epochs', '1', '--log-dir', dir, '--json');
    expect(train.stderr).not.toMatch(/Error/);
    expect(train.code).toBe(0);
    const printed = JSON.parse(train.stdout) as TrainSummary;
    const report = chainrule('report', dir);
    expect(report.code).toBe(0);
    expect(report.stdout.trim()).toBe(`chainrule: wrote ${join(dir, 'report.html')}`);
    const actors = (JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')) as RunRecord).actors;
    expect(actors.length).toBe(2);

    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1120, height: 900 } });
      const problems: string[] = [];
      page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (r) => { if (!r.url().startsWith('file://')) problems.push(`request: ${r.url()}`); });
      await page.goto(`file://${join(dir, 'report.html')}`, { waitUntil: 'load' });
      expect(problems).toEqual([]);

      // One row per actor in the SVG timeline, each labelled with its actor and holding spans.
      const rows = page.locator('svg#timeline g.row');
      expect(await rows.count()).toBe(actors.length);
      expect(await rows.locator('text.actor').allTextContents()).toEqual(actors.map((a) => a.name));
      for (let a = 0; a < actors.length; a++) {
        const kinds = await rows.nth(a).locator('rect.span').evaluateAll((els) => [...new Set(els.map((e) => e.getAttribute('data-kind')))].sort());
        expect(kinds).toEqual(['backward', 'forward', 'optimizer', 'send', 'wait']);
      }
      // The measured bubble is the very number the summary printed.
      const measured = await page.locator('#measured-bubble').getAttribute('data-value');
      expect(Number(measured)).toBe(printed.bubbleFraction);
      expect(Number(await page.locator('#theoretical-bubble').getAttribute('data-value'))).toBe(printed.theoreticalBubbleFraction);
      expect(await page.locator('table.confusion tr').count()).toBe(11); // header + 10 digits
      expect(await page.locator('#loss-chart path').count()).toBeGreaterThanOrEqual(2);

      const png = join(dir, 'report.png');
      await page.screenshot({ path: png, fullPage: true });
      const head = readFileSync(png).subarray(0, 8);
      expect([...head]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      expect(statSync(png).size).toBeGreaterThan(10_000);
    } finally {
      await browser.close();
    }
  });

  it('a directory without a run log exits 2 naming the file', () => {
    const r = chainrule('report', join(dir, 'nope'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nope\/summary\.json/);
    const none = chainrule('report');
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/chainrule report takes one directory/);
  });
});
