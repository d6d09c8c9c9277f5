/**
 * `chainrule node --port P [--host H] [--tls DIR] [--token-file FILE] ...`: host stages for
 * remote coordinators until stopped.
 *
 * Example: `chainrule node --port 7001` prints `chainrule node listening on 127.0.0.1:7001`
 * and serves until SIGINT or SIGTERM, then drains: health NOT_SERVING, no new calls, the calls
 * in flight answered, closed within `--drain-timeout` (node/drain.ts). `--port 0` picks a free
 * port (read it from that line).
 * Off loopback: `chainrule node --host 0.0.0.0 --port 7001 --tls certs --token-file certs/token`.
 */
import { parseArgs } from 'node:util';
import { isUserError } from '../src/errors.js';
import { startNode } from './server.js';
import { isLoopback } from './tls.js';

const usage = `Usage: chainrule node --port P [--host H] [--tls DIR] [--token-file FILE] [--max-runs N] [--run-timeout T] [--drain-timeout T] [--max-params N] [--health-port P] [--insecure]
  --port P             0..65535 (0 picks a free one)
  --host H             the address to listen on (default 127.0.0.1; 0.0.0.0 accepts other hosts, and needs --tls)
  --tls DIR            serve mutual TLS with DIR/ca.pem, DIR/node.pem, DIR/node-key.pem (from chainrule certs)
  --token-file FILE    accept only calls whose bearer token is in FILE (one a line; re-read when it changes)
  --max-runs N         runs hosted at once; another coordinator is told the node is busy (default 1)
  --run-timeout T      close a run whose coordinator has made no call for T (600, 90s, 10m, 1h; default 10m)
  --drain-timeout T    on SIGTERM or SIGINT, wait up to T for the calls in flight before closing (500ms, 10s; default 10s)
  --max-params N       refuse a model of more parameters, or more for all this node's stages together (default 268435456)
  --health-port P      also serve only the gRPC health service, in plaintext, on port P (for probes without a certificate, e.g. Kubernetes')
  --insecure           listen on a non-loopback host without TLS (anyone who reaches the port can drive the node)
Environment: CHAINRULE_V8_HEAP=default keeps V8's heap growth instead of chainrule's 400% (N: N percent)`;

/** `600`, `90s`, `10m`, `1h` in milliseconds, or null. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const)[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return ms > 0 && Number.isFinite(ms) ? ms : null;
}

/**
 * Exit codes: 0 stopped by a signal after a clean drain (or --help), 1 could not listen or cut
 * calls off at the drain deadline, 2 bad command line or security files.
 */
export async function nodeMain(argv: string[]): Promise<number> {
  let values: { port?: string; host?: string; tls?: string; 'token-file'?: string; 'max-runs'?: string; 'run-timeout'?: string; 'drain-timeout'?: string; 'max-params'?: string; 'health-port'?: string; insecure?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: {
        port: { type: 'string' }, host: { type: 'string' }, tls: { type: 'string' }, 'token-file': { type: 'string' },
        'max-runs': { type: 'string' }, 'run-timeout': { type: 'string' }, 'drain-timeout': { type: 'string' }, 'max-params': { type: 'string' }, 'health-port': { type: 'string' }, insecure: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    // parseArgs names the flag: "Unknown option '--prot'", "Option '--port <value>' argument missing".
    console.error(`chainrule node: ${(e as Error).message}\n${usage}`);
    return 2;
  }
  if (values.help) { console.log(usage); return 0; }
  const bad = (m: string) => { console.error(`chainrule node: ${m}\n${usage}`); return 2; };
  if (values.port === undefined) return bad('--port is required');
  const port = Number(values.port);
  if (!/^\d{1,5}$/.test(values.port) || port > 65535) return bad(`--port must be an integer in 0..65535, got '${values.port}'`);
  const healthPort = values['health-port'] === undefined ? undefined : Number(values['health-port']);
  if (values['health-port'] !== undefined && (!/^\d{1,5}$/.test(values['health-port']) || healthPort! > 65535)) return bad(`--health-port must be an integer in 0..65535, got '${values['health-port']}'`);
  const host = values.host ?? '127.0.0.1';
  if (host.trim() === '') return bad('--host must not be empty');
  const maxRuns = values['max-runs'] === undefined ? 1 : Number(values['max-runs']);
  if (values['max-runs'] !== undefined && !(/^\d+$/.test(values['max-runs']) && maxRuns >= 1)) return bad(`--max-runs must be a positive integer, got '${values['max-runs']}'`);
  const runTimeoutMs = values['run-timeout'] === undefined ? 600_000 : parseDuration(values['run-timeout']);
  if (runTimeoutMs === null) return bad(`--run-timeout must be a positive duration (600, 90s, 10m, 1h), got '${values['run-timeout']}'`);
  const drainTimeoutMs = values['drain-timeout'] === undefined ? 10_000 : parseDuration(values['drain-timeout']);
  if (drainTimeoutMs === null) return bad(`--drain-timeout must be a positive duration (500ms, 10s, 1m), got '${values['drain-timeout']}'`);
  const maxParams = values['max-params'] === undefined ? undefined : Number(values['max-params']);
  if (maxParams !== undefined && !(/^\d+$/.test(values['max-params']!) && Number.isSafeInteger(maxParams) && maxParams >= 1)) return bad(`--max-params must be a positive integer, got '${values['max-params']}'`);
  if (values.tls !== undefined && values.insecure) return bad('--tls and --insecure contradict each other; give one');
  if (values.insecure && isLoopback(host)) return bad(`--insecure only matters off loopback, and --host ${host} is loopback`);
  let node;
  try {
    node = await startNode({ host, port, tls: values.tls, tokenFile: values['token-file'], insecure: values.insecure, maxRuns, runTimeoutMs, maxParams, healthPort });
  } catch (e) {
    const m = (e as Error).message;
    console.error(m.startsWith('chainrule node') ? m : `chainrule node: ${m}`);
    return isUserError(e) && (e as { code?: string }).code !== 'LISTEN_FAILED' ? 2 : 1;
  }
  // The handlers come before the line that says the node is up: a signal sent as soon as it
  // appears must stop the node cleanly, not kill it.
  // Only the first signal drains: the handlers go, so a second one stops the process at once.
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(signal);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  console.log(`chainrule node listening on ${node.address}${node.healthPort === undefined ? '' : `, health checks in plaintext on port ${node.healthPort}`}`);
  const signal = await stopped;
  const outcome = await node.drain(signal, drainTimeoutMs);
  return outcome.clean ? 0 : 1;
}
