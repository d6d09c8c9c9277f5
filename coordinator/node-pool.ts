/**
 * The gRPC nodes a run uses, and where a lost one's actors go: the next spare, else (once) a
 * node started in this process. A second loss with no spare left ends the run with NO_SPARE.
 *
 * @example
 * const pool = new NodePool(['h1:7000', 'h2:7000'], ['h3:7000']);
 * await pool.replace(['h2:7000'], { step: 40, commitStep: 40, keep: () => null });   // 'h3:7000'
 * pool.nodes   // ['h1:7000', 'h3:7000']
 */
import { startNode, type RunningNode } from '../node/server.js';
import { ChainruleError } from '../src/errors.js';

export class NodePool {
  /** The nodes in use, in the order actors are placed on them; undefined when the placement takes no node list. */
  readonly nodes: string[] | undefined;
  private readonly spares: string[];
  /** Nodes this process started in place of lost ones: closed with the pool. */
  private readonly own: RunningNode[] = [];

  constructor(nodes: readonly string[] | undefined, spares: readonly string[] = []) {
    this.nodes = nodes ? [...nodes] : undefined;
    this.spares = [...spares];
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
        console.warn(`chainrule: node ${address} was lost and no spare is left: its actors now run in this process`);
        const n = await startNode({ port: 0 });
        this.own.push(n);
        spare = n.address;
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
