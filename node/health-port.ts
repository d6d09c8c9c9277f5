/**
 * A second, plaintext port that serves only the standard gRPC health service
 * (grpc.health.v1.Health) of a node: `chainrule node --tls DIR --health-port 7002`.
 *
 * Why a second port: Kubernetes' built-in gRPC probe (and most load balancers' health checks)
 * sends no client certificate and no token, so it cannot pass the mutual TLS of the node's main
 * port. Health status is all this port tells, and nothing here can drive a stage, so it
 * needs no TLS. It shares the main server's HealthImplementation: a status set there (e.g.
 * NOT_SERVING while the node drains) is what this port answers, with nothing to keep in sync.
 *
 * @example
 * const health = new HealthImplementation({ '': 'SERVING' });
 * const port = await startHealthPort(health, { host: '0.0.0.0', port: 7002 });
 * // grpc_health_probe -addr=HOST:7002   → SERVING
 * await port.close();
 */
import * as grpc from '@grpc/grpc-js';
import type { HealthImplementation } from 'grpc-health-check';
import { ChainruleError } from '../src/errors.js';

export interface HealthPort {
  /** host:port as bound (the real port when 0 was asked for). */
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `health` in plaintext on host:port (port 0 picks a free one).
 * @throws ChainruleError LISTEN_FAILED naming the health port when it cannot bind.
 */
export async function startHealthPort(health: HealthImplementation, at: { host: string; port: number }): Promise<HealthPort> {
  const { host, port: asked } = at;
  if (!(Number.isInteger(asked) && asked >= 0 && asked <= 65535)) {
    throw new RangeError(`options.healthPort must be an integer in 0..65535, got ${JSON.stringify(asked)}`);
  }
  const bracketed = host.includes(':') ? `[${host}]` : host;
  // Health checks are tiny: a small receive cap keeps an unauthenticated port cheap to expose.
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 });
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${bracketed}:${asked}`, grpc.ServerCredentials.createInsecure(), (err, p) => {
      if (err) reject(new ChainruleError('LISTEN_FAILED', `chainrule node: cannot listen for health checks on ${bracketed}:${asked} (--health-port): ${err.message}`));
      else resolve(p);
    });
  });
  let closed = false;
  return {
    address: `${bracketed}:${port}`,
    port,
    close: async () => {
      if (closed) return;
      closed = true;
      // A Watch stream never ends by itself: shut down gracefully, then force it.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, 1_000);
        server.tryShutdown(() => { clearTimeout(timer); resolve(); });
      });
    },
  };
}
