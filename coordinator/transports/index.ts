/** Transports by name: a new one is one file plus one line here. */
import { LocalTransport } from './local.js';
import { ThreadsTransport } from './threads.js';
import { GrpcTransport } from './grpc.js';
import { MixedTransport } from './mixed.js';
import { TransportError, type Transport } from './transport.js';
import { lookup } from '../../src/errors.js';

export * from './transport.js';
export { LocalTransport, ThreadsTransport, GrpcTransport, MixedTransport };
export type { MixedTransportOptions } from './mixed.js';

export interface TransportOptions {
  nodes?: string[];
  /** gRPC: mutual TLS with this `chainrule certs` directory. */
  tls?: string;
  /** gRPC: the bearer token's file. */
  tokenFile?: string;
}

export const transports: Readonly<Record<string, (o: TransportOptions) => Transport>> = {
  local: () => new LocalTransport(),
  threads: () => new ThreadsTransport(),
  grpc: (o) => {
    if (!o.nodes || o.nodes.length === 0) throw new TransportError('NO_NODES', 'placement grpc needs --nodes host:port[,host:port...]');
    return new GrpcTransport(o.nodes, { tls: o.tls, tokenFile: o.tokenFile });
  },
};

export function createTransport(name: string, o: TransportOptions = {}): Transport {
  const make = lookup(transports, name);
  if (!make) throw new TransportError('UNKNOWN_PLACEMENT', `unknown placement '${name}'; choose one of ${Object.keys(transports).join(', ')}`);
  return make(o);
}
