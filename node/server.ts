/**
 * A gRPC node: hosts stage actors for remote coordinators (`chainrule node --port P`).
 * `Call` carries a request for one stage; `Deliver` carries an activation or gradient from a
 * neighbouring stage, which may live on another node. A message that fails validation is
 * answered with an error naming the node, the stage and the field; the node keeps serving.
 * With `tls` it serves mutual TLS only; with `tokenFile` every call and stream must carry a
 * bearer token from that file, and a run answers only to the token that opened it (node/guard.ts,
 * node/runs.ts). Off loopback it refuses to start without TLS unless `insecure` is set.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ChainruleError } from '../src/errors.js';
import { requestTypes, type Message, type PeerAddress, type Reply, type Request } from '../src/wire/index.js';
import { DeviceTurns } from './device-turns.js';
import { StageActor, type PeerLink } from './stage.js';
import { decodeEnvelope } from './envelope.js';
import { StreamLink, envelopeOf, clientOptions, serverOptions, stageService, widenServerWindows, widenSessionWindows, type Envelope, type Envelope__Output, type StageServiceClient } from './grpc-common.js';
import { NodeLog, stderrSink, type LogSink } from './log.js';
import { RunTable, releaseActor, shortRun, type Run } from './runs.js';
import { NodeGuard, isRefusal, type Caller, type Refusal } from './guard.js';
import { codeOf, isOurError } from './internal.js';
import { InFlight, drain, drainingError, type DrainOutcome } from './drain.js';
import { startHealthPort } from './health-port.js';
import { DEFAULT_MAX_PARAMS } from './caps.js';
import { heapSetting } from './heap.js';
import { availableParallelism } from 'node:os';
import { SecurityError, TLS_FILES, TokenSet, clientCredentials, isLoopback, loadTls, readableByOthers, serverCredentials, tokenMetadata, type TlsMaterial } from './tls.js';

export interface NodeOptions {
  host?: string;
  port?: number;
  /** Deadline of a Deliver to a neighbour (default 120 s). */
  deliverDeadlineMs?: number;
  /**
   * Receive and send cap of this node's server and of its clients to neighbours, in bytes
   * (default: the codec's MAX_MESSAGE_BYTES plus room for the envelope). A larger message is
   * refused by gRPC before it is decoded (RESOURCE_EXHAUSTED).
   */
  maxMessageBytes?: number;
  /** Serve mutual TLS with the files of this `chainrule certs` directory (or loaded ones). */
  tls?: string | TlsMaterial;
  /** Accept only calls and streams whose bearer token is in this file (one a line). */
  tokenFile?: string;
  /** Listen on a non-loopback host without TLS (refused otherwise). */
  insecure?: boolean;
  /** Runs hosted at once (default unlimited here; `chainrule node` defaults to 1). */
  maxRuns?: number;
  /** Close a run whose coordinator has made no call for this long (default 10 min). */
  runTimeoutMs?: number;
  /**
   * Parameters one configure may make this node allocate, and all its actors hold together
   * (default DEFAULT_MAX_PARAMS, 2^28); a larger model is refused naming its largest layer.
   */
  maxParams?: number;
  /** The most kernel threads one of this node's actors uses, whatever its coordinator asks (default: this host's cores). */
  maxKernelThreads?: number;
  /** Where the node's log lines go (default stderr; false: nowhere). */
  log?: LogSink | false;
  /**
   * Also serve the health service alone, in plaintext, on this port of `host` (0 picks one):
   * for probes that carry no client certificate (Kubernetes). See node/health-port.ts.
   */
  healthPort?: number;
}

function checkOptions(opts: NodeOptions): void {
  const { port, deliverDeadlineMs, maxMessageBytes, maxRuns, runTimeoutMs, maxParams, healthPort } = opts;
  if (opts.maxKernelThreads !== undefined && !(Number.isSafeInteger(opts.maxKernelThreads) && opts.maxKernelThreads >= 1)) {
    throw new RangeError(`options.maxKernelThreads must be a positive integer, got ${JSON.stringify(opts.maxKernelThreads)}`);
  }
  if (maxParams !== undefined && !(Number.isSafeInteger(maxParams) && maxParams >= 1)) {
    throw new RangeError(`options.maxParams must be a positive integer, got ${JSON.stringify(maxParams)}`);
  }
  if (maxRuns !== undefined && !(maxRuns === Infinity || (Number.isSafeInteger(maxRuns) && maxRuns >= 1))) {
    throw new RangeError(`options.maxRuns must be a positive integer, got ${JSON.stringify(maxRuns)}`);
  }
  if (runTimeoutMs !== undefined && !(Number.isFinite(runTimeoutMs) && runTimeoutMs > 0)) {
    throw new RangeError(`options.runTimeoutMs must be a positive number of milliseconds, got ${JSON.stringify(runTimeoutMs)}`);
  }
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new RangeError(`options.port must be an integer in 0..65535, got ${JSON.stringify(port)}`);
  }
  if (healthPort !== undefined && !(Number.isInteger(healthPort) && healthPort >= 0 && healthPort <= 65535)) {
    throw new RangeError(`options.healthPort must be an integer in 0..65535, got ${JSON.stringify(healthPort)}`);
  }
  if (deliverDeadlineMs !== undefined && !(Number.isFinite(deliverDeadlineMs) && deliverDeadlineMs > 0)) {
    throw new RangeError(`options.deliverDeadlineMs must be a positive number, got ${JSON.stringify(deliverDeadlineMs)}`);
  }
  // NOTE: gRPC reads the caps as int32, and -1 means "unlimited": both ruled out here.
  if (maxMessageBytes !== undefined && !(Number.isInteger(maxMessageBytes) && maxMessageBytes >= 1024 && maxMessageBytes <= 0x7fffffff)) {
    throw new RangeError(`options.maxMessageBytes must be an integer in 1024..2147483647, got ${JSON.stringify(maxMessageBytes)}`);
  }
}

const knownRequests: ReadonlySet<string> = new Set(requestTypes);

export interface RunningNode {
  /** host:port as bound (the port is the real one when 0 was asked for). */
  address: string;
  port: number;
  /** The plaintext health port as bound, with `healthPort`. */
  healthPort?: number;
  close(): Promise<void>;
  /**
   * Stops taking work (health NOT_SERVING, new calls refused with NODE_DRAINING), waits for
   * the calls in flight, then closes, forcing it after `timeoutMs` (node/drain.ts).
   */
  drain(reason: string, timeoutMs: number): Promise<DrainOutcome>;
}

export async function startNode(opts: NodeOptions = {}): Promise<RunningNode> {
  checkOptions(opts);
  const caps: grpc.ChannelOptions = opts.maxMessageBytes === undefined ? {} : {
    'grpc.max_receive_message_length': opts.maxMessageBytes,
    'grpc.max_send_message_length': opts.maxMessageBytes,
  };
  const host = opts.host ?? '127.0.0.1';
  const deliverDeadline = opts.deliverDeadlineMs ?? 120_000;
  let address = `${host.includes(':') ? `[${host}]` : host}:${opts.port ?? 0}`;
  // Security first: nothing listens until the files are read and the address is allowed.
  const tls = typeof opts.tls === 'string' ? loadTls(opts.tls, 'node') : opts.tls ?? null;
  if (!tls && !isLoopback(host) && !opts.insecure) {
    throw new SecurityError('INSECURE_LISTEN', `chainrule node: refusing to listen on ${address} without TLS: anyone who can reach it could drive this node, read and change its weights`,
      'pass --tls DIR (make it with `chainrule certs DIR --hosts ...`) and --token-file FILE; or --insecure, on a network you trust entirely');
  }
  const tokens = opts.tokenFile === undefined ? null : new TokenSet(opts.tokenFile);
  const log = new NodeLog(opts.log === false ? null : opts.log ?? stderrSink, () => address);
  const runs = new RunTable({ maxRuns: opts.maxRuns ?? Infinity, timeoutMs: opts.runTimeoutMs ?? 600_000 }, log, () => address);
  const guard = new NodeGuard(tokens, log, () => address, (id) => runs.heldBy(id));
  const clients = new Map<string, StageServiceClient>();
  const key = (stage: number, replica = 0) => `${replica}/${stage}`;
  // Set by a drain: every new call but `shutdown` is refused, naming why.
  let draining: string | null = null;
  const inFlight = new InFlight();

  // One client per neighbouring node, reused; each link opens its stream with its run's token.
  const linkTo = (peer: PeerAddress, run: Run): PeerLink => {
    let client = clients.get(peer.address);
    if (!client) {
      const Service = stageService().StageService;
      client = new Service(peer.address, clientCredentials(tls), { ...clientOptions, ...caps });
      clients.set(peer.address, client);
    }
    return new StreamLink(client, peer.address, deliverDeadline, tokenMetadata(run.bearer));
  };

  const answer = (cb: grpc.sendUnaryData<Envelope>, reply: Reply) => {
    cb(null, envelopeOf(reply));
  };

  const decode = (env: Envelope__Output): Message => decodeEnvelope(env, { actor: `node ${address} stage ${env.stage}` });

  // Errors are answered in our words, naming this node; a JavaScript error's own text (a bug
  // of ours) goes to the log, and the reply says where to find it.
  let incidents = 0;
  const asReply = (e: unknown, where: string): Extract<Reply, { type: 'error' }> => {
    if (isOurError(e)) {
      const m = (e as Error).message;
      return { type: 'error', code: codeOf(e, 'BAD_MESSAGE'), message: m.startsWith('node ') ? m : `node ${address}: ${m}` };
    }
    const id = ++incidents;
    log.line('error', `internal error #${id} in ${where}: ${(e as Error)?.stack ?? String(e)}`);
    return { type: 'error', code: 'INTERNAL', message: `node ${address}: ${where}: internal error #${id} (${(e as Error)?.name ?? 'unknown'}); the node's log has the details` };
  };
  const named = (reply: Reply): Reply => {
    if (reply.type !== 'error' || reply.message.startsWith('node ')) return reply;
    return { ...reply, message: `node ${address}: ${reply.message}` };
  };
  const gone = (run: string) => {
    const why = runs.whyGone(run);
    return why ? `; run ${shortRun(run)} ${why}` : '';
  };

  const handleCall = async (env: Envelope__Output, caller: Caller): Promise<Reply | Refusal> => {
    const msg = decode(env);
    if (!knownRequests.has(msg.type)) {
      return { type: 'error', code: 'BAD_MESSAGE', message: `node ${address} stage ${env.stage}: Call carries requests, not '${msg.type}'` };
    }
    const req = msg as Request;
    if (draining !== null && req.type !== 'shutdown') {
      return { type: 'error', code: 'NODE_DRAINING', message: drainingError(address, draining).message };
    }
    const opens = req.type === 'configure' || req.type === 'connect';
    let run = runs.get(req.run);
    if (run) {
      const refused = guard.owns(run, caller, `Call ${req.type}`);
      if (refused) return refused;
    } else {
      if (!opens) return { type: 'error', code: 'UNKNOWN_STAGE', message: `node ${address}: no stage ${req.stage} of run ${req.run} here; send 'configure' first${gone(req.run)}` };
      run = runs.open(req.run, caller.token, caller.bearer, caller.peer);
    }
    run.lastSeen = Date.now();
    run.inFlight++;
    try {
      const k = key(req.stage, req.replica);
      let actor = run.actors.get(k);
      if (!actor) {
        if (!opens) return { type: 'error', code: 'UNKNOWN_STAGE', message: `node ${address}: no stage ${req.stage} of run ${req.run} here; send 'configure' first` };
        actor = new StageActor(req.stage, req.replica ?? 0);
        actor.flushAfterSend = true;
        actor.onInternalError = (e, where) => asReply(e, where).message;
        const self = actor;
        actor.caps = {
          maxParams: opts.maxParams ?? DEFAULT_MAX_PARAMS,
          maxKernelThreads: opts.maxKernelThreads ?? availableParallelism(),
          held: () => { let n = 0; for (const a of runs.actors()) if (a !== self) n += a.parameterCount; return n; },
        };
        run.actors.set(k, actor);
        run.hosted++;
      }
      if (req.type === 'connect') {
        for (const l of [actor.prev, actor.next, ...actor.peers]) l?.close?.();
        actor.prev = req.prev ? linkTo(req.prev, run) : null;
        actor.next = req.next ? linkTo(req.next, run) : null;
        actor.peers = (req.peers ?? []).map((p) => (p ? linkTo(p, run) : null));
        actor.turns = null;
        if (req.device !== undefined) {
          if (!Number.isSafeInteger(req.device) || req.device < 0) return { type: 'error', code: 'BAD_MESSAGE', message: `node ${address}: connect field 'device' must be a non-negative integer, got ${JSON.stringify(req.device)}` };
          const d = `${req.replica ?? 0}/${req.device}`;
          let turns = run.devices.get(d);
          if (!turns) run.devices.set(d, turns = new DeviceTurns(`device ${req.device}${(req.replica ?? 0) > 0 ? ` of replica ${req.replica}` : ''} (node ${address})`));
          actor.turns = turns;
        }
        return { type: 'ok' };
      }
      if (req.type === 'shutdown') {
        run.actors.delete(k);
        const reply = await actor.handle(req);
        await releaseActor(actor);
        if (run.actors.size === 0) await runs.end(run, 'ended: its coordinator shut it down');
        return named(reply);
      }
      return named(await actor.handle(req));
    } finally {
      run.inFlight--;
      run.lastSeen = Date.now();
    }
  };

  const handleDeliver = async (env: Envelope__Output, caller: Caller): Promise<Reply> => {
    const msg = decode(env);
    if (msg.type !== 'activation' && msg.type !== 'gradient' && msg.type !== 'reduce') {
      return { type: 'error', code: 'BAD_MESSAGE', message: `node ${address}: Deliver carries activations, gradients and gradient shares, not '${msg.type}'` };
    }
    const run = runs.get(msg.run);
    const actor = run?.actors.get(key(msg.stage, msg.replica));
    if (!run || !actor) return { type: 'error', code: 'UNKNOWN_STAGE', message: `node ${address}: no stage ${msg.stage} of run ${msg.run} to deliver a ${msg.type} to${gone(msg.run)}` };
    const refused = guard.owns(run, caller, `DeliverStream ${msg.type}`);
    if (refused) return { type: 'error', code: grpc.status[refused.code], message: refused.details };
    await actor.deliver(msg);
    return { type: 'ok' };
  };

  const handleUnary: grpc.handleUnaryCall<Envelope__Output, Envelope> = (call, cb) => {
    const caller = guard.admit(call, 'Call');
    if (isRefusal(caller)) { cb(caller); return; }
    inFlight.enter();
    handleCall(call.request, caller).finally(() => inFlight.leave()).then(
      (reply) => {
        if ('code' in reply && typeof reply.code === 'number') { cb(reply as Refusal); return; }
        const r = reply as Reply;
        if (r.type === 'error') log.line(r.code === 'NODE_DRAINING' ? 'refused' : 'error', `${caller.peer}: ${r.code}: ${r.message}`);
        answer(cb, r);
      },
      (e: unknown) => {
        const r = asReply(e, `stage ${call.request.stage}`);
        // INTERNAL was logged with its stack, NODE_BUSY as a refusal.
        if (r.type === 'error' && r.code !== 'INTERNAL' && r.code !== 'NODE_BUSY') log.line('error', `${caller.peer}: ${r.code}: ${r.message}`);
        answer(cb, r);
      },
    );
  };

  const server = new grpc.Server({ ...serverOptions, ...caps });
  widenServerWindows(server);
  // Open delivery streams: a drain ends them once the calls in flight are answered.
  const streams = new Set<grpc.ServerDuplexStream<Envelope__Output, Envelope>>();
  // The streamed form of Deliver: every envelope is answered with its id once accepted.
  const deliverStream: grpc.handleBidiStreamingCall<Envelope__Output, Envelope> = (call) => {
    call.on('error', () => { /* the peer went away; its link fails its own pending sends */ });
    const caller = guard.admit(call, 'DeliverStream');
    if (isRefusal(caller)) {
      call.emit('error', { code: caller.code, details: caller.details });
      return;
    }
    streams.add(call);
    call.on('close', () => streams.delete(call));
    call.on('data', (env: Envelope__Output) => {
      inFlight.enter();
      handleDeliver(env, caller).catch((e: unknown): Reply => asReply(e, `a delivery for stage ${env.stage}`))
        .finally(() => inFlight.leave())
        .then((reply) => {
          if (reply.type === 'error') log.line('error', `${caller.peer}: ${reply.code}: ${reply.message}`);
          if (!call.writableEnded) call.write(envelopeOf(reply, env.id));
        })
        .catch(() => { /* the stream is gone: its sender sees that itself */ });
    });
    call.on('end', () => call.end());
  };
  // The standard gRPC health service, so load balancers and orchestrators can probe a node.
  // With --health-port the same object also answers there, in plaintext (node/health-port.ts).
  const health = new HealthImplementation({ '': 'SERVING', 'chainrule.StageService': 'SERVING' });
  health.addToServer(server);
  server.addService(stageService().StageService.service, { Call: handleUnary, DeliverStream: deliverStream });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${opts.port ?? 0}`, tls ? serverCredentials(tls) : grpc.ServerCredentials.createInsecure(), (err, p) => {
      if (err) reject(new ChainruleError('LISTEN_FAILED', `chainrule node: cannot listen on ${host}:${opts.port ?? 0}: ${err.message}`));
      else resolve(p);
    });
  }).catch(async (e: unknown) => { await runs.close(); throw e; });
  widenSessionWindows(server);
  address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const healthPort = opts.healthPort === undefined ? null
    : await startHealthPort(health, { host, port: opts.healthPort }).catch(async (e: unknown) => { server.forceShutdown(); await runs.close(); throw e; });
  if (tls && !guard.watchHandshakes(server)) log.line('warning', 'this version of @grpc/grpc-js hides its HTTP/2 servers: refused TLS handshakes will not be logged');
  const security = [
    tls ? `mutual TLS (${tls.name}, CA from ${tls.dir})` : 'plaintext',
    tokens ? `bearer tokens from ${tokens.path}` : 'no token check',
    runs.limits.maxRuns === Infinity ? 'any number of runs' : `at most ${runs.limits.maxRuns} run${runs.limits.maxRuns === 1 ? '' : 's'} at a time`,
    `runs closed after ${runs.limits.timeoutMs / 1000} s without a call`,
    `at most ${(opts.maxParams ?? DEFAULT_MAX_PARAMS).toLocaleString('en-US')} parameters`,
    ...(healthPort ? [`health checks in plaintext on ${healthPort.address}`] : []),
    heapSetting() ?? 'V8 heap growth: not set by chainrule (tuneHeap not called)',
  ];
  log.line('listening', `on ${address}: ${security.join(', ')}`);
  if (!tls && !isLoopback(host)) log.line('warning', `listening on ${address} without TLS (--insecure): anyone who can reach this port can drive this node`);
  const secrets = [...(tls ? [join(tls.dir, TLS_FILES.node.key)] : []), ...(tokens ? [tokens.path] : [])];
  for (const f of readableByOthers(secrets)) log.line('warning', `${f} can be read by other users of this host: chmod 600 it`);

  let closed = false;
  return {
    address,
    port,
    ...(healthPort ? { healthPort: healthPort.port } : {}),
    drain: async (reason, timeoutMs) => {
      if (closed) return { clean: true, cutOff: 0, ms: 0 };
      closed = true;
      // The health port answers NOT_SERVING while the node drains, and goes with it.
      return drain({
        log, inFlight,
        stopServing: (why) => {
          draining = why;
          for (const service of ['', 'chainrule.StageService']) health.setStatus(service, 'NOT_SERVING');
        },
        closeRuns: async () => {
          await runs.close();
          for (const c of clients.values()) c.close();
        },
        endStreams: () => {
          for (const c of streams) if (!c.writableEnded) c.end();
          streams.clear();
        },
        tryShutdown: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
        forceShutdown: () => server.forceShutdown(),
      }, reason, timeoutMs).finally(() => healthPort?.close());
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await runs.close();
      for (const c of clients.values()) c.close();
      // tryShutdown can wait forever on a stuck call: back it with forceShutdown.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, 2_000);
        server.tryShutdown(() => { clearTimeout(timer); resolve(); });
      });
      await healthPort?.close();
    },
  };
}
