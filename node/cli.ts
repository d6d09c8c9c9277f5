/**
 * `chainrule node --port P [--host H]`: host stages for a remote coordinator until stopped.
 *
 * Example: `chainrule node --port 7001` prints `chainrule node listening on 127.0.0.1:7001`
 * and serves until SIGINT or SIGTERM. `--port 0` picks a free port (read it from that line).
 */
import { parseArgs } from 'node:util';
import { startNode } from './server.js';

const usage = 'Usage: chainrule node --port P [--host H]   (P in 0..65535, 0 picks a free one; H defaults to 127.0.0.1, use 0.0.0.0 to accept other hosts)';

/** Exit codes: 0 stopped by a signal (or --help), 1 could not listen, 2 bad command line. */
export async function nodeMain(argv: string[]): Promise<number> {
  let values: { port?: string; host?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { port: { type: 'string' }, host: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    // parseArgs names the flag: "Unknown option '--prot'", "Option '--port <value>' argument missing".
    console.error(`chainrule node: ${(e as Error).message}\n${usage}`);
    return 2;
  }
  if (values.help) { console.log(usage); return 0; }
  if (values.port === undefined) {
    console.error(`chainrule node: --port is required\n${usage}`);
    return 2;
  }
  const port = Number(values.port);
  if (!/^\d{1,5}$/.test(values.port) || port > 65535) {
    console.error(`chainrule node: --port must be an integer in 0..65535, got '${values.port}'\n${usage}`);
    return 2;
  }
  const host = values.host ?? '127.0.0.1';
  if (host.trim() === '') {
    console.error(`chainrule node: --host must not be empty\n${usage}`);
    return 2;
  }
  let node;
  try {
    node = await startNode({ host, port });
  } catch (e) {
    const m = (e as Error).message;
    console.error(m.startsWith('chainrule node') ? m : `chainrule node: ${m}`);
    return 1;
  }
  console.log(`chainrule node listening on ${node.address}`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await node.close();
  return 0;
}
