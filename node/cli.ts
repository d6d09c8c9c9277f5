/** `chainrule node --port P [--host H]`: host stages for a remote coordinator until stopped. */
import { parseArgs } from 'node:util';
import { startNode } from './server.js';

const usage = 'Usage: chainrule node --port P [--host H]   (H defaults to 127.0.0.1; use 0.0.0.0 to accept other hosts)';

export class NodeUsageError extends Error {
  readonly code = 'USAGE';
}

export async function nodeMain(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { port: { type: 'string' }, host: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    throw new NodeUsageError(`${(e as Error).message}\n${usage}`);
  }
  if (values.help) { console.log(usage); return 0; }
  const port = Number(values.port ?? 0);
  if (!/^\d+$/.test(values.port ?? '0') || port > 65535) throw new NodeUsageError(`--port must be an integer in 0..65535, got '${values.port}'\n${usage}`);
  const node = await startNode({ host: values.host ?? '127.0.0.1', port });
  console.log(`chainrule node listening on ${node.address}`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await node.close();
  return 0;
}
