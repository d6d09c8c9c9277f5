/**
 * A PeerLink over a worker_threads MessagePort: messages go as encodeForPort values whose
 * tensor buffers are transferred (not copied), validated on arrival as the wire's bytes
 * would be, and each is acknowledged once the neighbour's inbox has accepted it, which is
 * what bounds the sender (back-pressure).
 */
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { decodeFromPort, encodeForPort, type PeerMessage } from '../src/wire/index.js';
import type { PeerLink, StageActor } from './stage.js';

type PortMessage = { id: number; value: unknown } | { ack: number; error?: string };

export class PortLink implements PeerLink {
  private nextId = 0;
  private pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  /** Listens on the port: deliveries go to `actor`, acknowledgements settle our sends. */
  constructor(private readonly port: MessagePort, private readonly actor: StageActor) {
    port.on('message', (m: PortMessage) => this.receive(m));
  }

  /**
   * Takes what has arrived without waiting for the event loop (receiveMessageOnPort): a stage
   * that waits for a neighbour spins on this briefly before it sleeps. True if it took one.
   */
  poll(): boolean {
    const got = receiveMessageOnPort(this.port);
    if (got === undefined) return false;
    this.receive(got.message as PortMessage);
    return true;
  }

  private receive(m: PortMessage): void {
    if ('ack' in m) {
      const p = this.pending.get(m.ack);
      this.pending.delete(m.ack);
      if (m.error) p?.reject(new Error(m.error));
      else p?.resolve();
      return;
    }
    let msg: PeerMessage;
    try {
      msg = decodeFromPort(m.value, { actor: this.actor.name }) as PeerMessage;
    } catch (e) {
      this.port.postMessage({ ack: m.id, error: (e as Error).message } satisfies PortMessage);
      return;
    }
    this.actor.deliver(msg).then(
      () => this.port.postMessage({ ack: m.id } satisfies PortMessage),
      (e: Error) => this.port.postMessage({ ack: m.id, error: e.message } satisfies PortMessage),
    );
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
