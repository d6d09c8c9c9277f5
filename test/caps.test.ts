/**
 * A configure is checked against the node's caps before anything is built: a model of too many
 * parameters (a dense layer of a billion units, a convolution of absurd channels) or a layer
 * needing absurd room per sample (a convolution padded by 100,000) is refused naming the layer
 * and the cap, and the node goes on serving a real run. The parameter counts read from specs
 * are checked against every registered layer type, built.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/index.js';
import { checkSpecCaps, DEFAULT_MAX_PARAMS } from '../node/caps.js';
import { nodeMain } from '../node/cli.js';
import { makeClient, unary } from '../node/grpc-common.js';
import { startNode, type RunningNode } from '../node/server.js';
import { loadMnist, subset } from '../src/data/index.js';
import { PARAMETER_FREE_LAYERS, buildLayer, builtinModels, layerParameterCounts, layerRegistry, layerSpecParameters, mlpSpec, type LayerSpec, type ModelSpec } from '../src/nn/index.js';
import { Rng } from '../src/tensor/rng.js';
import { backend, setBackend } from '../src/tensor/backend.js';
import type { Reply, StageConfig } from '../src/wire/index.js';

/** One spec per registered layer type (a new type fails below until it has one). */
const samples: Record<string, LayerSpec[]> = {
  dense: [{ type: 'dense', inputs: 3, units: 5 }],
  conv2d: [{ type: 'conv2d', inChannels: 2, outChannels: 3, kernel: [3, 2] }, { type: 'conv2d', inChannels: 2, outChannels: 4, kernel: 3, bias: false }],
  layerNorm: [{ type: 'layerNorm', features: 6 }],
  batchNorm: [{ type: 'batchNorm', channels: 4 }],
  rnn: [{ type: 'rnn', inputs: 3, hidden: 5 }],
  gru: [{ type: 'gru', inputs: 3, hidden: 5 }],
  lstm: [{ type: 'lstm', inputs: 3, hidden: 5 }],
  embedding: [{ type: 'embedding', vocab: 7, dim: 3 }],
  maxPool2d: [{ type: 'maxPool2d', kernel: 2 }],
  avgPool2d: [{ type: 'avgPool2d', kernel: 2 }],
  reshape: [{ type: 'reshape', shape: [2, 3] }],
  dropout: [{ type: 'dropout', rate: 0.5 }],
  gaussianSample: [{ type: 'gaussianSample', latent: 2 }],
  leakyRelu: [{ type: 'leakyRelu', slope: 0.1 }],
};
for (const t of ['relu', 'sigmoid', 'tanh', 'softplus', 'softmax', 'logSoftmax', 'flatten']) samples[t] = [{ type: t }];

describe('parameters read from a spec, without building it', () => {
  for (const type of [...layerRegistry.keys()]) {
    it(`${type}: the count from its spec is the built layer's`, () => {
      const specs = samples[type];
      expect(specs, `add a sample spec of '${type}' here (and its parameter count to src/nn/size.ts)`).toBeDefined();
      for (const spec of specs!) {
        const layer = buildLayer(spec, { rng: new Rng(1), where: 'layer 0' });
        const built = layer.params.reduce((n, [, p]) => n + p.size, 0);
        expect(layerSpecParameters(spec)).toBe(built);
        if (built === 0) expect(PARAMETER_FREE_LAYERS).toContain(type);
      }
    });
  }

  it("the built-in models' counts agree, and a 784-4096×8-10 MLP fits the default cap", () => {
    for (const [name, make] of Object.entries(builtinModels)) {
      const spec = make([784], 10);
      const fromSpec = spec.layers.map((l) => layerSpecParameters(l));
      expect(fromSpec, name).toEqual(layerParameterCounts(spec));
    }
    const big = mlpSpec(Array(8).fill(4096), 784, 10);
    const total = big.layers.reduce((n, l) => n + layerSpecParameters(l)!, 0);
    expect(total).toBe(120_725_514);
    expect(() => checkSpecCaps({ model: big, start: 0, end: big.layers.length, seed: 1, capacity: 1 }, { maxParams: DEFAULT_MAX_PARAMS }, 0, 'stage 0')).not.toThrow();
  });

  it('names the largest layer, and what the other actors hold', () => {
    const spec: ModelSpec = { inputShape: [784], layers: [{ type: 'dense', inputs: 784, units: 64 }, { type: 'relu' }, { type: 'dense', inputs: 64, units: 1e9 }] };
    const config = (start: number, end: number): StageConfig => ({ model: spec as StageConfig['model'], start, end, seed: 1, capacity: 1 });
    expect(() => checkSpecCaps(config(0, 1), { maxParams: DEFAULT_MAX_PARAMS }, 0, 'stage 0')).toThrow(
      "stage 0: the model has 65,000,050,240 parameters (layer 2 (dense) alone 65,000,000,000), above this node's cap of 268,435,456 (--max-params); every stage builds all the model's layers");
    const small: ModelSpec = { inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 10 }, { type: 'dense', inputs: 10, units: 2 }] };
    expect(() => checkSpecCaps({ model: small as StageConfig['model'], start: 1, end: 2, seed: 1, capacity: 1 }, { maxParams: 72 }, 60, 'stage 1 of replica 1'))
      .toThrow("stage 1 of replica 1: layers [1, 2) have 22 parameters, and this node's other actors hold 60: 82 in all, above its cap of 72 (--max-params)");
  });
});

describe('a gRPC node refuses a hostile configure before allocating, and keeps serving', () => {
  let node: RunningNode;
  const initialBackend = backend();
  afterEach(() => setBackend(initialBackend));
  afterAll(async () => { await node?.close(); });
  const m = loadMnist();
  const data = { train: subset(m.train, Array.from({ length: 128 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 64 }, (_, i) => i)) };
  const mlp = mlpSpec([32], 784, 10);

  it('refuses models too large and layers too wide per sample, naming the layer and the cap; then trains a real run', async () => {
    node = await startNode({ port: 0, log: false });
    const client = makeClient(node.address);
    try {
      const configure = async (run: string, model: unknown): Promise<Reply> =>
        (await unary(client, node.address, 'Call', { run, stage: 0, step: 0, microBatch: -1, type: 'configure', config: { model: model as StageConfig['model'], start: 0, end: 1, seed: 1, capacity: 1 } }, 10_000)) as Reply;
      const hostile: [unknown, RegExp][] = [
        [{ inputShape: [784], layers: [{ type: 'dense', inputs: 784, units: 1e9 }] },
          /^node 127\.0\.0\.1:\d+: stage 0: the model has 785,000,000,000 parameters \(layer 0 \(dense\) alone 785,000,000,000\), above this node's cap of 268,435,456 \(--max-params\)/],
        [{ inputShape: [3, 28, 28], layers: [{ type: 'conv2d', inChannels: 3, outChannels: 100000, kernel: 100 }] },
          /stage 0: the model has 3,000,100,000 parameters \(layer 0 \(conv2d\) alone 3,000,100,000\), above this node's cap/],
        [{ inputShape: [1, 28, 28], layers: [{ type: 'conv2d', inChannels: 1, outChannels: 1, kernel: 3, padding: 100000 }] },
          /stage 0: layer 0 \(conv2d\) needs 360,093,606,084 values per sample for its unfolded patches \(200026×200026 positions × 1·3×3\), above the cap of 33,554,432 \(what one message carries\)/],
        [{ inputShape: [6000, 6000], layers: [{ type: "flatten" }, { type: "dense", inputs: 36000000, units: 1 }] },
          /stage 0: layer 0 \(flatten\) needs 36,000,000 values per sample for its output \[36000000\], above the cap of 33,554,432/],
      ];
      for (const [i, [model, why]] of hostile.entries()) {
        const r = await configure(`hostile-${i}`, model);
        expect(r.type).toBe('error');
        expect((r as { code: string }).code).toBe('TOO_LARGE');
        expect((r as { message: string }).message).toMatch(why);
      }
      // Still serving: a real run on this node ends with the in-process weights.
      const train = async (o: object) => {
        const c = new Coordinator({ model: mlp, dataset: data, epochs: 1, batchSize: 32, seed: 2, stages: 2, ...o });
        try { return (await c.train()).weightsSha256; } finally { await c.close(); }
      };
      expect(await train({ placement: 'grpc', nodes: [node.address] })).toBe(await train({ placement: 'local' }));
    } finally {
      client.close();
    }
  });

  it("counts what the node's other actors hold: a second replica over the cap is refused, one fits", async () => {
    const per = mlp.layers.reduce((n, l) => n + layerSpecParameters(l)!, 0);
    const small = await startNode({ port: 0, log: false, maxParams: per + 100 });
    try {
      const run = (replicas: number) => {
        const c = new Coordinator({ model: mlp, dataset: data, epochs: 1, batchSize: 32, seed: 2, replicas, placement: 'grpc', nodes: [small.address], commitEvery: 0 });
        return c.train().finally(() => c.close());
      };
      await expect(run(2)).rejects.toThrow(new RegExp(`stage 0 of replica [01]: layers \\[0, 3\\) have ${per.toLocaleString('en-US')} parameters, and this node's other actors hold ${per.toLocaleString('en-US')}`));
      expect((await run(1)).weightsSha256).toMatch(/^[0-9a-f]{64}$/);
    } finally {
      await small.close();
    }
  });

  it('chainrule node refuses a bad --max-params', async () => {
    expect(await nodeMain(['--port', '0', '--max-params', 'lots'])).toBe(2);
    expect(await nodeMain(['--port', '0', '--max-params', '0'])).toBe(2);
  });
});
