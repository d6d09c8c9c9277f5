// Regenerates proto/generated/ from chainrule.proto with proto-loader-gen-types, then adds
// the `.js` extensions that ESM (NodeNext) resolution needs on relative imports.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const out = join(root, 'proto', 'generated');
rmSync(out, { recursive: true, force: true });
execFileSync('npx', ['proto-loader-gen-types', '--longs=String', '--enums=String', '--defaults', '--oneofs',
  '--grpcLib=@grpc/grpc-js', `--outDir=${out}`, 'proto/chainrule.proto'], { stdio: 'inherit', cwd: root });

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.ts')) {
      const text = readFileSync(p, 'utf8').replace(/from '(\.{1,2}\/[^']+?)(?<!\.js)'/g, "from '$1.js'");
      writeFileSync(p, text);
    }
  }
}
walk(out);
