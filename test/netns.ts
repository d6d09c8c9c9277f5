/**
 * Hosts for real on one machine, for tests: network namespaces joined by a bridge, each with
 * its own address on a /24 of the test's choosing, the bridge's address (.1) being this
 * process's "host". Traffic stays between the namespaces the test made. Needs root and `ip`;
 * `skip` says why not otherwise (and nothing is left behind).
 *
 * @example
 * const net = makeTestHosts('10.78.0', 2, 'adv');   // hosts 10.78.0.2 and .3, this process 10.78.0.1
 * if (net.skip) ...; spawn('ip', ['netns', 'exec', net.hosts[0].ns, ...]); net.remove();
 */
import { spawnSync } from 'node:child_process';

export interface TestHosts {
  /** This process's address on the bridge. */
  self: string;
  hosts: { ns: string; ip: string }[];
  /** Why the hosts could not be made, or null. */
  skip: string | null;
  /** Deletes the namespaces, their links and the bridge (idempotent). */
  remove(): void;
}

const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' });

/** `count` namespaces on `${subnet}.2` onwards; names start with `prefix` and this process's id. */
export function makeTestHosts(subnet: string, count: number, prefix: string): TestHosts {
  const tag = `${prefix}${process.pid % 10000}`;
  const bridge = `${tag}br`;
  const hosts = Array.from({ length: count }, (_, i) => ({ ns: `${tag}${i}`, ip: `${subnet}.${i + 2}` }));
  const remove = () => {
    for (const [i, h] of hosts.entries()) { ip('link', 'del', `${tag}v${i}`); ip('netns', 'del', h.ns); }
    ip('link', 'del', bridge);
  };
  const made = (): string | null => {
    if (process.platform !== 'linux') return 'network namespaces are Linux only';
    if (process.getuid?.() !== 0) return 'making network namespaces needs root';
    const steps: string[][] = [['link', 'add', bridge, 'type', 'bridge'], ['addr', 'add', `${subnet}.1/24`, 'dev', bridge], ['link', 'set', bridge, 'up']];
    for (const [i, h] of hosts.entries()) {
      steps.push(['netns', 'add', h.ns], ['link', 'add', `${tag}v${i}`, 'type', 'veth', 'peer', 'name', `${tag}p${i}`],
        ['link', 'set', `${tag}p${i}`, 'netns', h.ns], ['link', 'set', `${tag}v${i}`, 'master', bridge], ['link', 'set', `${tag}v${i}`, 'up'],
        ['netns', 'exec', h.ns, 'ip', 'addr', 'add', `${h.ip}/24`, 'dev', `${tag}p${i}`], ['netns', 'exec', h.ns, 'ip', 'link', 'set', `${tag}p${i}`, 'up'],
        ['netns', 'exec', h.ns, 'ip', 'link', 'set', 'lo', 'up']);
    }
    for (const s of steps) {
      const r = ip(...s);
      if (r.error) return `\`ip\` is not available (${r.error.message})`;
      if (r.status !== 0) return `\`ip ${s.join(' ')}\` failed: ${r.stderr.trim()}`;
    }
    return null;
  };
  const skip = made();
  if (skip) remove();
  return { self: `${subnet}.1`, hosts, skip, remove };
}
