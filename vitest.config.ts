import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Worker-thread and gRPC tests start real threads and sockets; two files at a time fit 2 cores.
    maxWorkers: 2,
  },
});
