/**
 * Who may talk to a node: the TLS files that `chainrule certs` writes (one CA, a certificate
 * for the nodes, one for the coordinator), the bearer-token file, and the checks both sides
 * make with them. Nodes serve mutual TLS (a client without a certificate from the same CA is
 * refused at the handshake) and check a bearer token on every call and stream; the
 * coordinator, and nodes when they call their neighbours, present their certificate and the
 * run's token.
 *
 * @example
 * const tls = loadTls('certs', 'node');            // certs/ca.pem, certs/node.pem, certs/node-key.pem
 * const creds = serverCredentials(tls);
 * const tokens = new TokenSet('certs/token');       // tokens that may open runs, one a line
 */
import { X509Certificate, createHash, createPrivateKey, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { ChainruleError } from '../src/errors.js';

/** A user error in the TLS files, the token or the security options. */
export class SecurityError extends ChainruleError {
  constructor(code: string, message: string, hint?: string) {
    super(code, message, { hint });
  }
}

export type TlsRole = 'node' | 'coordinator';

/** The files of a TLS directory, by role: `--tls DIR` on either side finds its own. */
export const TLS_FILES = {
  ca: 'ca.pem',
  caKey: 'ca-key.pem',
  node: { cert: 'node.pem', key: 'node-key.pem' },
  coordinator: { cert: 'coordinator.pem', key: 'coordinator-key.pem' },
  token: 'token',
} as const;

export interface TlsMaterial {
  dir: string;
  role: TlsRole;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** The certificate's subject CN, for log lines. */
  name: string;
}

const CERTS_HINT = (dir: string) => `make them with \`chainrule certs ${dir} --hosts HOST1,HOST2,...\` and copy the directory (without ca-key.pem) to every host`;

function readPem(dir: string, file: string, what: string): Buffer {
  const path = join(dir, file);
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new SecurityError('TLS_FILES', `--tls ${dir}: ${what} ${path} does not exist`, CERTS_HINT(dir));
    throw new SecurityError('TLS_FILES', `--tls ${dir}: cannot read ${what} ${path} (${code ?? (e as Error).message})`);
  }
}

const cnOf = (subject: string) => /(?:^|\n)CN=([^\n]*)/.exec(subject)?.[1] ?? subject.replace(/\n/g, ', ');

/**
 * Reads and checks this side's files in `dir`: the CA, and the role's certificate and key.
 * The certificate must be issued by that CA, be valid now, and match the key.
 * @throws SecurityError naming the file and what is wrong with it.
 */
export function loadTls(dir: string, role: TlsRole): TlsMaterial {
  if (typeof dir !== 'string' || dir.trim() === '') throw new SecurityError('BAD_OPTION', `the TLS directory must be a non-empty path, got ${JSON.stringify(dir)}`);
  const files = TLS_FILES[role];
  const ca = readPem(dir, TLS_FILES.ca, 'the CA certificate');
  const cert = readPem(dir, files.cert, `the ${role}'s certificate`);
  const key = readPem(dir, files.key, `the ${role}'s private key`);
  const parse = (pem: Buffer, file: string) => {
    try {
      return new X509Certificate(pem);
    } catch (e) {
      throw new SecurityError('TLS_FILES', `--tls ${dir}: ${join(dir, file)} is not a PEM certificate (${(e as Error).message})`, CERTS_HINT(dir));
    }
  };
  const caCert = parse(ca, TLS_FILES.ca);
  const own = parse(cert, files.cert);
  if (!caCert.ca) throw new SecurityError('TLS_FILES', `--tls ${dir}: ${join(dir, TLS_FILES.ca)} is not a CA certificate`, CERTS_HINT(dir));
  if (!own.verify(caCert.publicKey)) {
    throw new SecurityError('TLS_FILES', `--tls ${dir}: ${join(dir, files.cert)} was not issued by the CA in ${join(dir, TLS_FILES.ca)}`, 'take every file from the same `chainrule certs` directory');
  }
  const now = Date.now();
  for (const [c, file] of [[caCert, TLS_FILES.ca], [own, files.cert]] as const) {
    if (Date.parse(c.validTo) < now) throw new SecurityError('TLS_FILES', `--tls ${dir}: ${join(dir, file)} expired on ${new Date(c.validTo).toISOString()}`, CERTS_HINT(dir));
    if (Date.parse(c.validFrom) > now) throw new SecurityError('TLS_FILES', `--tls ${dir}: ${join(dir, file)} is not valid before ${new Date(c.validFrom).toISOString()} (is this host's clock right?)`);
  }
  let matches = false;
  try {
    matches = own.checkPrivateKey(createPrivateKey(key));
  } catch (e) {
    throw new SecurityError('TLS_FILES', `--tls ${dir}: ${join(dir, files.key)} is not a PEM private key (${(e as Error).message})`, CERTS_HINT(dir));
  }
  if (!matches) throw new SecurityError('TLS_FILES', `--tls ${dir}: ${join(dir, files.key)} is not the key of ${join(dir, files.cert)}`, CERTS_HINT(dir));
  return { dir, role, ca, cert, key, name: cnOf(own.subject) };
}

/** A node's server credentials: mutual TLS, a client without a valid certificate is refused at the handshake. */
export function serverCredentials(t: TlsMaterial): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(t.ca, [{ cert_chain: t.cert, private_key: t.key }], true);
}

/** Client credentials: trust only the run's CA, present this side's certificate. */
export function clientCredentials(t: TlsMaterial | null): grpc.ChannelCredentials {
  return t ? grpc.credentials.createSsl(t.ca, t.key, t.cert) : grpc.credentials.createInsecure();
}

// ---------------------------------------------------------------------------------------
// Bearer tokens

const TOKEN = /^[\x21-\x7e]{16,512}$/;

/** The tokens of a token file: one a line, blank lines and `#` comments ignored. */
export function readTokens(path: string, flag = '--token-file'): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SecurityError('TOKEN_FILE', `${flag} ${path}: ${code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? (e as Error).message})`}`, '`chainrule certs DIR` writes DIR/token; or `openssl rand -hex 32 > FILE`');
  }
  const tokens = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (tokens.length === 0) throw new SecurityError('TOKEN_FILE', `${flag} ${path} holds no token`, 'put one token on a line, e.g. `openssl rand -hex 32 > FILE`');
  for (const [i, t] of tokens.entries()) {
    if (!TOKEN.test(t)) {
      throw new SecurityError('TOKEN_FILE', `${flag} ${path}: token ${i + 1} must be 16 to 512 printable characters without spaces, got ${t.length} characters`, 'e.g. `openssl rand -hex 32 > FILE`');
    }
  }
  return tokens;
}

/** The one token a coordinator sends. */
export function readToken(path: string, flag = '--token-file'): string {
  const tokens = readTokens(path, flag);
  if (tokens.length !== 1) throw new SecurityError('TOKEN_FILE', `${flag} ${path} holds ${tokens.length} tokens; a coordinator sends one`, 'keep one line in the coordinator\'s token file');
  return tokens[0]!;
}

/** A token's identity as kept by a node: its SHA-256 (never the token itself, never compared by `===`). */
export type TokenId = Buffer;

export const tokenId = (token: string): TokenId => createHash('sha256').update(token, 'utf8').digest();

/** Constant-time equality of two token ids (both 32 bytes: SHA-256 digests). */
export const sameToken = (a: TokenId, b: TokenId): boolean => a.length === b.length && timingSafeEqual(a, b);

/**
 * The tokens a node accepts for new runs. The file is read again when it changes (checked
 * when a token is not found), so a fresh token per run needs no restart; a run keeps the token
 * it was opened with until it ends.
 */
export class TokenSet {
  private ids: TokenId[];
  private stamp: string;

  constructor(readonly path: string) {
    this.ids = readTokens(path).map(tokenId);
    this.stamp = TokenSet.stampOf(path);
  }

  private static stampOf(path: string): string {
    const st = statSync(path);
    return `${st.mtimeMs}/${st.size}/${st.ino}`;
  }

  /** The matching token's id, or null. Compares against every entry (no early exit). */
  match(token: string): TokenId | null {
    const id = tokenId(token);
    const found = this.find(id);
    if (found) return found;
    if (this.reload()) return this.find(id);
    return null;
  }

  private find(id: TokenId): TokenId | null {
    let hit: TokenId | null = null;
    for (const t of this.ids) if (sameToken(t, id)) hit = t;
    return hit;
  }

  private reload(): boolean {
    try {
      const m = TokenSet.stampOf(this.path);
      if (m === this.stamp) return false;
      this.ids = readTokens(this.path).map(tokenId);
      this.stamp = m;
      return true;
    } catch {
      return false; // a file being rewritten: keep the tokens we have
    }
  }
}

/** The bearer token of a call's metadata: exactly one `authorization: Bearer X`, else why not. */
export function bearerOf(md: grpc.Metadata): { token: string } | { missing: string } {
  const values = md.get('authorization');
  if (values.length === 0) return { missing: 'no bearer token (metadata authorization: Bearer ...)' };
  if (values.length > 1) return { missing: `${values.length} authorization headers, expected one` };
  const v = values[0];
  const m = typeof v === 'string' ? /^Bearer ([\x21-\x7e]+)$/.exec(v) : null;
  if (!m) return { missing: 'a malformed authorization header (expected "Bearer TOKEN")' };
  return { token: m[1]! };
}

/** Call metadata that carries the token, or empty metadata without one. */
export function tokenMetadata(token: string | null): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== null) md.set('authorization', `Bearer ${token}`);
  return md;
}

/** The secrets among these files that other users may read (group or world permissions). */
export function readableByOthers(paths: string[]): string[] {
  return paths.filter((p) => {
    try { return (statSync(p).mode & 0o077) !== 0; } catch { return false; }
  });
}

// ---------------------------------------------------------------------------------------
// Listening addresses

/** True for addresses only this host can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  return mapped !== null && mapped[1]!.startsWith('127.');
}

// ---------------------------------------------------------------------------------------
// Why a TLS connection failed

/**
 * A TLS handshake of our own with a node, to name why gRPC could not connect (grpc-js reports
 * every TLS failure as UNAVAILABLE, without the cause). `tls` null: the caller speaks
 * plaintext, so the question is whether the node wants TLS.
 * Resolves with the cause, or null when the handshake succeeds (the failure is elsewhere).
 */
export function diagnoseTls(address: string, tls: TlsMaterial | null, timeoutMs = 3_000): Promise<string | null> {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!m) return Promise.resolve(null);
  const [host, port] = [m[1]!, Number(m[2])];
  return new Promise((done) => {
    let settled = false;
    const finish = (why: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      done(why);
    };
    const socket = tlsConnect({
      host, port, ALPNProtocols: ['h2'],
      ...(isIP(host) ? {} : { servername: host }),
      ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: true } : { rejectUnauthorized: false }),
    });
    const timer = setTimeout(() => finish(null), timeoutMs);
    let handshook = false;
    const refusedUs = `node ${address} closed the connection after the handshake: it refused our certificate (issued by another CA?)`;
    socket.once('secureConnect', () => {
      if (!tls) { finish(`node ${address} requires TLS, and this side speaks plaintext: pass --tls DIR`); return; }
      handshook = true;
      // TLS 1.3: the server checks our certificate after our side considers the handshake
      // done, and says so with an alert (or by hanging up); wait a moment for it.
      setTimeout(() => finish(null), 300);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      // The connection itself failed (nothing listens, no route): the node is unreachable, not
      // refused by TLS; calling that a TLS failure would also hide a lost node from recovery.
      if (!handshook && NOT_CONNECTED.has(e.code ?? '')) { finish(null); return; }
      if (!tls) {
        // A TLS alert (no client certificate, say) means the node speaks TLS; anything else
        // (refused, reset, not TLS at all) means the problem is not TLS.
        finish(/^ERR_SSL_/.test(e.code ?? '') && /alert/i.test(e.message) ? `node ${address} requires TLS, and this side speaks plaintext: pass --tls DIR` : null);
        return;
      }
      finish(handshook && !/alert/i.test(e.message) ? refusedUs : explainTlsError(e, address));
    });
    socket.once('close', () => finish(handshook ? refusedUs : null));
    // Any byte from the server after the handshake means it accepted us.
    socket.once('data', () => finish(null));
  });
}

const NOT_CONNECTED: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

/** Node's TLS error codes and OpenSSL reasons in words, naming whose certificate is at fault. */
export function explainTlsError(e: NodeJS.ErrnoException & { reason?: string }, address: string): string {
  const code = e.code ?? '';
  const text = e.message;
  if (/wrong version number|packet length too long|unknown protocol|record layer failure/i.test(text)) return `node ${address} does not speak TLS (was it started without --tls?)`;
  if (code === 'SELF_SIGNED_CERT_IN_CHAIN' || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' || code === 'DEPTH_ZERO_SELF_SIGNED_CERT') {
    return `node ${address}'s certificate is not signed by our CA (${code}): the two sides use certificates from different \`chainrule certs\` runs`;
  }
  if (code === 'CERT_HAS_EXPIRED') return `node ${address}'s certificate has expired`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `node ${address}'s certificate does not name this host (${e.reason ?? text}); add it with chainrule certs --hosts`;
  if (/alert (unknown ca|bad certificate|decrypt error)/i.test(text)) return `node ${address} refused our certificate (${text.replace(/^.*alert /, 'alert ').replace(/:.*$/, '')}): it trusts another CA`;
  if (/alert certificate required|alert handshake failure/i.test(text)) return `node ${address} requires a client certificate and we presented none`;
  if (/certificate expired/i.test(text)) return `node ${address} says our certificate has expired`;
  return `${code || 'TLS error'}: ${text}`;
}

/** The peer as gRPC names it, with its certificate's CN when it has one: `10.0.0.2:51234 (CN=chainrule node)`. */
export function describePeer(call: { getPeer(): string; getAuthContext?(): { sslPeerCertificate?: { subject?: Record<string, unknown> } } | undefined }): string {
  let peer = 'unknown peer';
  try { peer = call.getPeer(); } catch { /* a call already gone */ }
  try {
    const cn = call.getAuthContext?.()?.sslPeerCertificate?.subject?.['CN'];
    if (typeof cn === 'string') return `${peer} (CN=${cn})`;
  } catch { /* no auth context on plaintext */ }
  return peer;
}
