/**
 * Writes the example CSV files (deterministic: the same bytes on every run; a test checks
 * that the committed files are what this writes).
 *   blobs.csv              3 classes of 4 features, 100 rows each (classification)
 *   regression.csv         y = sin(x1) + x2·x3 / 2 + noise, 400 rows (regression)
 *   regression-inputs.csv  3 rows of x1, x2, x3 to predict on
 * Run: node --import tsx examples/make-data.ts [DIR]   (default: this folder)
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tensor } from 'chainrule';

const dir = process.argv[2] ?? import.meta.dirname;
const rng = new tensor.Rng(2024);
const f = (v: number) => v.toFixed(4);

// Three Gaussian blobs; class c sits at its own corner of feature space.
const centers = [[0, 0, 0, 0], [2, 2, 0, 1], [0, 2, 2, -1]];
const blobs = ['x1,x2,x3,x4,class'];
for (let i = 0; i < 300; i++) {
  const c = i % 3;
  blobs.push([...centers[c]!.map((m) => f(m + 0.6 * rng.normal())), String(c)].join(','));
}
writeFileSync(join(dir, 'blobs.csv'), blobs.join('\n') + '\n');

const uniform = () => 4 * rng.float() - 2;
const regression = ['x1,x2,x3,y'];
for (let i = 0; i < 400; i++) {
  const [a, b, c] = [uniform(), uniform(), uniform()];
  regression.push([a, b, c, Math.sin(a) + 0.5 * b * c + 0.05 * rng.normal()].map(f).join(','));
}
writeFileSync(join(dir, 'regression.csv'), regression.join('\n') + '\n');

writeFileSync(join(dir, 'regression-inputs.csv'), 'x1,x2,x3\n0.5,1,-1\n-1,0,2\n1.5,1.5,1.5\n');
