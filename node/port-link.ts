/**
 * A PeerLink over a worker_threads MessagePort: messages go as msgpackr bytes whose
 * buffer is transferred (not copied), and each is acknowledged once the neighbour's
 * inbox has accepted it, which is what bounds the sender (back-pressure).
 */
import type { MessagePort } from 'node:worker_threads';
import { decodeMessage, encodeMessage, type PeerMessage } from '../src/wire/index.js';
import type { PeerLink, StageActor } from './stage.js';

type PortMessage = { id: number; bytes: Uint8Array } | { ack: number; error?: string };

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
        msg = decodeMessage(m.bytes, { actor: actor.name }) as PeerMessage;
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
    const bytes = encodeMessage(msg);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.port.postMessage({ id, bytes } satisfies PortMessage, [bytes.buffer as ArrayBuffer]);
    });
  }

  close(): void {
    this.port.close();
  }
}
