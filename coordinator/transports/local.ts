/** Actors as plain objects in this process; neighbours and replica peers call each other directly. */
import { StageActor, type PeerLink } from '../../node/stage.js';
import type { PeerMessage, Request } from '../../src/wire/index.js';
import { actorName, type ActorLayout, type StageHandle, type Transport } from './transport.js';

export class LocalTransport implements Transport {
  readonly kind = 'local';
  readonly actors: StageActor[] = [];

  async open({ replicas, stages }: ActorLayout, _run?: string): Promise<StageHandle[]> {
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
    }
    return this.actors.map((a) => ({ name: `${actorName(a.index, a.replica, replicas)} (local)`, request: (req: Request) => a.handle(req) }));
  }

  async close(): Promise<void> {
    for (const a of this.actors) a.release();
    this.actors.length = 0;
  }
}
