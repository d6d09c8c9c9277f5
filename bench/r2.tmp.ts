import { replicaCeiling } from './ceiling.js';
import { measureThroughput } from './throughput.js';
import { loadMnist } from '../src/data/index.js';
import { mlpSpec, cnnSpec } from '../src/nn/index.js';
const mnist = loadMnist();
for (const which of (process.argv[2] ?? 'wide,mlp,cnn').split(',')) {
  const [spec, batch] = which === 'wide' ? [mlpSpec([1024, 1024, 1024, 1024, 1024]), 256] : which === 'mlp' ? [mlpSpec(), 64] : [cnnSpec(), 64];
  const o = { model: spec, batchSize: batch, optimizer: 'sgd' as const, lr: 0.01 };
  const one = (await measureThroughput(o, mnist, 4)).samplesPerSecond;
  const r2 = await measureThroughput({ ...o, placement: 'threads', replicas: 2 }, mnist, 4);
  const c = await replicaCeiling(o, 3);
  console.log(which, 'one', one.toFixed(0), 'R=2', (r2.samplesPerSecond / one).toFixed(2), 'ceiling', (c.samplesPerSecond / one).toFixed(2), c.each.map((e) => e.toFixed(0)).join('+'));
}
