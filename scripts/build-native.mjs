#!/usr/bin/env node
/**
 * Builds the optional native backend (native/ → native/build/Release/chainrule_native.node)
 * with node-gyp. Run by `npm install` (the package's `install` script) and by
 * `npm run build:native`. The addon is never required: when there is no compiler, no Node
 * headers or no node-gyp, this prints one line saying why, exits 0, and chainrule runs on
 * WebAssembly. `--strict` makes a failed build an error (for `npm run build:native`);
 * `--dir=PATH` builds a copy of native/ elsewhere (the tests do, to leave the real build alone).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dirFlag = process.argv.find((a) => a.startsWith('--dir='));
const dir = dirFlag ? dirFlag.slice('--dir='.length) : join(root, 'native');
const strict = process.argv.includes('--strict');

function skip(why) {
  const msg = `chainrule: native backend not built (${why}); the WebAssembly backend will be used`;
  if (strict) {
    console.error(msg);
    process.exit(1);
  }
  console.log(msg);
  process.exit(0);
}

if (process.env.CHAINRULE_SKIP_NATIVE === '1') skip('CHAINRULE_SKIP_NATIVE=1');

// npm tells its lifecycle scripts where its bundled node-gyp is; otherwise look beside npm.
const candidates = [
  process.env.npm_config_node_gyp,
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  join(dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((p) => p && existsSync(p));
if (candidates.length === 0) skip('node-gyp not found');

// Build against the headers of the running Node when they are installed (no download).
const args = [candidates[0], 'rebuild', `--directory=${dir}`];
const prefix = join(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

const r = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8', timeout: 300_000 });
if (r.status !== 0) {
  // A half-built addon must not be picked up later.
  rmSync(join(dir, 'build'), { recursive: true, force: true });
  const lines = `${r.stderr ?? ''}\n${r.stdout ?? ''}`.split('\n').filter((l) => /error|not found|ERR!/i.test(l));
  skip(r.error ? r.error.message : (lines.find((l) => !/gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l)) ?? `node-gyp exited with ${r.status}`).trim().slice(0, 200));
}
const addon = join(dir, 'build', 'Release', 'chainrule_native.node');
if (!existsSync(addon)) skip(`node-gyp succeeded but ${addon} is missing`);
console.log(`chainrule: native backend built (${addon})`);
