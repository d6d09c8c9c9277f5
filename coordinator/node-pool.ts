/**
 * The gRPC nodes a run uses, and where a lost one's actors go: the next spare, else (once) a
 * node started in this process. A second loss with no spare left ends the run with NO_SPARE.
 * The node in this process listens and is advertised as `own` says (--advertise, --tls and
 * --token-file: see transports/own-stages.ts); with nodes on other hosts and no --advertise
 * it cannot be reached from them, and the run ends with NO_ADVERTISE instead.
 *
 * @example
 * const pool = new NodePool(['h1:7000', 'h2:7000'], ['h3:7000']);
 * await pool.replace(['h2:7000'], { step: 40, commitStep: 40, keep: () => null });   // 'h3:7000'
 * pool.nodes   // ['h1:7000', 'h3:7000']
 */
import type { RunningNode } from '../node/server.js';
import { ChainruleError } from '../src/errors.js';
import { ownStages, startOwnNode, unreachableFrom, type OwnStages, type OwnStagesOptions } from './transports/own-stages.js';

export class NodePool {
  /** The nodes in use, in the order actors are placed on them; undefined when the placement takes no node list. */
  readonly nodes: string[] | undefined;
  private readonly spares: string[];
  /** Nodes this process started in place of lost ones: closed with the pool. */
  private readonly own: RunningNode[] = [];
  private readonly ownStages: OwnStages;

  constructor(nodes: readonly string[] | undefined, spares: readonly string[] = [], own: OwnStagesOptions = {}) {
    this.nodes = nodes ? [...nodes] : undefined;
    this.spares = [...spares];
    this.ownStages = ownStages(own, 'options');
  }

  /**
   * Puts a replacement in the place of every lost node in use; returns the last replacement,
   * or null when none of `lost` was in use. `keep` writes the commit of `commitStep` as a
   * checkpoint (its directory, or null without one) before NO_SPARE is thrown.
   */
  async replace(lost: readonly string[], at: { step: number; commitStep: number; keep: () => string | null }): Promise<string | null> {
    let replacement: string | null = null;
    if (!this.nodes) return replacement;
    for (const address of lost) {
      const i = this.nodes.indexOf(address);
      if (i < 0) continue;
      let spare = this.spares.shift();
      if (spare === undefined && this.own.length > 0) {
        // This process took over once already: a second loss ends the run, its progress kept.
        const written = at.keep();
        const kept = written ? `the checkpoint of step ${at.commitStep} written to ${written}` : 'pass --checkpoint to keep the progress next time';
        throw new ChainruleError('NO_SPARE', `node ${address} was lost at step ${at.step} and no spare is left (an earlier loss already moved actors into this process); ${kept}`,
          { hint: 'start more nodes and pass them with --spares, then --resume the checkpoint' });
      }
      if (spare === undefined) {
        const far = unreachableFrom(this.ownStages, this.nodes.filter((n) => n !== address));
        if (far !== undefined) {
          const written = at.keep();
          throw new ChainruleError('NO_ADVERTISE', `node ${address} was lost at step ${at.step} and no spare is left; this process cannot take over its actors, since node ${far} on another host would reach them at 127.0.0.1`
            + (written ? `; the checkpoint of step ${at.commitStep} was written to ${written}` : ''),
          { hint: 'pass --spares, or --advertise HOST (the name or IP by which the nodes reach this host, with --tls naming it), then --resume the checkpoint' });
        }
        console.warn(`chainrule: node ${address} was lost and no spare is left: its actors now run in this process`);
        const { node, address: at2 } = await startOwnNode(this.ownStages);
        this.own.push(node);
        spare = at2;
      }
      for (let j = 0; j < this.nodes.length; j++) if (this.nodes[j] === address) this.nodes[j] = spare;
      replacement = spare;
    }
    return replacement;
  }

  /** Stops the nodes this process started. */
  async close(): Promise<void> {
    await Promise.all(this.own.splice(0).map((n) => n.close()));
  }
}
