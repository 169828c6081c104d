// The V8 flags Sluice runs with. Every way of starting it uses them: the `sluice` bin's
// shebang (src/cli.ts), the Dockerfile's CMD, `npm start` (examples/demo.mjs), the workers a
// primary forks (cluster/primary.ts) and the bench (bench/run.mjs, bench/instr.mjs);
// test/core/node-flags.test.ts checks that the literal copies match this list.
//
// Both keep RSS down under cache churn (evicted entries are old-generation garbage):
// - --max-semi-space-size=8 (MB; V8 grows it to 16): a smaller young generation;
// - --heap-growing-percent=25: after a full GC, V8 lets the old generation grow by 25 %
//   before the next one (by default it picks a factor up to 4x, so dead entries pile up).
// Measured with the bench's memory scenario load (64 MB L1, 1 KB entries, unique keys, 12 s):
// peak RSS 240-290 MB with neither, 205-267 MB with the first, 182-184 MB with both, at the
// same req/s (4.8k-5.1k on the shared machine); pass-through instructions per request were
// unchanged by the first (callgrind: 251.1k vs 251.5k). See docs/benchmarks.md.
// Command-line flags win over NODE_OPTIONS, so an operator who wants other values starts
// `node <flags> dist/src/cli.js` directly.
export const NODE_FLAGS: readonly string[] = Object.freeze(['--max-semi-space-size=8', '--heap-growing-percent=25'])

/** `execArgv` plus each of NODE_FLAGS whose name it does not already set (a worker's argv). */
export function withNodeFlags (execArgv: readonly string[]): string[] {
  const out = [...execArgv]
  for (const f of NODE_FLAGS) {
    const name = f.split('=')[0]
    if (!out.some((a) => a === name || a.startsWith(name + '='))) out.push(f)
  }
  return out
}
