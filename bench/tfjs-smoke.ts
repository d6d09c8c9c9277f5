/**
 * Standalone check of the TF.js reference: random data (1024 samples), both backends and
 * both models, 2 s each. Run: npx tsx bench/tfjs-smoke.ts [--json] [--seconds N]
 */
import { benchTfjs, type TfjsBackendName, type TfjsModelName } from './tfjs.js';
import { emitJson, printTable, type Row } from './report.js';

const args = process.argv.slice(2);
const secIdx = args.indexOf('--seconds');
const seconds = secIdx >= 0 ? Number(args[secIdx + 1]) : 2;
const samples = 1024;
const numClasses = 10;

// Deterministic pseudo-random data: pixel-like values in [0, 1), labels in [0, 10).
let s = 12345;
const rand = (): number => {
  s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  return s / 4294967296;
};
const x = new Float32Array(samples * 784);
for (let i = 0; i < x.length; i++) x[i] = rand();
const y = new Int32Array(samples);
for (let i = 0; i < samples; i++) y[i] = Math.floor(rand() * numClasses);

const rows: Row[] = [];
for (const model of ['mlp', 'cnn'] as TfjsModelName[]) {
  for (const backend of ['cpu', 'wasm'] as TfjsBackendName[]) {
    const r = await benchTfjs({
      backend, model, x, y, numClasses, batchSize: 64, seconds,
      inputShape: model === 'mlp' ? [784] : [28, 28, 1],
    });
    process.stderr.write(`tfjs ${backend} ${model}: ${r.samplesPerSecond.toFixed(0)} samples/s (${r.steps} steps in ${r.ms.toFixed(0)} ms, last loss ${r.lastLoss.toFixed(3)})\n`);
    rows.push({ name: `tfjs-${backend} ${model}`, value: r.samplesPerSecond, unit: 'samples/s' });
  }
  const cpu = rows[rows.length - 2]!;
  const wasm = rows[rows.length - 1]!;
  wasm.ratio = { to: cpu.name, value: wasm.value / cpu.value };
}
// TF.js's pure-JS Conv2DBackpropFilter dominates the cpu CNN step; the same model with the
// conv2d-based filter gradient (as used on wasm) shows what the rest of the cpu backend does.
{
  const r = await benchTfjs({
    backend: 'cpu', model: 'cnn', x, y, numClasses, batchSize: 64, seconds, inputShape: [28, 28, 1],
    convFilterGrad: 'conv2d-trick',
  });
  process.stderr.write(`tfjs cpu cnn (conv2d-trick filter grad): ${r.samplesPerSecond.toFixed(0)} samples/s (${r.steps} steps)\n`);
  rows.push({ name: 'tfjs-cpu cnn, conv2d filter grad', value: r.samplesPerSecond, unit: 'samples/s' });
}
printTable(rows, `TF.js training throughput, batch 64, ${seconds} s each`);
emitJson(rows, { seconds, batchSize: 64, samples });
