/**
 * deploy/: the Kubernetes manifests, checked offline against the Kubernetes schemas
 * (kubernetes-models' validators, and its TypeScript types for unknown fields) and against
 * each other; the Secret that deploy/secret.mjs makes; the Dockerfile against the package.
 * Then the containers' exact command lines run on loopback, with the Secret's files laid out
 * as the volumes mount them: two nodes from the StatefulSet's arguments, probed the way the
 * kubelet probes them (a plaintext gRPC health check on the probe's port), the Job's
 * init container, and the Job's training run over those nodes.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { freePort, runTsx } from './helpers.js';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { checkServerIdentity } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import ts from 'typescript';
import { parseAllDocuments, type Document } from 'yaml';
import { Namespace, Secret, Service } from 'kubernetes-models/v1';
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IStatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import type { ISecret } from 'kubernetes-models/v1/Secret';
import { makeCerts } from '../coordinator/certs.js';
import { TLS_FILES, loadTls, readToken } from '../node/tls.js';
import { addonRelativePath } from '../src/tensor/native/index.js';

const repo = join(import.meta.dirname, '..');
const k8sDir = join(repo, 'deploy', 'k8s');
const bin = join(repo, 'coordinator', 'bin.ts');
const work = mkdtempSync(join(tmpdir(), 'chainrule-deploy-'));

interface K8sObject { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown }
/** Each kind the manifests may hold: its model (the schema's validator) and its TypeScript type (for unknown fields). */
const kinds: Record<string, { model: new (o: never) => { validate(): void }; module: string; type: string }> = {
  'v1/Namespace': { model: Namespace as never, module: 'kubernetes-models/v1/Namespace', type: 'INamespace' },
  'v1/Service': { model: Service as never, module: 'kubernetes-models/v1/Service', type: 'IService' },
  'v1/Secret': { model: Secret as never, module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'apps/v1/StatefulSet': { model: StatefulSet as never, module: 'kubernetes-models/apps/v1/StatefulSet', type: 'IStatefulSet' },
  'batch/v1/Job': { model: Job as never, module: 'kubernetes-models/batch/v1/Job', type: 'IJob' },
};

/** Every object of deploy/k8s, with the file it came from; YAML 1.1 (Kubernetes' reading) and 1.2 must agree. */
function manifests(): { file: string; object: K8sObject }[] {
  const out: { file: string; object: K8sObject }[] = [];
  for (const file of readdirSync(k8sDir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const text = readFileSync(join(k8sDir, file), 'utf8');
    const [a, b] = (['1.1', '1.2'] as const).map((version) => {
      const docs: Document[] = [...parseAllDocuments(text, { version, prettyErrors: true })];
      for (const d of docs) expect(d.errors.map((e) => e.message), `${file} (YAML ${version})`).toEqual([]);
      return docs.map((d) => d.toJS() as unknown);
    }) as [unknown[], unknown[]];
    // A scalar that YAML 1.1 and 1.2 read differently (0440, yes, on) means two things at once.
    expect(a, `${file} reads differently as YAML 1.1 and 1.2`).toEqual(b);
    for (const object of a) if (object !== null && object !== undefined) out.push({ file, object: object as K8sObject });
  }
  return out;
}

/** The value after `flag` in a container's argument list (`--port 7001`), or undefined. */
function flag(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}
const withFlag = (args: readonly string[], name: string, value: string) => {
  const i = args.indexOf(name);
  expect(i, `${name} in ${args.join(' ')}`).toBeGreaterThanOrEqual(0);
  return [...args.slice(0, i + 1), value, ...args.slice(i + 2)];
};
const flagsOf = (args: readonly string[]) => args.filter((a) => a.startsWith('--'));

/** The same, without blocking this process (whose node children must be read meanwhile). */
const chainruleAsync = (args: string[]) => runTsx(bin, args, { cwd: repo });

function chainrule(args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { encoding: 'utf8', timeout: timeoutMs, cwd: repo });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const all = manifests();
const one = <T>(kind: string): T & K8sObject => {
  const found = all.filter((m) => m.object.kind === kind);
  expect(found.map((m) => `${m.file} ${m.object.metadata.name}`), kind).toHaveLength(1);
  return found[0]!.object as T & K8sObject;
};
const sts = one<IStatefulSet>('StatefulSet');
const svc = one<IService>('Service');
const job = one<IJob>('Job');
const nodePod = sts.spec!.template.spec!;
const jobPod = job.spec!.template.spec!;
const nodeContainer = nodePod.containers[0]!;
const coordinator = jobPod.containers[0]!;
const namespace = one<{ metadata: { name: string } }>('Namespace').metadata.name;

/** The README's `chainrule certs` command for the cluster: the hosts the node certificate names. */
function readmeCertHosts(): string[] {
  const readme = readFileSync(join(repo, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Running across hosts'));
  const m = /npx chainrule certs certs --hosts '([^']+)'/.exec(section);
  expect(m, 'the README\'s "Running across hosts" gives the chainrule certs command').not.toBeNull();
  return m![1]!.split(',');
}

describe('the manifests are valid Kubernetes objects', () => {
  it('every object is of a known kind and passes its schema', () => {
    expect(all.length).toBeGreaterThanOrEqual(4);
    for (const { file, object } of all) {
      const k = kinds[`${object.apiVersion}/${object.kind}`];
      expect(k, `${file}: ${object.apiVersion} ${object.kind}`).toBeDefined();
      expect(() => new k!.model(object as never).validate(), `${file} ${object.kind}/${object.metadata.name}`).not.toThrow();
      expect(object.metadata.namespace ?? (object.kind === 'Namespace' ? undefined : 'none'), `${file} ${object.kind}/${object.metadata.name} is in the chainrule namespace`)
        .toBe(object.kind === 'Namespace' ? undefined : namespace);
    }
  });

  it('holds no field the Kubernetes types do not know (the API server would refuse it)', () => {
    // The schemas accept unknown fields; the types' excess-property check does not.
    const file = join(repo, 'test', '__manifests_typecheck.ts');
    const parts = all.map(({ object }, i) => {
      const k = kinds[`${object.apiVersion}/${object.kind}`]!;
      return { i, head: `import type { ${k.type} as T${i} } from '${k.module}';`, body: `export const o${i}: T${i} = ${JSON.stringify(object)};\n`, name: `${all[i]!.file} ${object.kind}/${object.metadata.name}` };
    });
    const heads = parts.map((p) => p.head).join('\n') + '\n';
    const starts: number[] = [];
    let text = heads;
    for (const p of parts) { starts.push(text.length); text += p.body; }
    const options: ts.CompilerOptions = { strict: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, skipLibCheck: true, types: [] };
    const host = ts.createCompilerHost(options);
    const read = host.getSourceFile.bind(host);
    const exists = host.fileExists.bind(host);
    host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, text, lang) : read(f, lang, ...rest));
    host.fileExists = (f) => f === file || exists(f);
    const diagnostics = ts.getPreEmitDiagnostics(ts.createProgram([file], options, host)).map((d) => {
      let at = -1;
      for (let i = 0; i < starts.length; i++) if (starts[i]! <= (d.start ?? 0)) at = i;
      return `${at >= 0 ? parts[at]!.name : 'imports'}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
    });
    expect(diagnostics).toEqual([]);
  });
});

describe('the manifests agree with each other and with the CLI', () => {
  it('the headless Service selects exactly the StatefulSet\'s pods, which the StatefulSet names after it', () => {
    expect(svc.spec!.clusterIP).toBe('None');
    expect(sts.spec!.serviceName).toBe(svc.metadata!.name);
    const podLabels = sts.spec!.template.metadata!.labels!;
    for (const [k, v] of Object.entries(svc.spec!.selector!)) expect(podLabels[k], `Service selector ${k}`).toBe(v);
    for (const [k, v] of Object.entries(sts.spec!.selector.matchLabels!)) expect(podLabels[k], `StatefulSet selector ${k}`).toBe(v);
    // The Job's pods must not be selected: the Service's DNS names are the nodes'.
    const jobLabels = job.spec!.template.metadata!.labels!;
    expect(Object.entries(svc.spec!.selector!).every(([k, v]) => jobLabels[k] === v)).toBe(false);
    const ports = new Map((nodeContainer.ports ?? []).map((p) => [p.name, p.containerPort]));
    for (const p of svc.spec!.ports!) expect(ports.get(p.targetPort as string) ?? p.targetPort, `Service port ${p.name}`).toBe(p.port);
  });

  it('the probes ask the plaintext health port, which the node is told to serve, and a container port', () => {
    const args = nodeContainer.args!;
    const healthPort = Number(flag(args, '--health-port'));
    expect(healthPort).toBeGreaterThan(0);
    expect(healthPort).not.toBe(Number(flag(args, '--port')));
    const ports = (nodeContainer.ports ?? []).map((p) => p.containerPort);
    expect(ports).toContain(Number(flag(args, '--port')));
    for (const probe of [nodeContainer.readinessProbe, nodeContainer.livenessProbe]) {
      expect(probe?.grpc, 'a gRPC probe').toBeDefined();
      expect(probe!.grpc!.port).toBe(healthPort);
      expect(ports).toContain(probe!.grpc!.port);
    }
    // TLS and a token on the main port, as the cluster is a network.
    expect(flag(args, '--tls')).toBeDefined();
    expect(flag(args, '--token-file')).toBeDefined();
    expect(args).not.toContain('--insecure');
  });

  it("the Job's --nodes are the StatefulSet's pods by their stable DNS names, on the node's port, and the init container waits for the same names", () => {
    const nodes = flag(coordinator.args!, '--nodes')!.split(',');
    const replicas = sts.spec!.replicas ?? 1;
    const port = Number(flag(nodeContainer.args!, '--port'));
    const ordinals = nodes.map((n) => {
      const m = /^(.+)-(\d+)\.([^.]+)\.([^.]+)\.svc\.cluster\.local:(\d+)$/.exec(n);
      expect(m, `${n} is POD.SERVICE.NAMESPACE.svc.cluster.local:PORT`).not.toBeNull();
      const [, set, ordinal, service, ns, p] = m!;
      expect([set, service, ns, Number(p)], n).toEqual([sts.metadata!.name, svc.metadata!.name, namespace, port]);
      expect(Number(ordinal), `${n}: the StatefulSet has ${replicas} pods`).toBeLessThan(replicas);
      return Number(ordinal);
    });
    // Every pod is used, once.
    expect([...ordinals].sort()).toEqual(Array.from({ length: replicas }, (_, i) => i));
    const wait = jobPod.initContainers![0]!;
    expect(wait.command!.slice(3)).toEqual(nodes.map((n) => n.slice(0, n.lastIndexOf(':'))));
  });

  it('the node certificate that the README makes names every host in --nodes (TLS checks the name dialed)', () => {
    const dir = join(work, 'readme-certs');
    makeCerts(dir, { hosts: readmeCertHosts() });
    const cert = new X509Certificate(loadTls(dir, 'node').cert);
    for (const n of flag(coordinator.args!, '--nodes')!.split(',')) {
      const host = n.slice(0, n.lastIndexOf(':'));
      expect(checkServerIdentity(host, { subject: { CN: 'chainrule node' }, subjectaltname: cert.subjectAltName } as never), host).toBeUndefined();
    }
  });

  it('each pod mounts, from the one Secret, exactly the files its --tls and --token-file read, group-readable only', () => {
    const expected: [IPodSpec, IContainer, 'node' | 'coordinator'][] = [[nodePod, nodeContainer, 'node'], [jobPod, coordinator, 'coordinator']];
    for (const [pod, c, role] of expected) {
      const tlsDir = flag(c.args!, '--tls')!;
      const tokenFile = flag(c.args!, '--token-file')!;
      const mount = c.volumeMounts!.find((m) => m.mountPath === tlsDir)!;
      expect(mount, `${role}: a volume at ${tlsDir}`).toBeDefined();
      expect(mount.readOnly).toBe(true);
      const volume = pod.volumes!.find((v) => v.name === mount.name)!;
      expect(volume.secret?.secretName).toBe('chainrule-certs');
      expect(volume.secret!.defaultMode).toBe(0o440);
      const paths = volume.secret!.items!.map((it) => { expect(it.path, 'each key under its own name').toBe(it.key); return it.path; });
      expect(paths.sort()).toEqual([TLS_FILES.ca, TLS_FILES[role].cert, TLS_FILES[role].key, TLS_FILES.token].sort());
      expect(posix.dirname(tokenFile)).toBe(tlsDir);
      expect(paths).toContain(posix.basename(tokenFile));
      // The pod's group can read them (0440): the fsGroup it runs with.
      expect(pod.securityContext!.fsGroup).toBe(pod.securityContext!.runAsUser);
    }
  });

  it('deploy/secret.mjs makes that Secret from a chainrule certs directory: every key mounted, never the CA key', () => {
    const dir = join(work, 'secret-certs');
    makeCerts(dir, { hosts: readmeCertHosts() });
    const out = execFileSync(process.execPath, [join(repo, 'deploy', 'secret.mjs'), dir], { encoding: 'utf8' });
    const secret = JSON.parse(out) as ISecret & K8sObject;
    expect(() => new Secret(secret).validate()).not.toThrow();
    expect(secret.metadata!.name).toBe('chainrule-certs');
    expect(secret.metadata!.namespace).toBe(namespace);
    const keys = Object.keys(secret.data!).sort();
    expect(keys).not.toContain(TLS_FILES.caKey);
    const mounted = new Set([nodePod, jobPod].flatMap((p) => p.volumes!.flatMap((v) => v.secret?.items?.map((it) => it.key) ?? [])));
    expect(keys).toEqual([...mounted].sort());
    for (const k of keys) expect(Buffer.from(secret.data![k]!, 'base64').equals(readFileSync(join(dir, k))), k).toBe(true);
    const missing = spawnSync(process.execPath, [join(repo, 'deploy', 'secret.mjs'), join(work, 'nowhere')], { encoding: 'utf8' });
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/cannot read .*nowhere\/ca\.pem \(ENOENT\); make the directory with chainrule certs/);
  });

  it('every flag the containers pass exists in the CLI (chainrule node --help, chainrule train --help)', () => {
    const nodeHelp = chainrule(['node', '--help']);
    const trainHelp = chainrule(['train', '--help']);
    expect(nodeHelp.status).toBe(0);
    expect(trainHelp.status).toBe(0);
    expect(nodeContainer.args![0]).toBe('node');
    expect(coordinator.args![0]).toBe('train');
    for (const f of flagsOf(nodeContainer.args!)) expect(nodeHelp.stdout, `chainrule node ${f}`).toMatch(new RegExp(`^\\s+${f}\\b`, 'm'));
    for (const f of flagsOf(coordinator.args!)) expect(trainHelp.stdout, `chainrule train ${f}`).toMatch(new RegExp(`^\\s+${f}\\b`, 'm'));
  });

  it('containers run as the image\'s non-root user, read-only, with requests and limits', () => {
    for (const pod of [nodePod, jobPod]) {
      expect(pod.securityContext!.runAsNonRoot).toBe(true);
      expect(pod.securityContext!.runAsUser).toBe(1000);
      for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
        expect(c.image, c.name).toBe(nodeContainer.image);
        expect(c.securityContext?.allowPrivilegeEscalation, c.name).toBe(false);
        expect(c.securityContext?.readOnlyRootFilesystem, c.name).toBe(true);
        for (const r of ['cpu', 'memory']) {
          expect(c.resources?.requests?.[r], `${c.name} requests ${r}`).toBeDefined();
          expect(c.resources?.limits?.[r], `${c.name} limits ${r}`).toBeDefined();
        }
      }
    }
  });
});

describe('the Dockerfile', () => {
  const text = readFileSync(join(repo, 'deploy', 'Dockerfile'), 'utf8');
  // Instructions, continuation lines joined, comments dropped.
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { bin: Record<string, string> };

  it('builds on node:20-bookworm-slim with npm ci and a compiler, and runs chainrule as a non-root user', () => {
    const from = lines.filter((l) => l.startsWith('FROM '));
    expect(from.length).toBeGreaterThanOrEqual(1);
    for (const f of from) expect(f).toMatch(/^FROM node:20-bookworm-slim( AS \w+)?$/);
    const runs = lines.filter((l) => l.startsWith('RUN '));
    expect(runs.some((r) => /apt-get install .*\bpython3\b/.test(r) && /\bmake\b/.test(r) && /\bg\+\+/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm ci\b/.test(r) && r.includes(`test -f ${addonRelativePath}`))).toBe(true);
    const lastStage = lines.slice(lines.lastIndexOf(from.at(-1)!));
    const user = lastStage.filter((l) => l.startsWith('USER ')).at(-1);
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^USER (root|0)(:|$)/);
    expect(lastStage.find((l) => l.startsWith('ENTRYPOINT '))).toBe('ENTRYPOINT ["chainrule"]');
    // `chainrule` on PATH is the package's bin.
    const link = /ln -s (\S+) \/usr\/local\/bin\/chainrule/.exec(lastStage.join('\n'));
    expect(link?.[1]).toBe(`/app/${pkg.bin['chainrule']!.replace(/^\.\//, '')}`);
  });

  it('copies into the runtime image what chainrule loads, from where the build puts it', () => {
    const copies = lines.filter((l) => l.startsWith('COPY --from=build ')).map((l) => l.split(/\s+/)[2]!.replace(/^\/app\//, ''));
    expect(copies).toEqual(expect.arrayContaining(['package.json', 'node_modules', 'dist', 'proto/chainrule.proto', addonRelativePath]));
    // This checkout was built by the same npm ci: the files are where the image expects them.
    for (const c of ['package.json', 'proto/chainrule.proto', pkg.bin['chainrule']!]) expect(existsSync(join(repo, c)), c).toBe(true);
  });

  it(".dockerignore keeps out host builds and keys, and keeps what npm ci and tsc need", () => {
    const patterns = readFileSync(join(repo, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const toRegex = (p: string) => new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*\//g, '\0').replace(/\*/g, '[^/]*').replace(/\0/g, '(.*/)?')}(/.*)?$`);
    const ignored = (path: string) => patterns.some((p) => toRegex(p).test(path));
    for (const p of ['node_modules/x/index.js', 'dist/coordinator/bin.js', `${addonRelativePath}`, 'certs/node-key.pem', 'some/dir/coordinator-key.pem', 'certs/token', '.git/HEAD']) {
      expect(ignored(p), `${p} is kept out`).toBe(true);
    }
    const tsconfig = JSON.parse(readFileSync(join(repo, 'tsconfig.json'), 'utf8')) as { include: string[] };
    for (const p of ['package.json', 'package-lock.json', 'tsconfig.json', 'scripts/build-native.mjs', 'native/binding.gyp', 'native/sgemm.c', 'proto/chainrule.proto', ...tsconfig.include.map((d) => `${d}/x.ts`)]) {
      expect(ignored(p), `${p} is in the context`).toBe(false);
    }
  });

  const docker = spawnSync('docker', ['info'], { encoding: 'utf8', timeout: 10_000 });
  const why = docker.error ? 'no docker command' : docker.status !== 0 ? `docker has no daemon here (${(docker.stderr || '').trim().split('\n').pop()})` : '';
  it.skipIf(why !== '')(`builds (docker build)${why ? `: skipped, ${why}` : ''}`, () => {
    const r = spawnSync('docker', ['build', '-f', 'deploy/Dockerfile', '-t', 'chainrule:test', '.'], { cwd: repo, encoding: 'utf8', timeout: 900_000 });
    expect(r.status, r.stderr).toBe(0);
    const help = spawnSync('docker', ['run', '--rm', 'chainrule:test', 'node', '--help'], { encoding: 'utf8', timeout: 60_000 });
    expect(help.stdout).toMatch(/--health-port P/);
  }, 900_000);
});

describe("the containers' command lines, run on loopback with the Secret's files as mounted", () => {
  const started: ChildProcessWithoutNullStreams[] = [];
  let secret: ISecret;
  const nodes: { grpcPort: number; healthPort: number; stderr: () => string }[] = [];

  /** Lays out a pod's Secret volumes as the kubelet would (items, mode) and maps each mount path to its folder. */
  function mount(pod: IPodSpec, c: IContainer, name: string): (arg: string) => string {
    const dirs = new Map<string, string>();
    for (const m of c.volumeMounts ?? []) {
      const v = pod.volumes!.find((x) => x.name === m.name)!;
      const dir = join(work, 'mounts', name, m.name);
      mkdirSync(dir, { recursive: true });
      for (const it of v.secret!.items!) {
        const file = join(dir, it.path);
        mkdirSync(dirname(file), { recursive: true });
        writeFileSync(file, Buffer.from(secret.data![it.key]!, 'base64'));
        chmodSync(file, v.secret!.defaultMode!);
      }
      dirs.set(m.mountPath, dir);
    }
    return (arg) => {
      for (const [at, dir] of dirs) if (arg === at || arg.startsWith(`${at}/`)) return dir + arg.slice(at.length);
      return arg;
    };
  }

  function check(port: number, service: string): Promise<string> {
    const Health = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
    const c = new Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      check(req: { service: string }, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { status: string }) => void): void;
    };
    return new Promise<string>((resolve, reject) => c.check({ service }, { deadline: new Date(Date.now() + 3000) }, (e, r) => (e ? reject(e) : resolve(r!.status)))).finally(() => c.close());
  }

  beforeAll(async () => {
    const dir = join(work, 'cluster-certs');
    makeCerts(dir, { hosts: readmeCertHosts() });
    secret = JSON.parse(execFileSync(process.execPath, [join(repo, 'deploy', 'secret.mjs'), dir], { encoding: 'utf8' })) as ISecret;
    // One process per StatefulSet pod, with the container's own arguments: only the listening
    // address (loopback, free ports: this machine is shared) and the mount paths differ.
    for (let i = 0; i < (sts.spec!.replicas ?? 1); i++) {
      const paths = mount(nodePod, nodeContainer, `node-${i}`);
      const [grpcPort, healthPort] = [await freePort(), await freePort()];
      let args = nodeContainer.args!.map(paths);
      args = withFlag(withFlag(withFlag(args, '--host', '127.0.0.1'), '--port', String(grpcPort)), '--health-port', String(healthPort));
      const child = spawn(process.execPath, ['--import', 'tsx', bin, ...args], { stdio: 'pipe', cwd: repo });
      started.push(child);
      let err = '';
      child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
      await new Promise<void>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (b: Buffer) => { out += b.toString(); if (out.includes('chainrule node listening on')) resolve(); });
        child.once('exit', (code) => reject(new Error(`node-${i} exited with ${code}: ${err}`)));
      });
      nodes.push({ grpcPort, healthPort, stderr: () => err });
    }
  });

  afterAll(() => { for (const c of started) if (c.exitCode === null) c.kill('SIGKILL'); });

  it('each node answers its readiness and liveness probes: SERVING, in plaintext, on the probe port', async () => {
    for (const n of nodes) {
      for (const probe of [nodeContainer.readinessProbe!, nodeContainer.livenessProbe!]) {
        expect(probe.grpc!.port).toBe(Number(flag(nodeContainer.args!, '--health-port')));
        expect(await check(n.healthPort, probe.grpc!.service ?? '')).toBe('SERVING');
      }
      expect(n.stderr()).toMatch(/listening on 127\.0\.0\.1:\d+: mutual TLS \(chainrule node, CA from .*\), bearer tokens from .*token, at most 1 run at a time, .*health checks in plaintext on 127\.0\.0\.1:\d+/);
    }
  });

  it("the Job's init container's script runs, and returns once its names resolve", () => {
    const wait = jobPod.initContainers![0]!;
    const [cmd, ...rest] = wait.command!;
    expect(cmd).toBe('node');
    const script = rest.slice(0, 2);
    const ok = spawnSync(process.execPath, [...script, 'localhost'], { encoding: 'utf8', timeout: 30_000 });
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/resolved localhost/);
    // The names themselves are the cluster's: resolving them here is not expected to work.
  });

  it("the Job's training run, with its own arguments, trains over the two nodes through mutual TLS and the token", async () => {
    const paths = mount(jobPod, coordinator, 'coordinator');
    // The cluster's DNS, by hand: node-i.chainrule-nodes... is the i-th pod.
    const local = flag(coordinator.args!, '--nodes')!.split(',').map((n) => `127.0.0.1:${nodes[Number(/-(\d+)\./.exec(n)![1])]!.grpcPort}`).join(',');
    const args = withFlag(coordinator.args!.map(paths), '--nodes', local);
    const r = await chainruleAsync(args);
    expect(r.status, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { epochs: number; stages: number; placement: string; testAccuracy: number };
    expect(summary).toMatchObject({ epochs: Number(flag(coordinator.args!, '--epochs')), stages: Number(flag(coordinator.args!, '--stages')), placement: 'grpc' });
    expect(summary.testAccuracy).toBeGreaterThan(0.5);
    for (const n of nodes) await vi.waitFor(() => expect(n.stderr()).toMatch(/ run run-[0-9a-f]{8}… ended: its coordinator shut it down/));
    // What a pod would read at those paths is what the flags need.
    expect(() => loadTls(paths(flag(coordinator.args!, '--tls')!), 'coordinator')).not.toThrow();
    expect(readToken(paths(flag(coordinator.args!, '--token-file')!))).toMatch(/^[0-9a-f]{64}$/);
  }, 300_000);
});
