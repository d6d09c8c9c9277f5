/**
 * A PeerLink over a worker_threads MessagePort: messages go as encodeForPort values whose
 * tensor buffers are transferred (not copied), validated on arrival as the wire's bytes
 * would be, and each is acknowledged once the neighbour's inbox has accepted it, which is
 * what bounds the sender (back-pressure).
 */
import type { MessagePort } from 'node:worker_threads';
import { decodeFromPort, encodeForPort, type PeerMessage } from '../src/wire/index.js';
import type { PeerLink, StageActor } from './stage.js';

type PortMessage = { id: number; value: unknown } | { ack: number; error?: string };

export class PortLink implements PeerLink {
  private nextId = 0;
  private pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  /** Listens on the port: deliveries go to `actor`, acknowledgements settle our sends. */
  constructor(private readonly port: MessagePort, actor: StageActor) {
    port.on('message', (m: PortMessage) => {
      if ('ack' in m) {
        const p = this.pending.get(m.ack);
        this.pending.delete(m.ack);
        if (m.error) p?.reject(new Error(m.error));
        else p?.resolve();
        return;
      }
      let msg: PeerMessage;
      try {
        msg = decodeFromPort(m.value, { actor: actor.name }) as PeerMessage;
      } catch (e) {
        port.postMessage({ ack: m.id, error: (e as Error).message } satisfies PortMessage);
        return;
      }
      actor.deliver(msg).then(
        () => port.postMessage({ ack: m.id } satisfies PortMessage),
        (e: Error) => port.postMessage({ ack: m.id, error: e.message } satisfies PortMessage),
      );
    });
  }

  send(msg: PeerMessage): Promise<void> {
    const id = this.nextId++;
    const { value, transfer } = encodeForPort(msg);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.port.postMessage({ id, value } satisfies PortMessage, transfer);
    });
  }

  close(): void {
    this.port.close();
  }
}
