/**
 * A node's door: who is calling (the peer as gRPC names it, with its certificate's CN), whether
 * its bearer token is one the node accepts, whether the run it addresses is its own, and a log
 * line for every new connection, every refusal and every failed TLS handshake.
 *
 * @example
 * const guard = new NodeGuard(tokens, log);
 * const who = guard.admit(call, 'Call');          // a Caller, or a Refusal to answer with
 */
import type { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { NodeLog } from './log.js';
import { shortRun, type Run } from './runs.js';
import { bearerOf, describePeer, sameToken, tokenId, type TokenId, type TokenSet } from './tls.js';

export interface Caller {
  peer: string;
  /** The accepted token's id (null when this node checks no tokens). */
  token: TokenId | null;
  /** The token as presented (passed on to neighbours), or null. */
  bearer: string | null;
}

export interface Refusal { code: grpc.status; details: string }

export const isRefusal = (x: Caller | Refusal): x is Refusal => 'code' in x;

type GrpcCall = { metadata: grpc.Metadata; getPeer(): string; getAuthContext?(): unknown };

const SEEN_CAP = 4096;

export class NodeGuard {
  private seen = new Set<string>();

  /**
   * `openRun(id)`: whether an open run holds this token id. Such a token is still accepted
   * when the file no longer lists it: a run keeps the token it was opened with.
   */
  constructor(private readonly tokens: TokenSet | null, private readonly log: NodeLog, private readonly where: () => string, private readonly openRun: (id: TokenId) => boolean = () => false) {}

  get checksTokens(): boolean { return this.tokens !== null; }

  /** Checks a call's (or a stream's) bearer token; logs the first call of every connection. */
  admit(call: GrpcCall, method: string): Caller | Refusal {
    const peer = describePeer(call as Parameters<typeof describePeer>[0]);
    if (!this.seen.has(peer)) {
      if (this.seen.size >= SEEN_CAP) this.seen.clear();
      this.seen.add(peer);
      this.log.line('connection', `from ${peer} (first call: ${method})`);
    }
    const b = bearerOf(call.metadata);
    const bearer = 'token' in b ? b.token : null;
    if (!this.tokens) return { peer, token: null, bearer };
    if (!('token' in b)) return this.refuse(peer, method, grpc.status.UNAUTHENTICATED, `${b.missing}; this node checks tokens: pass --token-file FILE with a token from its file`);
    const id = this.tokens.match(b.token) ?? this.held(b.token);
    if (!id) return this.refuse(peer, method, grpc.status.UNAUTHENTICATED, 'wrong bearer token: it is not in this node\'s --token-file');
    return { peer, token: id, bearer };
  }

  private held(token: string): TokenId | null {
    const id = tokenId(token);
    return this.openRun(id) ? id : null;
  }

  /** A run answers only to the token that opened it. */
  owns(run: Run, caller: Caller, method: string): Refusal | null {
    if (run.token === null) return null;
    if (caller.token !== null && sameToken(run.token, caller.token)) return null;
    return this.refuse(caller.peer, method, grpc.status.PERMISSION_DENIED, `run ${shortRun(run.id)} was opened with another token`);
  }

  refuse(peer: string, method: string, code: grpc.status, why: string): Refusal {
    this.log.line('refused', `${peer}: ${method}: ${why}`);
    return { code, details: `node ${this.where()} refused the call: ${why}` };
  }

  /**
   * Logs every failed TLS handshake with the peer's address and the reason. grpc-js keeps its
   * HTTP/2 servers private and reports nothing of a refused handshake, so this reaches into
   * them; returns false (and the node logs that it cannot) if their shape has changed.
   */
  watchHandshakes(server: grpc.Server): boolean {
    const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
    if (!(servers instanceof Map)) return false;
    // A refused socket may have lost its address by the time the error is reported: note it on arrival.
    const arrivals = new WeakMap<object, string>();
    for (const s of servers.keys() as IterableIterator<EventEmitter>) {
      s.prependListener('connection', (raw: { remoteAddress?: string; remotePort?: number }) => arrivals.set(raw, socketPeer(raw)));
      s.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TlsSocketLike) => {
        const peer = (socket._parent && arrivals.get(socket._parent)) ?? socketPeer(socket);
        this.log.line('refused', `TLS handshake from ${peer} failed: ${explainRefusedHandshake(err, socket)}`);
      });
    }
    return true;
  }
}

interface TlsSocketLike { remoteAddress?: string; remotePort?: number; authorizationError?: string | null; _parent?: { remoteAddress?: string; remotePort?: number } }

/** As gRPC's getPeer() writes it: 127.0.0.1:53164, [::1]:53164. */
function socketPeer(s: TlsSocketLike): string {
  const addr = s.remoteAddress ?? s._parent?.remoteAddress;
  const port = s.remotePort ?? s._parent?.remotePort;
  if (!addr) return 'an unknown peer';
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Why this node's TLS server refused a client, in words. */
export function explainRefusedHandshake(err: NodeJS.ErrnoException, s: TlsSocketLike): string {
  if (s.authorizationError) return `its client certificate is not valid for this node (${s.authorizationError}: not issued by this node's CA?)`;
  const code = err.code ?? '';
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_HTTP_REQUEST' || /wrong version number|http request/i.test(err.message)) return 'not TLS (a plaintext client: it needs --tls DIR)';
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'it presented no client certificate';
  if (code === 'ECONNRESET') return 'the client hung up during the handshake (does it trust this node\'s CA? a certificate from another `chainrule certs` run?)';
  return `${code || 'TLS error'}: ${err.message.split('\n')[0]}`;
}
