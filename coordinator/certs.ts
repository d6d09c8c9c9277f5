/**
 * `chainrule certs DIR --hosts H1,H2,...`: makes, offline, everything a run across hosts
 * needs to refuse strangers: a CA, a certificate for the nodes (every host name and IP as a
 * subject alternative name, usable as server and as client certificate, since nodes call each
 * other), one for the coordinator (a client certificate), and a bearer token.
 *
 * Keys are ECDSA P-256 made by node:crypto; the certificates are issued by the `openssl`
 * command, because node:crypto parses X.509 but cannot create it. openssl ships with every
 * Debian-based image and is already trusted there, where a JavaScript X.509 package would be
 * one more dependency (and its dependencies) on the path that mints our credentials.
 *
 * @example
 * makeCerts('certs', { hosts: ['hostA', 'hostB', '10.0.0.7'] });
 * // certs/ca.pem ca-key.pem node.pem node-key.pem coordinator.pem coordinator-key.pem token
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SecurityError, TLS_FILES, loadTls } from '../node/tls.js';

export interface CertsOptions {
  /** Host names and IP addresses the nodes are reached by (localhost, 127.0.0.1 and ::1 are always added). */
  hosts: string[];
  /** Validity of every certificate in days (default 365). */
  days?: number;
  /** Replace files that already exist (default: refuse). */
  force?: boolean;
  /** The openssl command (default `openssl` on PATH). */
  openssl?: string;
}

export interface CertsResult {
  dir: string;
  /** Every file written, by name. */
  files: string[];
  /** The names the node certificate holds. */
  names: string[];
  /** The CA's subject CN (it names this set of certificates). */
  ca: string;
}

const LOOPBACK = ['localhost', '127.0.0.1', '::1'];
const DNS_NAME = /^(?=.{1,253}$)(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Checks and normalizes `--hosts`: DNS names and IPs, brackets around IPv6 dropped, duplicates removed. */
export function certHosts(hosts: readonly string[]): string[] {
  if (!Array.isArray(hosts) || hosts.length === 0) throw new SecurityError('BAD_OPTION', '--hosts needs at least one host name or IP address (the names the nodes are reached by)');
  const out: string[] = [];
  for (const raw of hosts) {
    const h = typeof raw === 'string' ? raw.trim().replace(/^\[(.*)\]$/, '$1') : '';
    if (!(isIP(h) !== 0 || DNS_NAME.test(h))) {
      throw new SecurityError('BAD_OPTION', `--hosts: ${JSON.stringify(raw)} is neither a host name nor an IP address`, 'give names and IPs without ports, e.g. --hosts hostA,10.0.0.7');
    }
    if (!out.some((o) => o.toLowerCase() === h.toLowerCase())) out.push(h);
  }
  for (const l of LOOPBACK) if (!out.includes(l)) out.push(l);
  return out;
}

const serial = () => {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive
  return `0x${b.toString('hex')}`;
};

function writeSecret(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600); // the mode above is masked by umask; a key must be private whatever it is
}

/**
 * Writes a CA, the nodes' and the coordinator's certificates and a token into `dir`.
 * @throws SecurityError naming the host, file or command at fault.
 */
export function makeCerts(dir: string, opts: CertsOptions): CertsResult {
  if (typeof dir !== 'string' || dir.trim() === '') throw new SecurityError('BAD_OPTION', 'chainrule certs needs a directory: chainrule certs DIR --hosts H1,H2,...');
  const names = certHosts(opts.hosts);
  const days = opts.days ?? 365;
  if (!Number.isSafeInteger(days) || days < 1 || days > 3650) throw new SecurityError('BAD_OPTION', `--days must be an integer in 1..3650, got ${JSON.stringify(opts.days)}`);
  const files = [TLS_FILES.ca, TLS_FILES.caKey, TLS_FILES.node.cert, TLS_FILES.node.key, TLS_FILES.coordinator.cert, TLS_FILES.coordinator.key, TLS_FILES.token];
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const existing = files.filter((f) => existsSync(join(dir, f)));
  if (existing.length > 0 && !opts.force) {
    throw new SecurityError('FILE_EXISTS', `chainrule certs: ${dir} already holds ${existing.join(', ')}`, 'choose another directory, or pass --force to replace them (the old certificates then stop working together with the new ones)');
  }
  const openssl = opts.openssl ?? 'openssl';
  const tmp = mkdtempSync(join(dir, '.certs-'));
  try {
    const run = (args: string[]) => {
      try {
        execFileSync(openssl, args, { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
        if (err.code === 'ENOENT') throw new SecurityError('NO_OPENSSL', `chainrule certs needs the ${openssl} command, and it is not on PATH`, 'install it (apt-get install openssl), or make the files elsewhere and copy them');
        throw new SecurityError('OPENSSL_FAILED', `chainrule certs: ${openssl} ${args[0]} failed: ${(err.stderr?.toString() ?? err.message).trim().split('\n')[0]}`);
      }
    };
    const key = (file: string) => {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      writeSecret(join(tmp, file), privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    };
    const caName = `chainrule CA ${randomBytes(4).toString('hex')}`;
    const alt = names.map((n, i) => (isIP(n) ? `IP.${i + 1} = ${n}` : `DNS.${i + 1} = ${n}`)).join('\n');
    // Our own config: the system's openssl.cnf would add whatever extensions it lists.
    writeFileSync(join(tmp, 'openssl.cnf'), [
      '[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', 'CN = chainrule',
      '[ca_ext]', 'basicConstraints = critical,CA:TRUE,pathlen:0', 'keyUsage = critical,keyCertSign,cRLSign', 'subjectKeyIdentifier = hash',
      '[node_ext]', 'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature', 'extendedKeyUsage = serverAuth,clientAuth',
      'subjectAltName = @alt', 'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid',
      '[coordinator_ext]', 'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature', 'extendedKeyUsage = clientAuth',
      'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid',
      '[alt]', alt, '',
    ].join('\n'));
    key(TLS_FILES.caKey);
    run(['req', '-x509', '-new', '-config', 'openssl.cnf', '-extensions', 'ca_ext', '-key', TLS_FILES.caKey, '-sha256', '-days', String(days),
      '-subj', `/O=chainrule/CN=${caName}`, '-set_serial', serial(), '-out', TLS_FILES.ca]);
    for (const [role, cn] of [['node', 'chainrule node'], ['coordinator', 'chainrule coordinator']] as const) {
      const f = TLS_FILES[role];
      key(f.key);
      run(['req', '-new', '-config', 'openssl.cnf', '-key', f.key, '-subj', `/O=chainrule/CN=${cn}`, '-out', `${role}.csr`]);
      run(['x509', '-req', '-in', `${role}.csr`, '-CA', TLS_FILES.ca, '-CAkey', TLS_FILES.caKey, '-set_serial', serial(), '-days', String(days), '-sha256',
        '-extfile', 'openssl.cnf', '-extensions', `${role}_ext`, '-out', f.cert]);
    }
    writeSecret(join(tmp, TLS_FILES.token), `${randomBytes(32).toString('hex')}\n`);
    // Check what openssl made before anything replaces the old files.
    const nodeCert = new X509Certificate(loadTls(tmp, 'node').cert);
    loadTls(tmp, 'coordinator');
    for (const n of names) {
      if (!(isIP(n) ? nodeCert.checkIP(n) : nodeCert.checkHost(n))) throw new SecurityError('OPENSSL_FAILED', `chainrule certs: the node certificate ${openssl} made does not name ${n}`);
    }
    for (const f of files) renameSync(join(tmp, f), join(dir, f));
    return { dir, files, names, ca: caName };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const usage = `Usage: chainrule certs DIR --hosts H1,H2,... [--days N] [--force]
  Makes, offline, a CA and certificates for the coordinator and the nodes, and a token, in DIR.
  --hosts H1,H2,...  the host names and IPs the nodes are reached by (localhost, 127.0.0.1, ::1 are added)
  --days N           validity of every certificate (default 365)
  --force            replace the files if DIR already holds them`;

/** `chainrule certs`; exit 0 done (or --help), 2 a bad command line or a file in the way. */
export function certsMain(argv: string[], out: (s: string) => void = console.log): number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, strict: true, allowPositionals: true, options: { hosts: { type: 'string' }, days: { type: 'string' }, force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    throw new SecurityError('BAD_OPTION', `chainrule certs: ${(e as Error).message}`, usage);
  }
  const { values, positionals } = parsed;
  if (values.help) { out(usage); return 0; }
  if (positionals.length !== 1) throw new SecurityError('BAD_OPTION', `chainrule certs takes one directory, got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`, usage);
  if (values.hosts === undefined) throw new SecurityError('BAD_OPTION', 'chainrule certs: --hosts is required (the host names and IPs the nodes are reached by)', usage);
  if (values.days !== undefined && !/^\d+$/.test(values.days)) throw new SecurityError('BAD_OPTION', `--days must be an integer in 1..3650, got '${values.days}'`);
  const dir = positionals[0]!;
  const r = makeCerts(dir, { hosts: values.hosts.split(',').map((s) => s.trim()).filter(Boolean), days: values.days === undefined ? undefined : Number(values.days), force: values.force });
  const p = (f: string) => join(dir, f);
  out([
    `chainrule certs: wrote ${dir} (${r.ca}); the node certificate names ${r.names.join(', ')}`,
    `  on every node host:      ${[TLS_FILES.ca, TLS_FILES.node.cert, TLS_FILES.node.key, TLS_FILES.token].join(' ')}`,
    `    chainrule node --host 0.0.0.0 --port 7001 --tls ${dir} --token-file ${p(TLS_FILES.token)}`,
    `  on the coordinator host: ${[TLS_FILES.ca, TLS_FILES.coordinator.cert, TLS_FILES.coordinator.key, TLS_FILES.token].join(' ')}`,
    `    chainrule train --placement grpc --nodes H1:7001,H2:7001 --tls ${dir} --token-file ${p(TLS_FILES.token)} ...`,
    `  ${p(TLS_FILES.caKey)} signs new certificates: keep it off the nodes`,
  ].join('\n'));
  return 0;
}
