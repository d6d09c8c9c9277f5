#!/usr/bin/env node
/**
 * Prints the Kubernetes Secret that deploy/k8s mounts (`chainrule-certs`), made from a
 * `chainrule certs` directory: the CA certificate, the node's and the coordinator's
 * certificates and keys, and the token. Never the CA's key (ca-key.pem), which signs new
 * certificates and belongs on no cluster. Each pod mounts only its own role's files.
 *
 *   node deploy/secret.mjs certs | kubectl apply -f -
 *   node deploy/secret.mjs certs --namespace other --name other-certs
 *
 * Plain Node, no dependency: it runs on the machine that holds the certificates.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

/** The Secret's keys: the file names that `--tls DIR` and `--token-file DIR/token` read. */
const SECRET_KEYS = ['ca.pem', 'node.pem', 'node-key.pem', 'coordinator.pem', 'coordinator-key.pem', 'token'];

const usage = 'Usage: node deploy/secret.mjs CERTS_DIR [--namespace chainrule] [--name chainrule-certs]';
let parsed;
try {
  parsed = parseArgs({ allowPositionals: true, options: { namespace: { type: 'string', default: 'chainrule' }, name: { type: 'string', default: 'chainrule-certs' }, help: { type: 'boolean', short: 'h' } } });
} catch (e) {
  console.error(`deploy/secret.mjs: ${e.message}\n${usage}`);
  process.exit(2);
}
const { values, positionals } = parsed;
if (values.help) { console.log(usage); process.exit(0); }
if (positionals.length !== 1) { console.error(`deploy/secret.mjs: give one certs directory (from chainrule certs DIR --hosts ...)\n${usage}`); process.exit(2); }
const dir = positionals[0];
const data = {};
for (const key of SECRET_KEYS) {
  try {
    data[key] = readFileSync(join(dir, key)).toString('base64');
  } catch (e) {
    console.error(`deploy/secret.mjs: cannot read ${join(dir, key)} (${e.code ?? e.message}); make the directory with chainrule certs ${dir} --hosts ...`);
    process.exit(2);
  }
}
// JSON is YAML: kubectl apply -f - reads it as is.
console.log(JSON.stringify({
  apiVersion: 'v1',
  kind: 'Secret',
  metadata: { name: values.name, namespace: values.namespace, labels: { 'app.kubernetes.io/name': 'chainrule' } },
  type: 'Opaque',
  data,
}, null, 2));
