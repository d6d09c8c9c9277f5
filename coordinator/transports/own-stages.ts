/**
 * Stages that this process serves over gRPC itself: a mixed placement's in-process and
 * thread stages, and the stages it takes over from a lost node. Where they listen, what
 * address their neighbours are told, and with which credentials.
 *
 * Without `advertise` they listen on 127.0.0.1 and are advertised as such: right while every
 * node is on this host, unreachable from any other (a node there would dial its own loopback).
 * With `advertise: HOST` they listen on every interface and are advertised as HOST:port, which
 * needs `tls` (a directory holding node.pem and node-key.pem besides the coordinator's files,
 * the node certificate naming HOST: `chainrule certs DIR --hosts hostB,...,HOST`), since a
 * stage that anyone can reach must refuse strangers.
 *
 * @example
 * const own = ownStages({ advertise: 'hostA', tls: 'certs', tokenFile: 'certs/token' }, 'options');
 * const { address } = await startOwnNode(own);   // 'hostA:39417', listening on 0.0.0.0:39417
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { startNode, type RunningNode } from '../../node/server.js';
import { isLoopback, loadTls, type TlsMaterial } from '../../node/tls.js';
import { TransportError } from './transport.js';

export interface OwnStagesOptions {
  /** The name or IP by which nodes on other hosts reach this host (no port). */
  advertise?: string;
  /** A `chainrule certs` directory: the coordinator's files to call nodes, the node's to serve. */
  tls?: string;
  /** The bearer token's file: sent with every call, and required by this process's stages. */
  tokenFile?: string;
}

/** Checked options, with the node's TLS material loaded once. */
export interface OwnStages {
  readonly advertise: string | null;
  /** Where the stages listen: 127.0.0.1, or every interface with `advertise`. */
  readonly host: string;
  readonly tls: string | undefined;
  /** The node's files from `tls`, once loaded (at once with `advertise`, else when a stage starts). */
  nodeTls: TlsMaterial | null;
  readonly tokenFile: string | undefined;
}

const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The host of `host:port` or `[v6]:port`, brackets dropped. */
export function hostOf(address: string): string {
  const i = address.lastIndexOf(':');
  return (i > 0 ? address.slice(0, i) : address).replace(/^\[(.*)\]$/, '$1');
}

/**
 * Checks the options where they enter (`where`: `options` for the Coordinator's, `the mixed
 * placement` for a MixedTransport's), before any stage starts. The node's TLS files are read
 * now when `advertise` or `serves` says the stages will run (a coordinator that may never take
 * over a node needs no node.pem).
 * @throws TransportError naming `advertise` (--advertise) or `tls` and what to do.
 */
export function ownStages(o: OwnStagesOptions, where: string, serves = false): OwnStages {
  const { advertise, tls, tokenFile } = o;
  const flag = (k: string) => `${where === 'options' ? `options.${k}` : `${where}'s ${k}`} (--${k === 'tokenFile' ? 'token-file' : k})`;
  if (advertise !== undefined) {
    const h = typeof advertise === 'string' ? advertise.trim().replace(/^\[(.*)\]$/, '$1') : '';
    if (!(isIP(h) !== 0 || HOST_NAME.test(h))) {
      throw new TransportError('BAD_ADVERTISE', `${flag('advertise')} must be a host name or IP address without a port, got ${JSON.stringify(advertise)}`);
    }
    if (tls === undefined) {
      throw new TransportError('NO_TLS', `${flag('advertise')} ${h}: this process's stages would listen on every interface without TLS`,
        `pass ${flag('tls')} DIR made by \`chainrule certs DIR --hosts ...,${h}\` (it needs node.pem and node-key.pem too), and ${flag('tokenFile')}`);
    }
  }
  let nodeTls: TlsMaterial | null = null;
  if (tls !== undefined) {
    if (typeof tls !== 'string') throw new TransportError('BAD_OPTION', `${flag('tls')} must be a \`chainrule certs\` directory here (its node and coordinator files are both used), got ${typeof tls}`);
    if (serves || advertise !== undefined) nodeTls = loadTls(tls, 'node');
    const h = advertise?.trim().replace(/^\[(.*)\]$/, '$1');
    if (h !== undefined && nodeTls) {
      const cert = new X509Certificate(nodeTls.cert);
      if (!(isIP(h) !== 0 ? cert.checkIP(h) : cert.checkHost(h))) {
        throw new TransportError('TLS_FILES', `--tls ${tls}: the node certificate does not name ${h} (${flag('advertise')}), so nodes would refuse this process's stages`,
          `remake the directory with \`chainrule certs ${tls} --hosts ...,${h} --force\` and copy it to every host`);
      }
    }
  }
  const adv = advertise === undefined ? null : advertise.trim().replace(/^\[(.*)\]$/, '$1');
  return { advertise: adv, host: adv === null ? '127.0.0.1' : isIP(adv) === 6 ? '::' : '0.0.0.0', tls, nodeTls, tokenFile };
}

/** The first of `remote` (host:port) on another host, when `own` has no address to give it. */
export function unreachableFrom(own: OwnStages, remote: readonly string[]): string | undefined {
  return own.advertise === null ? remote.find((a) => !isLoopback(hostOf(a))) : undefined;
}

/** The address neighbours are told for a stage server bound at `bound` (host:port). */
export function advertised(own: OwnStages, bound: string): string {
  if (own.advertise === null) return bound;
  const port = bound.slice(bound.lastIndexOf(':') + 1);
  return `${own.advertise.includes(':') ? `[${own.advertise}]` : own.advertise}:${port}`;
}

/** A stage server in this process, listening as `own` says; `address` is the one to advertise. */
export async function startOwnNode(own: OwnStages): Promise<{ node: RunningNode; address: string }> {
  if (own.tls !== undefined) own.nodeTls ??= loadTls(own.tls, 'node');
  const node = await startNode({ host: own.host, port: 0, tls: own.nodeTls ?? undefined, tokenFile: own.tokenFile });
  return { node, address: advertised(own, node.address) };
}
