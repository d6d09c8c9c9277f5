/** The command line as a user runs it: a real process, real files, exit codes. */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../src/tensor/rng.js';
import { nativeKernel } from '../src/tensor/native/index.js';
import { defaultBackendName } from '../src/tensor/select.js';

const bin = join(import.meta.dirname, '..', 'coordinator', 'bin.ts');
// Each test writes files of its own names here.
const dir = mkdtempSync(join(tmpdir(), 'chainrule-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The runs choose their backend by default or by flag, whatever the caller's shell exports.
const { CHAINRULE_BACKEND: _ignored, ...env } = process.env;

function chainrule(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { encoding: 'utf8', timeout: 120_000, env });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// Three separable classes in four features.
const rng = new Rng(3);
const rows = ['a,b,c,d,label'];
for (let i = 0; i < 240; i++) {
  const y = i % 3;
  rows.push([0, 1, 2, 3].map((j) => (rng.normal() * 0.3 + (j === y ? 2 : 0)).toFixed(4)).join(',') + `,${y}`);
}
const csv = join(dir, 'toy.csv');
writeFileSync(csv, rows.join('\n') + '\n');
const model = join(dir, 'model.json');
writeFileSync(model, JSON.stringify({
  inputShape: [4],
  layers: [{ type: 'dense', inputs: 4, units: 16 }, { type: 'relu' }, { type: 'dense', inputs: 16, units: 3, init: 'xavier' }],
  loss: 'softmaxCrossEntropy',
}));

describe('chainrule train', () => {
  it('trains a JSON model spec on a CSV file; with --json standard output is one JSON summary line', () => {
    const r = chainrule('train', '--model', model, '--dataset', `csv:${csv}`, '--epochs', '3', '--batch-size', '25', '--lr', '0.1', '--seed', '5', '--json');
    expect(r.code).toBe(0);
    // Standard output holds only the JSON; the start line and the epoch lines go to standard error.
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBe(1);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('epoch ')).length).toBe(3);
    const s = JSON.parse(lines[0]!);
    for (const k of ['epochs', 'trainLoss', 'testAccuracy', 'samplesPerSecond', 'droppedSamples', 'weightsSha256']) expect(s).toHaveProperty(k);
    expect(s.epochs).toBe(3);
    // 192 training rows (80%) in batches of 25: 7 batches, 17 samples dropped per epoch.
    expect(s.droppedPerEpoch).toBe(17);
    expect(s.droppedSamples).toBe(51);
    expect(s.testAccuracy).toBeGreaterThan(0.8);
    expect(s.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
    // The backend the run chose by default, and the native microkernel when it is native.
    expect(s.backend).toBe(defaultBackendName());
    expect(s.backendKernel).toBe(s.backend === 'native' ? nativeKernel() : null);
  });

  it('--backend js trains on the reference kernels and says so', () => {
    const r = chainrule('train', '--model', model, '--dataset', `csv:${csv}`, '--epochs', '1', '--batch-size', '25', '--backend', 'js', '--json');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect([s.backend, s.backendKernel]).toEqual(['js', null]);
  });

  it('an unknown flag exits 2 naming the flag', () => {
    const r = chainrule('train', '--epoch', '3');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--epoch/);
  });

  it('a bad value exits 2 naming the flag', () => {
    const r = chainrule('train', '--epochs', 'two');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--epochs must be an integer, got 'two'/);
  });

  it('a missing file exits 2 naming the file', () => {
    const r = chainrule('train', '--model', join(dir, 'nope.json'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nope\.json/);
    const r2 = chainrule('train', '--dataset', `csv:${join(dir, 'missing.csv')}`);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/missing\.csv/);
  });

  it('a ragged CSV row or a non-numeric cell exits 2 naming the line and column', () => {
    const bad = join(dir, 'ragged.csv');
    writeFileSync(bad, 'a,b,label\n1,2,0\n3,1\n');
    const r = chainrule('train', '--dataset', `csv:${bad}`);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ragged\.csv:3/);
    const nan = join(dir, 'nan.csv');
    writeFileSync(nan, 'a,b,label\n1,2,0\n3,x,1\n');
    const r2 = chainrule('train', '--dataset', `csv:${nan}`);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/nan\.csv:3:2/);
  });

  it('an unknown command or placement exits 2', () => {
    expect(chainrule('fly').code).toBe(2);
    const r = chainrule('train', '--placement', 'carrier-pigeon', '--epochs', '1');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^chainrule: --placement must be one of local, threads, grpc, got 'carrier-pigeon'\n$/);
  });
});

describe('Ctrl-C', () => {
  it('finishes the step, writes the checkpoint it was asked for, says so, exit 130', async () => {
    const { spawn } = await import('node:child_process');
    const { mkdtempSync: tmp, existsSync } = await import('node:fs');
    const ck = join(tmp(join(tmpdir(), 'chainrule-sigint-')), 'ck');
    const child = spawn(process.execPath, ['--import', 'tsx', bin, 'train', '--epochs', '50', '--batch-size', '16', '--checkpoint', ck, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    // Interrupt once training is under way (the start line is on stderr with --json).
    await new Promise<void>((resolve) => child.stderr.on('data', (d: Buffer) => { err += d.toString(); if (/chainrule: training/.test(err)) resolve(); }));
    await new Promise((r) => setTimeout(r, 1500));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(130);
    expect(err).toMatch(/Ctrl-C: stopping after this step/);
    const m = /stopped after step (\d+); checkpoint written to (\S+)/.exec(err);
    expect(m, err).not.toBeNull();
    expect(existsSync(m![2]!)).toBe(true);
    const s = JSON.parse(out.trim().split('\n').pop()!);
    expect(s.stopped.step).toBe(Number(m![1]));
  });
});
