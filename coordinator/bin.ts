#!/usr/bin/env node
// The `chainrule` executable.
import { main } from './cli.js';
import { tuneHeap } from '../node/heap.js';

let heapSet = true;
try {
  // Before the first message: see node/heap.ts.
  tuneHeap();
} catch (e) {
  console.error(`chainrule: ${(e as Error).message}`);
  heapSet = false;
}
process.exitCode = heapSet ? await main(process.argv.slice(2)) : 2;
