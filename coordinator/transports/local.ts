/** Stages as plain objects in this process; neighbours call each other directly. */
import { StageActor, type PeerLink } from '../../node/stage.js';
import type { PeerMessage, Request } from '../../src/wire/index.js';
import type { StageHandle, Transport } from './transport.js';

export class LocalTransport implements Transport {
  readonly kind = 'local';
  readonly actors: StageActor[] = [];

  async open(stages: number): Promise<StageHandle[]> {
    for (let i = 0; i < stages; i++) this.actors.push(new StageActor(i));
    const linkTo = (a: StageActor): PeerLink => ({ send: (m: PeerMessage) => a.deliver(m) });
    for (let i = 0; i < stages; i++) {
      if (i > 0) this.actors[i]!.prev = linkTo(this.actors[i - 1]!);
      if (i + 1 < stages) this.actors[i]!.next = linkTo(this.actors[i + 1]!);
    }
    return this.actors.map((a) => ({ name: `${a.name} (local)`, request: (r: Request) => a.handle(r) }));
  }

  async close(): Promise<void> {
    this.actors.length = 0;
  }
}
