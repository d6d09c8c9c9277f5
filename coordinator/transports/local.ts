/** Actors as plain objects in this process; neighbours and replica peers call each other directly. */
import { StageActor, type PeerLink } from '../../node/stage.js';
import { DeviceTurns } from '../../node/device-turns.js';
import type { NamedTensors, PeerMessage, Reply, Request } from '../../src/wire/index.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { actorName, deviceOf, type ActorLayout, type StageHandle, type Transport } from './transport.js';

export class LocalTransport implements Transport {
  readonly kind = 'local';
  readonly hostsVirtualStages = true;
  readonly actors: StageActor[] = [];

  async open({ replicas, stages, virtualStages = 1 }: ActorLayout, _run?: string): Promise<StageHandle[]> {
    for (let r = 0; r < replicas; r++) for (let k = 0; k < stages; k++) this.actors.push(new StageActor(k, r));
    const at = (r: number, k: number) => this.actors[r * stages + k]!;
    const linkTo = (a: StageActor): PeerLink => ({ send: (m: PeerMessage) => a.deliver(m) });
    for (let r = 0; r < replicas; r++) {
      for (let k = 0; k < stages; k++) {
        const a = at(r, k);
        if (k > 0) a.prev = linkTo(at(r, k - 1));
        if (k + 1 < stages) a.next = linkTo(at(r, k + 1));
        a.peers = Array.from({ length: replicas }, (_, q) => (q === r ? null : linkTo(at(q, k))));
      }
      if (virtualStages > 1) {
        // One process, but each device still computes in its own schedule's order.
        const devices = Array.from({ length: stages / virtualStages }, (_, d) => new DeviceTurns(`device ${d}${replicas > 1 ? ` of replica ${r}` : ''} (local)`));
        for (let k = 0; k < stages; k++) at(r, k).turns = devices[deviceOf(k, stages, virtualStages)]!;
      }
    }
    return this.actors.map((a) => ({ name: `${actorName(a.index, a.replica, replicas)} (local)`, request: async (req: Request) => ownState(await a.handle(req)) }));
  }

  async close(): Promise<void> {
    for (const a of this.actors) a.release();
    this.actors.length = 0;
  }
}

/** A state reply holds views of the live tensors in process: copied, as a wire would, so that a kept commit does not change with training. */
function ownState(reply: Reply): Reply {
  if (reply.type !== 'state') return reply;
  const copy = (m: NamedTensors) => Object.fromEntries(Object.entries(m).map(([n, t]) => [n, new Tensor(t.data.slice(), t.shape)]));
  const { params, buffers, optimizer, lastStep } = reply.state;
  return { type: 'state', state: { params: copy(params), buffers: copy(buffers), lastStep,
    optimizer: optimizer && { ...optimizer, slots: Object.fromEntries(Object.entries(optimizer.slots).map(([n, s]) => [n, copy(s)])) } } };
}
