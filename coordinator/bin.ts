#!/usr/bin/env -S node --single-threaded-gc
// The `chainrule` executable. V8's GC runs on the thread that allocates, not on helper threads:
// on a machine whose cores the stage threads already fill, the helpers took cores from them
// (measured: wide MLP on 2 cores, thread replicas 1.12-1.15x one process against 0.98-1.02x,
// two thread stages 1.00-1.04x against 0.79-0.92x, one process 1.05x itself).
import { main } from './cli.js';

process.exitCode = await main(process.argv.slice(2));
