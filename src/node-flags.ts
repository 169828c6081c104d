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
//
// --no-memory-reducer: V8's memory reducer runs full collections while a process is idle, to
// give memory back. A gateway that idled before its first traffic (as every one does after a
// start or a deploy) then served 1 KB cache hits about 25 % slower for as long as it ran: its
// optimised code took V8's slow runtime path for map transitions in Node's own stream and
// nextTick code (perf: Runtime_DefineKeyedOwnPropertyInLiteral, JSObject::MigrateToMap, about
// 10 % of its time). Measured on one core, a process idle 35 s before its first request: 40-57k
// req/s in four runs with the reducer, 59-68k in three without (bare Fastify 72-77k); started
// under load at once, 64-77k either way. docs/benchmarks.md has the runs.
//
// Command-line flags win over NODE_OPTIONS, so an operator who wants other values starts
// `node <flags> dist/src/cli.js` directly.
export const NODE_FLAGS: readonly string[] = Object.freeze(['--max-semi-space-size=8', '--heap-growing-percent=25', '--no-memory-reducer'])

/** A flag's name for matching: `--no-x` and `--x=...` both name `--x`. */
const flagName = (f: string): string => f.split('=')[0].replace(/^--no-/, '--')

/** `execArgv` plus each of NODE_FLAGS whose name it does not already set (a worker's argv). */
export function withNodeFlags (execArgv: readonly string[]): string[] {
  const out = [...execArgv]
  for (const f of NODE_FLAGS) {
    const name = flagName(f)
    if (!out.some((a) => flagName(a) === name)) out.push(f)
  }
  return out
}
