#!/usr/bin/env node
// Sluice benchmark runner. See docs/benchmarks.md for how to read it and how to measure fairly.
//
//   node bench/run.mjs [--scenario NAME]... [--duration S] [--runs N] [--connections N]
//                      [--warmup S] [--procs N] [--out FILE] [--baseline DIR] [--list]
//
// For each scenario it starts the origin (core 0), the targets (core 1), warms
// each target, then runs wrk (core 0) against the targets interleaved
// (A B C A B C), takes medians, and does all that again with fresh processes
// (--procs, default 3); it prints the mean of the per-process medians with their
// spread for req/s, p50, p99, bytes per response,
// peak RSS and the ratios to the anchors measured in the same run. A target
// that is not available (package missing, Sluice not built, feature not built
// yet) is skipped with a line saying why; it never fails the run.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, mkdirSync, chmodSync, existsSync, rmSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, interpolate, nodeFlags, nginxConf } from './lib/targets.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const BENCH = path.join(ROOT, 'bench')
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
const REDIS_PREFIX = 'sluice-bench:'

// ───────────────────────────── scenarios ─────────────────────────────
// A target is a server (started once per scenario, possibly shared by two
// targets) plus the path and headers wrk requests. `expect` is the probe that
// decides whether the target is usable: '200', 'hit' (a cache hit on the
// second request) or 'encoded' (Content-Encoding br or gzip).
const AE = { 'accept-encoding': 'br, gzip' }
const SCENARIOS = {
  passthrough: {
    title: 'Pass-through, no-store (origin-bound)',
    path: '/pass',
    targets: [
      { id: 'origin-direct', server: 'origin', role: 'reference: no proxy' },
      { id: 'fastify-proxy', server: 'fastify-proxy', role: 'anchor: plain @fastify/http-proxy' },
      { id: 'nginx-proxy', server: 'nginx-proxy', role: 'anchor: nginx proxy_pass + upstream keepalive' },
      { id: 'sluice', server: 'sluice-pass', role: 'Sluice pass-through route' }
    ],
    ratios: [
      { of: 'sluice', to: 'fastify-proxy', rps: 1.0 }, // issue 12: pass-through >= 1.0x @fastify/http-proxy
      { of: 'sluice', to: 'nginx-proxy' }
    ]
  },
  slow10: {
    title: 'Pass-through, 10 ms origin (p50/p99: the latency users feel)',
    path: '/slow10',
    targets: [
      { id: 'origin-direct', server: 'origin', role: 'reference: no proxy' },
      { id: 'fastify-proxy', server: 'fastify-proxy', role: 'anchor: plain @fastify/http-proxy' },
      { id: 'nginx-proxy', server: 'nginx-proxy', role: 'anchor: nginx proxy_pass' },
      { id: 'sluice', server: 'sluice-pass', role: 'Sluice pass-through route' }
    ],
    ratios: [
      { of: 'sluice', to: 'fastify-proxy', rps: 0.95, p99: 1.2 },
      { of: 'sluice', to: 'nginx-proxy' },
      { of: 'sluice', to: 'origin-direct' }
    ]
  },
  targets: {
    title: 'Pass-through with 1 and 3 upstream targets (round-robin; the 3 are one origin on 127.0.0.1-3)',
    path: '/pass',
    targets: [
      { id: 'fastify-proxy', server: 'fastify-proxy', role: 'anchor: plain @fastify/http-proxy' },
      { id: 'sluice-1t', server: 'sluice-pass', role: 'Sluice, upstream with one target' },
      { id: 'sluice-3t', server: 'sluice-pass3', role: 'Sluice, upstream with three targets' }
    ],
    ratios: [
      { of: 'sluice-3t', to: 'sluice-1t', rps: 0.97 }, // issue 15: no cost beyond a few percent
      { of: 'sluice-3t', to: 'fastify-proxy' }
    ]
  },
  hit1k: {
    title: 'Cache hit, 1 KB body',
    path: '/hit1k',
    targets: [
      { id: 'fastify-buffer', server: 'fastify-buffer', role: 'ceiling: bare Fastify from a Buffer' },
      { id: 'fastify-buffer-h', server: 'fastify-buffer-h', role: 'bare Fastify from a Buffer, with the 4 headers a Sluice hit adds (Via, X-Request-Id, Cache-Status, Age)' },
      { id: 'nginx-cache', server: 'nginx-cache', role: 'anchor: nginx proxy_cache', expect: 'hit' },
      { id: 'varnish', server: 'varnish', role: 'anchor: Varnish', expect: 'hit' },
      { id: 'sluice-l1', server: 'sluice-cache', role: 'Sluice, memory L1 hit', expect: 'hit' },
      { id: 'sluice-l2', server: 'sluice-l2', role: 'Sluice, Redis L2 hit (L1 1 byte)', expect: 'hit', l2: true }
    ],
    ratios: [
      { of: 'sluice-l1', to: 'fastify-buffer', rps: 1.0 },
      { of: 'sluice-l1', to: 'fastify-buffer-h' },
      { of: 'sluice-l1', to: 'nginx-cache' },
      { of: 'sluice-l1', to: 'varnish' },
      { of: 'sluice-l2', to: 'sluice-l1' }
    ]
  },
  hit100k: {
    title: 'Cache hit, 100 KB JSON, no Accept-Encoding (identity)',
    path: '/hit100k.json',
    targets: [
      { id: 'fastify-buffer', server: 'fastify-buffer', role: 'ceiling: bare Fastify from a Buffer' },
      { id: 'nginx-cache', server: 'nginx-cache', role: 'anchor: nginx proxy_cache', expect: 'hit' },
      { id: 'varnish', server: 'varnish', role: 'anchor: Varnish (stores gzip, gunzips per hit)', expect: 'hit' },
      { id: 'sluice-l1', server: 'sluice-cache', role: 'Sluice, memory L1 hit', expect: 'hit' },
      { id: 'sluice-l2', server: 'sluice-l2', role: 'Sluice, Redis L2 hit (L1 1 byte)', expect: 'hit', l2: true }
    ],
    ratios: [
      { of: 'sluice-l1', to: 'fastify-buffer', rps: 0.9 },
      { of: 'sluice-l1', to: 'nginx-cache' },
      { of: 'sluice-l1', to: 'varnish' },
      { of: 'sluice-l2', to: 'sluice-l1' }
    ]
  },
  'hit100k-gzip': {
    title: 'Cache hit, 100 KB JSON, Accept-Encoding: br, gzip',
    path: '/hit100k.json',
    headers: AE,
    targets: [
      { id: 'fastify-buffer', server: 'fastify-buffer', role: 'ceiling: bare Fastify, pre-compressed Buffer (br q11)', expect: 'encoded' },
      { id: 'nginx-gzip', server: 'nginx-gzip', role: 'anchor: nginx proxy_cache + gzip on (level 1, per hit)', expect: 'hit+encoded' },
      { id: 'varnish', server: 'varnish', role: 'anchor: Varnish (stores gzip)', expect: 'hit+encoded' },
      { id: 'sluice', server: 'sluice-compress', role: 'Sluice, cache + compression', expect: 'hit+encoded' }
    ],
    ratios: [
      { of: 'sluice', to: 'nginx-gzip', rps: 10, bytes: 0.85 },
      { of: 'sluice', to: 'fastify-buffer', rps: 0.9 },
      { of: 'sluice', to: 'varnish', bytesInfo: true }
    ]
  },
  'compress-miss': {
    title: 'Compression miss path: 100 KB JSON, no-store, compressed on the fly',
    path: '/miss100k.json',
    headers: AE,
    targets: [
      { id: 'fastify-compress', server: 'fastify-compress', role: 'anchor: @fastify/http-proxy + plain @fastify/compress', expect: 'encoded' },
      { id: 'nginx-gzip', server: 'nginx-gzip', role: 'reference: nginx gzip on (level 1)', expect: 'encoded' },
      { id: 'sluice', server: 'sluice-compress', role: 'Sluice, compression route (bypass: no-store)', expect: 'encoded' }
    ],
    ratios: [
      { of: 'sluice', to: 'fastify-compress', bytesInfo: true },
      { of: 'sluice', to: 'nginx-gzip', bytesInfo: true }
    ]
  },
  metrics: {
    title: 'Metrics and access log on vs off: the same cached 1 KB route, one process each',
    path: '/hit1k',
    targets: [
      { id: 'sluice-metrics', server: 'sluice-cache', role: 'Sluice, memory L1 hit, metrics on (default), access log off', expect: 'hit' },
      { id: 'sluice-nometrics', server: 'sluice-nometrics', role: 'Sluice, memory L1 hit, metrics.enabled: false, access log off', expect: 'hit' },
      { id: 'sluice-accesslog', server: 'sluice-accesslog', role: 'Sluice, memory L1 hit, metrics on, access log on (stdout to a pipe)', expect: 'hit' },
      // What an access log costs nginx on the same hit: the same fields, JSON, 4 KB buffer, to a
      // FIFO a reader drains. Both send a request ID, as every Sluice response does.
      { id: 'nginx-rid', server: 'nginx-rid', role: 'anchor: nginx proxy_cache, X-Request-Id, access log off', expect: 'hit' },
      { id: 'nginx-log', server: 'nginx-log', role: 'anchor: nginx proxy_cache, X-Request-Id, JSON access log (buffer=4k flush=1s) to a pipe', expect: 'hit' }
    ],
    ratios: [
      { of: 'sluice-metrics', to: 'sluice-nometrics', rps: 0.97 },
      { of: 'sluice-accesslog', to: 'sluice-metrics', rps: 0.97 },
      { of: 'nginx-log', to: 'nginx-rid' }
    ]
  },
  tracing: {
    title: 'Tracing off, on with sampleRatio 0, and on with 0.05: the same pass-through route, spans exported to a stand-in collector on the origin (POST /v1/traces answers 200)',
    path: '/pass',
    // The sampled path runs on one request in 20, so V8 optimises its code (and what it makes
    // polymorphic) only after about 25 s of load (--trace-opt: 842 functions optimised in the
    // first 8 s, 120 in the next 8, 42 in the next, none after); with 2 s of warm-up the run
    // measured that compilation (0.90x) rather than tracing (docs/benchmarks.md, 2026-12-07).
    minWarmup: 30,
    targets: [
      { id: 'sluice-notrace', server: 'sluice-pass', role: 'Sluice pass-through, no tracing key' },
      { id: 'sluice-trace0', server: 'sluice-trace0', role: 'Sluice pass-through, tracing sampleRatio 0' },
      { id: 'sluice-trace5', server: 'sluice-trace5', role: 'Sluice pass-through, tracing sampleRatio 0.05' }
    ],
    ratios: [
      { of: 'sluice-trace0', to: 'sluice-notrace', rps: 0.97 },
      { of: 'sluice-trace5', to: 'sluice-notrace', rps: 0.97 } // issue 16: within 3 % at 0.05
    ]
  },
  limiter: {
    title: 'Per-client limit overhead (never rejects), same cached route with and without the limit',
    path: '/hit1k',
    // Fewer connections than elsewhere: the point is per-request latency, and at
    // 50 connections p99 is mostly queueing and GC. --connections overrides it.
    connections: 10,
    targets: [
      { id: 'mem-nolimit', server: 'sluice-limit-memory', prefix: '/nolimit', role: 'Sluice, memory store, route without limit' },
      { id: 'mem-limit', server: 'sluice-limit-memory', prefix: '/limit', role: 'Sluice, memory store, per-client limit', limitProbe: '/limit-probe/pass' },
      { id: 'redis-nolimit', server: 'sluice-limit-redis', prefix: '/nolimit', role: 'Sluice, Redis configured, route without limit' },
      { id: 'redis-limit', server: 'sluice-limit-redis', prefix: '/limit', role: 'Sluice, Redis store, per-client limit', limitProbe: '/limit-probe/pass' }
    ],
    deltas: [
      { of: 'mem-limit', to: 'mem-nolimit', p99Ms: 0.5 },
      { of: 'redis-limit', to: 'redis-nolimit' }
    ]
  },
  memory: {
    title: 'Peak RSS under churn: unique keys (/hit1k?v=N) for the whole run, one target at a time',
    path: '/hit1k',
    sequential: true,
    churn: true,
    targets: [
      { id: 'fastify-proxy', server: 'fastify-proxy', role: 'anchor: plain @fastify/http-proxy (stores nothing)' },
      { id: 'nginx-cache', server: 'nginx-cache', role: 'nginx proxy_cache (disk cache + 16 MB zone)', expect: 'hit' },
      { id: 'varnish', server: 'varnish', role: 'Varnish, malloc 256 MB', expect: 'hit' },
      { id: 'sluice', server: 'sluice-cache', role: 'Sluice, L1 maxBytes 64 MB', expect: 'hit' }
    ],
    rssBudget: { of: 'sluice', base: 'fastify-proxy', plusMb: 30 + 64 }
  },
  workers: {
    title: 'workers: 1 vs 2 on the same cached 1 KB route (issue 7); per-process peak RSS in the notes',
    path: '/hit1k',
    targets: [
      { id: 'w1', server: 'sluice-cache', role: 'Sluice, one process, core 1 (wrk on core 0)', expect: 'hit' },
      { id: 'w2-core1', server: 'sluice-w2-core1', role: 'Sluice, workers: 2, both on core 1 (the cost of the primary and the shared port)', expect: 'hit' },
      { id: 'w2-both', server: 'sluice-w2-both', role: 'Sluice, workers: 2, free to use both cores (sharing core 0 with wrk)', expect: 'hit' }
    ],
    ratios: [
      { of: 'w2-core1', to: 'w1' },
      { of: 'w2-both', to: 'w1' }
    ]
  },
  'l2-topology': {
    title: 'Redis L2 hit, 1 KB, L1 off: one Redis server vs a 3-master Redis Cluster (both started by the bench on core 0)',
    path: '/hit1k',
    connections: 10,
    targets: [
      { id: 'l2-single', server: 'sluice-l2-single', role: 'Sluice, L2 on one redis-server', expect: 'hit' },
      { id: 'l2-cluster', server: 'sluice-l2-cluster', role: 'Sluice, L2 on a 3-master Redis Cluster', expect: 'hit' }
    ],
    ratios: [
      { of: 'l2-cluster', to: 'l2-single' }
    ]
  }
}

// ───────────────────────────── servers ─────────────────────────────
// kind: how to start it. Node servers get warm-up; nginx and Varnish get it too (it primes caches).
const SERVERS = {
  origin: { kind: 'origin' },
  'fastify-proxy': { kind: 'node', script: 'bench/anchors/fastify-proxy.mjs', upstream: true },
  'fastify-buffer': { kind: 'node', script: 'bench/anchors/fastify-buffer.mjs' },
  'fastify-buffer-h': { kind: 'node', script: 'bench/anchors/fastify-buffer.mjs', args: ['--same-headers'] },
  'fastify-compress': { kind: 'node', script: 'bench/anchors/fastify-compress.mjs', upstream: true },
  'nginx-proxy': { kind: 'nginx', cache: false, gzip: false },
  'nginx-cache': { kind: 'nginx', cache: true, gzip: false },
  'nginx-gzip': { kind: 'nginx', cache: true, gzip: true },
  'nginx-rid': { kind: 'nginx', cache: true, gzip: false, requestId: true },
  'nginx-log': { kind: 'nginx', cache: true, gzip: false, requestId: true, accessLog: 'buffer=4k flush=1s' },
  varnish: { kind: 'varnish' },
  'sluice-pass': { kind: 'sluice', config: 'passthrough.yaml' },
  'sluice-trace0': { kind: 'sluice', config: 'passthrough-tracing0.yaml' },
  'sluice-trace5': { kind: 'sluice', config: 'passthrough-tracing5.yaml' },
  'sluice-pass3': { kind: 'sluice', config: 'passthrough-3targets.yaml' },
  'sluice-cache': { kind: 'sluice', config: 'cache.yaml' },
  'sluice-nometrics': { kind: 'sluice', config: 'cache-nometrics.yaml' },
  'sluice-accesslog': { kind: 'sluice', config: 'cache-accesslog.yaml' },
  'sluice-l2': { kind: 'sluice', config: 'cache-l2.yaml', redis: true },
  'sluice-compress': { kind: 'sluice', config: 'compress.yaml' },
  'sluice-limit-memory': { kind: 'sluice', config: 'limiter-memory.yaml' },
  'sluice-limit-redis': { kind: 'sluice', config: 'limiter-redis.yaml', redis: true },
  'sluice-w2-core1': { kind: 'sluice', config: 'cache-workers2.yaml' },
  'sluice-w2-both': { kind: 'sluice', config: 'cache-workers2.yaml', cores: '0,1' },
  'sluice-l2-single': { kind: 'sluice', config: 'cache-l2-own.yaml', ownRedis: 'single' },
  'sluice-l2-cluster': { kind: 'sluice', config: 'cache-l2-cluster.yaml', ownRedis: 'cluster' }
}

// ───────────────────────────── options ─────────────────────────────
function usage (code) {
  console.log(`usage: npm run bench -- [--scenario NAME]... [--duration S] [--runs N] [--connections N] [--warmup S] [--procs N] [--out FILE] [--baseline DIR] [--list]
scenarios: ${Object.keys(SCENARIOS).join(', ')} (default: all)
defaults: --duration 7 --runs 2 --procs 3 --connections 50 (limiter: 10) --warmup 2 (Node targets: at least 2) --out bench/results/latest.md`)
  process.exit(code)
}
const opts = { scenarios: [], duration: 7, runs: 2, procs: 3, connections: undefined, warmup: 2, out: path.join(BENCH, 'results', 'latest.md') }
{
  const a = process.argv.slice(2)
  for (let i = 0; i < a.length; i++) {
    const [k, inline] = a[i].split(/=(.*)/s)
    const val = () => inline ?? a[++i]
    switch (k) {
      case '--scenario': case '-s': opts.scenarios.push(...val().split(',').filter(Boolean)); break
      case '--duration': case '-d': opts.duration = Number(val()); break
      case '--runs': opts.runs = Number(val()); break
      case '--procs': opts.procs = Number(val()); break
      case '--connections': case '-c': opts.connections = Number(val()); break
      case '--warmup': opts.warmup = Number(val()); break
      case '--out': opts.out = path.resolve(val()); break
      case '--baseline': opts.baseline = path.resolve(val()); break
      case '--list':
        for (const [n, s] of Object.entries(SCENARIOS)) console.log(`${n.padEnd(14)} ${s.title}`)
        process.exit(0)
      // falls through
      case '--help': case '-h': usage(0); break
      default: console.error(`unknown option ${a[i]}`); usage(2)
    }
  }
  for (const n of opts.scenarios) if (!SCENARIOS[n]) { console.error(`unknown scenario ${n}`); usage(2) }
  if (opts.scenarios.length === 0) opts.scenarios = Object.keys(SCENARIOS)
  if (opts.baseline) addBaseline(opts.baseline)
  for (const k of ['duration', 'runs', 'procs', 'connections']) {
    if (k === 'connections' && opts[k] === undefined) continue
    if (!Number.isInteger(opts[k]) || opts[k] < 1) { console.error(`--${k} must be a positive integer`); process.exit(2) }
  }
  if (!(opts.warmup >= 0)) { console.error('--warmup must be >= 0'); process.exit(2) }
}

/**
 * --baseline DIR: another build of Sluice (a checkout with dist/ built, e.g. a `git worktree` of
 * the commit before a change) runs beside this one in the same run: every Sluice target gets a
 * twin `<id>@base` on the same config, interleaved with it, and a ratio `<id> / <id>@base`.
 */
function addBaseline (dir) {
  const cli = path.join(dir, 'dist', 'src', 'cli.js')
  if (!existsSync(cli)) { console.error(`--baseline: ${cli} does not exist (build that checkout first)`); process.exit(2) }
  for (const name of Object.keys(SERVERS)) {
    if (SERVERS[name].kind === 'sluice') SERVERS[`${name}@base`] = { ...SERVERS[name], cli, configDir: path.join(dir, 'bench', 'configs') }
  }
  for (const scen of Object.values(SCENARIOS)) {
    const twins = scen.targets.filter((t) => SERVERS[t.server].kind === 'sluice' && !t.server.endsWith('@base'))
      .map((t) => ({ ...t, id: `${t.id}@base`, server: `${t.server}@base`, role: `${t.role} (baseline build)` }))
    scen.targets.push(...twins)
    scen.ratios = [...(scen.ratios ?? []), ...twins.map((t) => ({ of: t.id.slice(0, -5), to: t.id }))]
  }
}

// ───────────────────────────── helpers ─────────────────────────────
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const which = (bin) => {
  const r = spawnSync('sh', ['-c', `command -v ${bin} || ls /usr/sbin/${bin} 2>/dev/null`], { encoding: 'utf8' })
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim().split('\n')[0] : null
}
const TASKSET = which('taskset')
const CORES = os.cpus().length
const SERVER_CORE = CORES >= 2 ? '1' : '0'
const LOAD_CORE = '0'
// The bench itself (it reads every target's stdout: with the access log on, a line per
// request) runs on the load core, all its threads, as a log collector runs beside a gateway
// and not on its core. Unpinned, it took time from the server under test.
if (TASKSET) spawnSync(TASKSET, ['-a', '-p', '-c', LOAD_CORE, String(process.pid)], { stdio: 'ignore' })
const pinned = (core, cmd, args) => TASKSET ? [TASKSET, ['-c', core, cmd, ...args]] : [cmd, args]

const TMP = mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-'))
chmodSync(TMP, 0o755) // nginx workers and Varnish's child run as other users

const children = new Set()
function start (name, core, cmd, args, env = {}) {
  const [c, a] = pinned(core, cmd, args)
  const proc = spawn(c, a, { cwd: ROOT, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  proc.name = name
  proc.out = ''
  const keep = (d) => { proc.out = (proc.out + d).slice(-4000) }
  proc.stdout.on('data', keep)
  proc.stderr.on('data', keep)
  proc.exited = new Promise((resolve) => proc.on('exit', (code, sig) => { proc.exitCode2 = code ?? sig; children.delete(proc); resolve() }))
  proc.on('error', (e) => { proc.out += String(e) })
  children.add(proc)
  return proc
}
async function stop (proc) {
  if (!proc || !children.has(proc)) return
  try { process.kill(-proc.pid, 'SIGTERM') } catch {}
  await Promise.race([proc.exited, sleep(3000)])
  if (children.has(proc)) {
    try { process.kill(-proc.pid, 'SIGKILL') } catch {}
    await Promise.race([proc.exited, sleep(2000)])
  }
}
function killAllNow () {
  for (const p of children) { try { process.kill(-p.pid, 'SIGKILL') } catch {} }
}
process.on('exit', () => { killAllNow(); try { rmSync(TMP, { recursive: true, force: true }) } catch {} })
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { console.error(`\n${sig}: stopping every process this run started`); process.exit(130) })

async function waitForPort (port, proc, ms = 20000) {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (!children.has(proc)) return false
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) return true
    await sleep(100)
  }
  return false
}

/**
 * A Redis of the bench's own on core 0 (with wrk and the origin): one server, or a 3-master
 * cluster joined by redis-cli. Its processes stop with the run.
 */
async function startOwnRedis (kind, dir) {
  if (!which('redis-server') || !which('redis-cli')) return { skip: 'redis-server/redis-cli not installed' }
  const ports = []
  const n = kind === 'cluster' ? 3 : 1
  for (let i = 0; i < n; i++) {
    const port = await freePort()
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no']
    if (kind === 'cluster') args.push('--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', '5000')
    const p = start(`redis-${kind}-${port}`, LOAD_CORE, 'redis-server', args)
    if (!await waitForPort(port, p)) return { skip: `redis-server did not start: ${p.out.trim().split('\n').slice(-2).join(' | ')}` }
    ports.push(port)
  }
  if (kind === 'single') return { vars: { REDIS_OWN_URL: `redis://127.0.0.1:${ports[0]}` } }
  const nodes = ports.map((p) => `127.0.0.1:${p}`)
  const c = spawnSync('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8', timeout: 30000 })
  if (c.status !== 0) return { skip: `redis-cli --cluster create failed: ${(c.stdout + c.stderr).trim().split('\n').slice(-2).join(' | ')}` }
  for (let i = 0; i < 100; i++) {
    const ok = ports.every((p) => /cluster_state:ok/.test(spawnSync('redis-cli', ['-p', String(p), 'cluster', 'info'], { encoding: 'utf8' }).stdout))
    if (ok) break
    await sleep(100)
  }
  return { vars: { REDIS_CLUSTER_NODES: nodes.map((x) => `"${x}"`).join(', ') } }
}

/** Peak RSS (VmHWM, MB) of each Sluice process in a group: a primary and its workers, say. */
function rssPerProcess (pgid) {
  const out = []
  for (const { pid } of groupProcs(pgid)) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cli.js')) continue
      const kb = vmHwmKb(pid)
      if (kb !== null) out.push(kb / 1024)
    } catch {}
  }
  return out
}

/** One request, body kept encoded: status, headers and body bytes on the wire. */
function probe (port, reqPath, headers = {}) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: reqPath, headers, agent: false, timeout: 10000 }, (res) => {
      let bytes = 0
      res.on('data', (d) => { bytes += d.length })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, bytes }))
      res.on('error', (e) => resolve({ status: 0, error: e.message, headers: {}, bytes }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', (e) => resolve({ status: 0, error: e.message, headers: {}, bytes: 0 }))
  })
}
const isHit = (h) => /(^|;)\s*hit\b/i.test(h['cache-status'] ?? '') || /^HIT/i.test(h['x-cache'] ?? '')
const cacheHeader = (h) => h['cache-status'] ?? h['x-cache'] ?? '-'

/** The processes of a group, each with its /proc/<pid>/stat fields after the command name. */
function * groupProcs (pgid) {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(f[2]) === pgid) yield { pid: d, f }
    } catch {}
  }
}

/** Peak RSS (VmHWM) of one process, in kB, or null when it is gone. */
function vmHwmKb (pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+) kB/)
    return m ? Number(m[1]) : null
  } catch { return null }
}

/** Sum of VmHWM (peak RSS) over the process group: nginx master + worker, Varnish manager + child. */
function peakRssKb (pgid) {
  let sum = 0
  for (const { pid } of groupProcs(pgid)) sum += vmHwmKb(pid) ?? 0
  return sum
}

/** CPU time (user + system, seconds) used so far by the process group; deltas give CPU % during a run. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100
function cpuSeconds (pgid) {
  let ticks = 0
  for (const { f } of groupProcs(pgid)) ticks += Number(f[11]) + Number(f[12]) // utime, stime
  return ticks / CLK_TCK
}

async function redisKeys (op) {
  // ioredis is a Sluice dependency; only keys under the bench prefix are touched.
  let Redis
  try { Redis = (await import('ioredis')).default } catch { return null }
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000, enableOfflineQueue: false })
  r.on('error', () => {})
  try {
    await r.connect()
    let cursor = '0'; let n = 0
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${REDIS_PREFIX}*`, 'COUNT', 1000)
      cursor = next; n += keys.length
      if (op === 'delete' && keys.length) await r.unlink(...keys)
    } while (cursor !== '0')
    return n
  } catch { return null } finally { r.disconnect() }
}

// ───────────────────────────── wrk ─────────────────────────────
const LUA_REPORT = `
done = function(s, lat, req)
  local e = s.errors
  io.write(string.format('\\nBENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    s.requests, s.duration, s.bytes, lat:percentile(50), lat:percentile(90), lat:percentile(99), lat.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
`
const LUA_CHURN = `
local n = (os.time() % 100000) * 100000 -- a new key range per wrk run (warm-up included)
request = function()
  n = n + 1
  return wrk.format(nil, wrk.path .. "?v=" .. string.format("%d", n))
end
`
writeFileSync(path.join(TMP, 'report.lua'), LUA_REPORT)
writeFileSync(path.join(TMP, 'churn.lua'), LUA_CHURN + LUA_REPORT)
const WRK = which('wrk')

const DEFAULT_CONNECTIONS = 50
const connectionsFor = (scen) => opts.connections ?? scen.connections ?? DEFAULT_CONNECTIONS

async function wrk (url, { seconds, headers = {}, churn = false, connections }) {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', path.join(TMP, churn ? 'churn.lua' : 'report.lua')]
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`)
  args.push(url)
  const p = start('wrk', LOAD_CORE, WRK, args)
  const timer = setTimeout(() => { try { process.kill(-p.pid, 'SIGKILL') } catch {} }, (seconds + 30) * 1000)
  await p.exited
  clearTimeout(timer)
  const m = p.out.match(/BENCHJSON (\{.*\})/)
  if (!m) return { error: `wrk failed: ${p.out.trim().split('\n').slice(-3).join(' | ')}` }
  const j = JSON.parse(m[1])
  return {
    rps: j.requests / (j.duration_us / 1e6),
    p50: j.p50 / 1000,
    p99: j.p99 / 1000,
    wireBytes: j.requests ? j.bytes / j.requests : 0,
    errors: j.connect + j.read + j.write + j.timeout,
    non2xx: j.status,
    requests: j.requests
  }
}

// ───────────────────────────── starting servers ─────────────────────────────
const VCL_TMPL = readFileSync(path.join(BENCH, 'anchors', 'varnish.vcl.tmpl'), 'utf8')
const fill = (tmpl, vars) => tmpl.replace(/\{\{(\w+)\}\}/g, (_, k) => vars[k] ?? '')

let origin // { proc, port, url }
const SLUICE_CLI = path.join(ROOT, 'dist', 'src', 'cli.js')


/** Returns { proc, port } or { skip: reason }. */
async function startServer (name) {
  const spec = SERVERS[name]
  if (spec.kind === 'origin') return { port: origin.port, shared: true, proc: origin.proc }
  const port = await freePort()
  const dir = path.join(TMP, `${name}-${port}`)
  mkdirSync(dir, { recursive: true, mode: 0o777 })
  chmodSync(dir, 0o777)
  let proc
  if (spec.kind === 'node') {
    const args = [spec.script, '--port', String(port), ...(spec.args ?? [])]
    if (spec.upstream) args.push('--upstream', origin.url)
    proc = start(name, SERVER_CORE, process.execPath, args)
  } else if (spec.kind === 'sluice') {
    const cli = spec.cli ?? SLUICE_CLI
    if (!existsSync(cli)) return { skip: `Sluice is not built (${cli} missing; \`npm run build\` failed or was not run)` }
    if (spec.redis && await redisKeys('count') === null) return { skip: `Redis not reachable at ${REDIS_URL}` }
    const adminPort = await freePort()
    const vars = { BENCH_PORT: String(port), BENCH_ADMIN_PORT: String(adminPort), BENCH_ORIGIN_URL: origin.url, BENCH_ORIGIN_PORT: String(origin.port), REDIS_URL }
    if (spec.ownRedis) {
      const r = await startOwnRedis(spec.ownRedis, dir)
      if (r.skip) return { skip: r.skip }
      Object.assign(vars, r.vars)
    }
    // A baseline checkout reads its own copy of a config (its keys may differ), or this one's
    // when it has none (a config added since).
    const own = spec.configDir ? path.join(spec.configDir, spec.config) : null
    const text = interpolate(readFileSync(own && existsSync(own) ? own : path.join(BENCH, 'configs', spec.config), 'utf8'), vars, process.env)
    const file = path.join(dir, spec.config)
    writeFileSync(file, text)
    proc = start(name, spec.cores ?? SERVER_CORE, process.execPath, [...await nodeFlags(cli), cli, '--config', file])
  } else if (spec.kind === 'nginx') {
    const bin = which('nginx')
    if (!bin) return { skip: 'nginx is not installed' }
    const conf = nginxConf({ dir, port, originPort: origin.port, user: process.getuid?.() === 0, cache: spec.cache, gzip: spec.gzip, requestId: spec.requestId === true, accessLog: spec.accessLog ?? null })
    writeFileSync(path.join(dir, 'nginx.conf'), conf)
    proc = start(name, SERVER_CORE, bin, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')])
  } else if (spec.kind === 'varnish') {
    const bin = which('varnishd')
    if (!bin) return { skip: 'varnishd is not installed' }
    writeFileSync(path.join(dir, 'bench.vcl'), fill(VCL_TMPL, { ORIGIN_PORT: String(origin.port) }))
    proc = start(name, SERVER_CORE, bin, ['-F', '-n', path.join(dir, 'work'), '-a', `127.0.0.1:${port}`,
      '-f', path.join(dir, 'bench.vcl'), '-s', 'malloc,256m', '-T', 'none', '-p', 'http_gzip_support=on'])
  }
  const up = await waitForPort(port, proc)
  if (!up) {
    let why = proc.out.trim().split('\n').slice(-4).join(' | ')
    try { why += ' ' + readFileSync(path.join(dir, 'error.log'), 'utf8').trim().split('\n').slice(-2).join(' | ') } catch {}
    await stop(proc)
    return { skip: `${name} did not start: ${why || `exit ${proc.exitCode2}`}` }
  }
  return { proc, port }
}

async function probeTarget (t, port, scen) {
  const reqPath = (t.prefix ?? '') + scen.path
  const headers = scen.headers ?? {}
  let r = await probe(port, reqPath, headers)
  if (r.status === 0) return { skip: `no answer: ${r.error}` }
  if (r.status === 404 && SERVERS[t.server].kind === 'sluice') return { skip: 'HTTP 404 from Sluice: route or feature not built yet' }
  if (r.status !== 200) return { skip: `HTTP ${r.status} on ${reqPath}` }
  const expect = t.expect ?? scen.expect ?? '200'
  if (expect.includes('hit')) {
    for (let i = 0; i < 5 && !isHit(r.headers); i++) { await sleep(i * 100); r = await probe(port, reqPath, headers) }
    if (!isHit(r.headers)) return { skip: `no cache hit after 6 requests (${SERVERS[t.server].kind === 'sluice' ? 'Cache-Status' : 'X-Cache'}: ${cacheHeader(r.headers) === '-' ? 'absent' : cacheHeader(r.headers)}): cache not built or not storing this response` }
  }
  // Sluice encodes the stored br/gzip copies in the background after the first fill: give it a moment.
  for (let i = 0; i < 10 && expect.includes('encoded') && !/^(br|gzip)$/.test(r.headers['content-encoding'] ?? ''); i++) { await sleep(100); r = await probe(port, reqPath, headers) }
  if (expect.includes('encoded') && !/^(br|gzip)$/.test(r.headers['content-encoding'] ?? '')) {
    return { skip: `response not compressed (Content-Encoding: ${r.headers['content-encoding'] ?? 'none'}): compression not built or not applied` }
  }
  const notes = []
  if (t.limitProbe) {
    // The same process has a route with burst 1: a 429 there proves this store's limiter is wired in.
    let last
    for (let i = 0; i < 3; i++) last = await probe(port, t.limitProbe)
    if (last.status !== 429) return { skip: `per-client limit not enforced (HTTP ${last.status || last.error} from ${t.limitProbe}, a burst-1 route, after 3 requests; expected 429): limiter not built yet` }
    notes.push(`limiter active (429${last.headers['retry-after'] ? ', Retry-After' : ''} on the burst-1 route)`)
  }
  if (r.headers['cache-status'] || r.headers['x-cache']) notes.push(`cache: ${cacheHeader(r.headers)}`)
  if (r.headers['content-encoding']) notes.push(`enc: ${r.headers['content-encoding']}`)
  if (r.headers.ratelimit || r.headers['ratelimit-policy']) notes.push('RateLimit headers present')
  return { bodyBytes: r.bytes, encoding: r.headers['content-encoding'] ?? 'identity', notes }
}

// ───────────────────────────── running a scenario ─────────────────────────────
const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (!s.length) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

async function runScenario (name) {
  const scen = SCENARIOS[name]
  console.log(`\n=== ${name}: ${scen.title} (${connectionsFor(scen)} connections)`)
  const result = { name, title: scen.title, path: scen.path, headers: scen.headers ?? {}, connections: connectionsFor(scen), minWarmup: scen.minWarmup, rows: [], skipped: [], notes: [] }
  const servers = new Map()
  const live = []
  const ensure = async (sname) => {
    if (!servers.has(sname)) {
      if (SERVERS[sname].redis) await redisKeys('delete')
      servers.set(sname, await startServer(sname))
    }
    return servers.get(sname)
  }
  const skip = (t, why) => { result.skipped.push({ id: t.id, why }); console.log(`  skip ${t.id}: ${why}`) }

  const prepare = async (t) => {
    const s = await ensure(t.server)
    if (s.skip) { skip(t, s.skip); return null }
    const p = await probeTarget(t, s.port, scen)
    if (p.skip) { skip(t, p.skip); return null }
    const url = `http://127.0.0.1:${s.port}${t.prefix ?? ''}${scen.path}`
    const entry = { t, s, url, probe: p, samples: [] }
    if (t.l2) {
      const n = await redisKeys('count')
      p.notes.push(n ? `${n} bench keys in Redis` : 'no bench keys in Redis: hits may not be from L2')
    }
    return entry
  }
  const warm = async (e) => {
    if (e.s.shared) return
    // Node targets get at least 2 s: with 1 s @fastify/http-proxy measured under half its warm rate.
    // A scenario may ask for more (minWarmup): see tracing.
    const node = ['node', 'sluice'].includes(SERVERS[e.t.server].kind)
    const seconds = Math.max(opts.warmup, node ? 2 : 0, node ? scen.minWarmup ?? 0 : 0)
    if (seconds > 0) {
      const w = await wrk(e.url, { seconds: Math.ceil(seconds), headers: scen.headers, churn: scen.churn, connections: connectionsFor(scen) })
      if (w.error) e.probe.notes.push(`warm-up: ${w.error}`)
    }
  }
  const measure = async (e, run) => {
    const pgid = e.s.proc?.pid
    const cpu0 = pgid ? cpuSeconds(pgid) : NaN
    const t0 = performance.now()
    const r = await wrk(e.url, { seconds: opts.duration, headers: scen.headers, churn: scen.churn, connections: connectionsFor(scen) })
    if (r.error) { console.log(`  run ${run} ${e.t.id}: ${r.error}`); return }
    r.cpu = pgid ? 100 * (cpuSeconds(pgid) - cpu0) / ((performance.now() - t0) / 1000) : NaN
    r.key = `${e.procSet}/${run}` // pairs this run with the other targets' run of the same set and number
    e.samples.push(r)
    console.log(`  run ${run} ${e.t.id.padEnd(16)} ${fmtInt(r.rps).padStart(8)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  cpu ${r.cpu.toFixed(0)}%` +
      (r.non2xx ? `  non-2xx ${r.non2xx}` : '') + (r.errors ? `  socket errors ${r.errors}` : ''))
  }

  // Each target is measured in opts.procs fresh processes (one Node process differs from the
  // next by several per cent: JIT, heap layout). Per process: warm-up, then opts.runs wrk runs
  // interleaved with the other targets, and their median. A row reports the mean of those
  // per-process medians and their spread ((max - min) / mean).
  const perTarget = new Map() // id -> { t, probe, procs: [{ rps, p50, p99, wireBytes, cpu }], rssKb, non2xx, errors, shared }
  const keep = (e) => {
    let a = perTarget.get(e.t.id)
    if (!a) { a = { t: e.t, probe: e.probe, procs: [], byKey: {}, rssKb: 0, non2xx: 0, errors: 0, shared: !!e.s.shared }; perTarget.set(e.t.id, a) }
    const sm = e.samples
    for (const x of sm) a.byKey[x.key] = x.rps
    if (sm.length) {
      a.procs.push({ rps: median(sm.map((x) => x.rps)), p50: median(sm.map((x) => x.p50)), p99: median(sm.map((x) => x.p99)), wireBytes: median(sm.map((x) => x.wireBytes)), cpu: median(sm.map((x) => x.cpu)) })
    }
    a.rssKb = Math.max(a.rssKb, e.rssKb ?? 0)
    a.non2xx += sm.reduce((n, x) => n + x.non2xx, 0)
    a.errors += sm.reduce((n, x) => n + x.errors, 0)
    for (const n of e.probe.notes) if (!a.probe.notes.includes(n)) a.probe.notes.push(n)
  }
  const stopAll = async () => {
    for (const s of servers.values()) if (s.proc && !s.shared) await stop(s.proc)
    servers.clear()
    live.length = 0
  }
  try {
    for (let proc = 1; proc <= opts.procs; proc++) {
      if (opts.procs > 1) console.log(`  -- process set ${proc} of ${opts.procs}`)
      if (scen.sequential) {
        // one target at a time, fresh process each: peak RSS belongs to this load alone
        for (const t of scen.targets) {
          const e = await prepare(t)
          if (!e) continue
          e.procSet = proc
          await warm(e)
          for (let run = 1; run <= opts.runs; run++) await measure(e, run)
          e.rssKb = e.s.proc ? peakRssKb(e.s.proc.pid) : 0
          keep(e)
          await stop(e.s.proc)
          servers.delete(t.server)
          if (SERVERS[t.server].redis) await redisKeys('delete')
        }
      } else {
        for (const t of scen.targets) { const e = await prepare(t); if (e) { e.procSet = proc; live.push(e) } }
        // a server none of whose targets survived the probe stops now, so it sits idle on no core
        for (const [sname, s] of servers) {
          if (s.proc && !s.shared && !live.some((e) => e.t.server === sname)) await stop(s.proc)
        }
        if (live.length === 0) { console.log('  every target was skipped'); break }
        for (const e of live) await warm(e)
        for (let run = 1; run <= opts.runs; run++) for (const e of live) await measure(e, run)
        for (const e of live) {
          e.rssKb = e.s.shared ? peakRssKb(e.s.proc.pid) : (e.s.proc ? peakRssKb(e.s.proc.pid) : 0)
          if (SERVERS[e.t.server].kind === 'sluice' && e.s.proc) {
            const per = rssPerProcess(e.s.proc.pid)
            if (per.length > 1) e.probe.notes.push(`peak RSS per process: ${per.map((x) => x.toFixed(0)).join(' + ')} MB (the primary first)`)
          }
          keep(e)
        }
        await stopAll()
        if ([...scen.targets].some((t) => SERVERS[t.server].redis)) await redisKeys('delete')
      }
    }
  } finally {
    await stopAll()
    if (scen.targets.some((t) => SERVERS[t.server].redis)) await redisKeys('delete')
  }

  const mean = (xs) => { const f = xs.filter(Number.isFinite); return f.length ? f.reduce((a, b) => a + b, 0) / f.length : NaN }
  for (const a of perTarget.values()) {
    const ps = a.procs
    const rpsList = ps.map((x) => x.rps)
    const m = mean(rpsList)
    const row = {
      id: a.t.id,
      role: a.t.role,
      procs: ps.length,
      runs: ps.length * opts.runs,
      rps: m,
      rpsSpread: ps.length > 1 ? (Math.max(...rpsList) - Math.min(...rpsList)) / m : 0,
      rpsPerProc: rpsList,
      rpsByKey: a.byKey,
      p50: mean(ps.map((x) => x.p50)),
      p99: mean(ps.map((x) => x.p99)),
      wireBytes: mean(ps.map((x) => x.wireBytes)),
      cpu: mean(ps.map((x) => x.cpu)),
      bodyBytes: a.probe.bodyBytes,
      encoding: a.probe.encoding,
      rssMb: a.rssKb / 1024,
      notes: [...a.probe.notes]
    }
    if (a.non2xx) row.notes.push(`${a.non2xx} non-2xx`)
    if (a.errors) row.notes.push(`${a.errors} socket errors`)
    if (a.shared) row.notes.push('origin on core 0, with wrk')
    result.rows.push(row)
  }
  result.ratios = computeRatios(scen, result.rows)
  printScenario(result)
  return result
}

function computeRatios (scen, rows) {
  const by = Object.fromEntries(rows.map((r) => [r.id, r]))
  const out = []
  const verdict = (v, limit, atLeast) => limit === undefined ? '' : ((atLeast ? v >= limit : v <= limit) ? ' ok' : ' MISSED')
  for (const r of scen.ratios ?? []) {
    const a = by[r.of]; const b = by[r.to]
    if (!a || !b) { out.push(`${r.of} / ${r.to}: n/a (${!a ? r.of : r.to} not measured)`); continue }
    const parts = []
    // Paired: each run of one target against the run of the other with the same process set and
    // run number, measured seconds apart. This machine's speed drifts by tens of per cent over
    // minutes (docs/benchmarks.md), and a pair shares the drift; the median of the pairs' ratios
    // is the verdict. The ratio of the means is printed beside it.
    const pairs = Object.keys(a.rpsByKey).filter((k) => k in b.rpsByKey).map((k) => a.rpsByKey[k] / b.rpsByKey[k]).sort((x, y) => x - y)
    const rps = pairs.length > 0 ? median(pairs) : a.rps / b.rps
    const range = pairs.length > 1 ? `, pairs ${pairs[0].toFixed(2)}-${pairs[pairs.length - 1].toFixed(2)}` : ''
    parts.push(`req/s ${rps.toFixed(2)}x (median of ${pairs.length} paired runs${range}; ratio of means ${(a.rps / b.rps).toFixed(2)}x)${r.rps !== undefined ? ` (target >= ${r.rps}x:${verdict(rps, r.rps, true)})` : ''}`)
    const p99 = a.p99 / b.p99
    parts.push(`p99 ${p99.toFixed(2)}x${r.p99 !== undefined ? ` (target <= ${r.p99}x:${verdict(p99, r.p99, false)})` : ''}`)
    if (r.bytes !== undefined || r.bytesInfo) {
      const by2 = a.bodyBytes / b.bodyBytes
      parts.push(`body bytes ${by2.toFixed(2)}x (${a.bodyBytes} ${a.encoding} vs ${b.bodyBytes} ${b.encoding})${r.bytes !== undefined ? ` (target <= ${r.bytes}x:${verdict(by2, r.bytes, false)})` : ''}`)
    }
    out.push(`${r.of} / ${r.to}: ${parts.join(', ')}`)
  }
  for (const d of scen.deltas ?? []) {
    const a = by[d.of]; const b = by[d.to]
    if (!a || !b) { out.push(`${d.of} - ${d.to}: n/a (${!a ? d.of : d.to} not measured)`); continue }
    const dp99 = a.p99 - b.p99
    out.push(`${d.of} - ${d.to}: p50 ${fmtDelta(a.p50 - b.p50)} ms, p99 ${fmtDelta(dp99)} ms` +
      (d.p99Ms !== undefined ? ` (target <= ${d.p99Ms} ms:${verdict(dp99, d.p99Ms, false)})` : '') +
      `, req/s ${(a.rps / b.rps).toFixed(2)}x`)
  }
  if (scen.rssBudget) {
    const a = by[scen.rssBudget.of]; const b = by[scen.rssBudget.base]
    if (!a || !b) out.push(`peak RSS budget: n/a (${!a ? scen.rssBudget.of : scen.rssBudget.base} not measured)`)
    else {
      const budget = b.rssMb + scen.rssBudget.plusMb
      out.push(`peak RSS ${a.id} ${a.rssMb.toFixed(0)} MB vs budget ${budget.toFixed(0)} MB (${b.id} ${b.rssMb.toFixed(0)} MB + ${scen.rssBudget.plusMb} MB):${verdict(a.rssMb, budget, false)}`)
    }
  }
  return out
}

// ───────────────────────────── output ─────────────────────────────
const fmtInt = (x) => Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a'
const fmtMs = (x) => Number.isFinite(x) ? x.toFixed(2) : 'n/a'
const fmtDelta = (x) => (x >= 0 ? '+' : '') + x.toFixed(2)

function table (res) {
  const lines = [
    '| target | what | req/s (mean of per-process medians) | spread | p50 ms | p99 ms | server CPU % | body B (enc) | wire B/resp | peak RSS MB | notes |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|'
  ]
  for (const r of res.rows) {
    lines.push(`| ${r.id} | ${r.role} | ${fmtInt(r.rps)} | ${r.procs > 1 ? `${(100 * r.rpsSpread).toFixed(1)} % (${r.procs} procs: ${r.rpsPerProc.map(fmtInt).join(', ')})` : '1 proc'} | ${fmtMs(r.p50)} | ${fmtMs(r.p99)} | ${Number.isFinite(r.cpu) ? r.cpu.toFixed(0) : 'n/a'} | ${r.bodyBytes} (${r.encoding}) | ${fmtInt(r.wireBytes)} | ${r.rssMb.toFixed(0)} | ${r.notes.join('; ')} |`)
  }
  return lines.join('\n')
}
function printScenario (res) {
  console.log('')
  console.log(table(res))
  for (const l of res.ratios) console.log(`  ${l}`)
  for (const s of res.skipped) console.log(`  skipped ${s.id}: ${s.why}`)
}

function versions () {
  const v = (cmd, args, re) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' })
    const m = ((r.stdout ?? '') + (r.stderr ?? '')).match(re)
    return m ? m[1] : 'not installed'
  }
  const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() || '?'
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() ? ' (src/ has uncommitted changes)' : ''
  return {
    commit: commit + dirty,
    node: process.version,
    wrk: v(WRK ?? 'wrk', ['-v'], /wrk (?:debian\/)?([\w.+~-]+)/),
    nginx: v(which('nginx') ?? 'nginx', ['-v'], /nginx\/([\d.]+)/),
    varnish: v(which('varnishd') ?? 'varnishd', ['-V'], /varnish-([\d.]+)/)
  }
}

function markdown (results, env) {
  const out = [
    '# Sluice benchmark results (latest run)',
    '',
    `Written by \`npm run bench\` on ${env.date}. Commit ${env.commit}; Node ${env.node}; wrk ${env.wrk}; nginx ${env.nginx}; Varnish ${env.varnish}.`,
    `${env.cores} cores; server under test pinned to core ${SERVER_CORE}, wrk and the origin to core ${LOAD_CORE}${TASKSET ? '' : ' (taskset missing: NOT pinned)'}.`,
    `wrk -t1 -c${opts.connections ?? `${DEFAULT_CONNECTIONS} (limiter: 10)`}, ${opts.duration} s per run, ${opts.procs} fresh processes per target, ${opts.runs} interleaved runs in each (a row is the mean of the per-process medians; spread = (max - min) / mean), ${opts.warmup} s warm-up per target. Load average at start: ${env.load}.`,
    'Ratios compare targets measured in this same run only. A req/s ratio is the median over paired runs (the two targets\' runs with the same process set and run number, seconds apart, so they share the machine\'s drift); the ratio of the means is shown beside it. p99 at saturation is mostly queueing; slow10 gives the latency users feel.',
    'Server CPU % is the target process group\'s user+system time over the run (100 = one full core); a low rate at low CPU means stalls or another bottleneck (the origin, in the pass-through scenarios).',
    ''
  ]
  for (const r of results) {
    out.push(`## ${r.name}: ${r.title}`, '', `${r.connections ?? ''} connections; \`GET ${r.path}\`${Object.keys(r.headers).length ? ' with ' + Object.entries(r.headers).map(([k, v]) => `\`${k}: ${v}\``).join(', ') : ''}${r.minWarmup ? `; Node targets warmed ${r.minWarmup} s` : ''}`, '')
    if (r.rows.length) out.push(table(r), '')
    for (const l of r.ratios ?? []) out.push(`- ${l}`)
    for (const s of r.skipped) out.push(`- skipped ${s.id}: ${s.why}`)
    out.push('')
  }
  return out.join('\n')
}

// ───────────────────────────── main ─────────────────────────────
async function main () {
  if (!WRK) { console.error('wrk is not installed: run `bash bench/run.sh` (it installs wrk) or `apt-get install wrk`'); process.exit(1) }
  if (!TASKSET) console.warn('warning: taskset not found; processes are NOT pinned and figures are not comparable')
  if (CORES < 2) console.warn('warning: fewer than 2 cores; everything shares core 0')
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ')
  if (os.loadavg()[0] > 1) console.warn(`warning: load average ${load}: other work is running, figures will be noisy`)

  const env = { date: new Date().toISOString(), cores: CORES, load, ...versions() }
  console.log(`sluice bench: ${opts.scenarios.join(', ')}; ${opts.procs} processes x ${opts.runs} runs x ${opts.duration} s, ${opts.connections ?? 'default'} connections, warm-up ${opts.warmup} s`)

  const originPort = Number(process.env.BENCH_ORIGIN_PORT) || await freePort()
  const oproc = start('origin', LOAD_CORE, process.execPath, [path.join(BENCH, 'origin.mjs'), '--port', String(originPort)], { ORIGIN_EXTRA_HOSTS: '127.0.0.2,127.0.0.3' })
  if (!await waitForPort(originPort, oproc)) { console.error(`origin did not start: ${oproc.out}`); process.exit(1) }
  origin = { proc: oproc, port: originPort, url: `http://127.0.0.1:${originPort}` }

  const results = []
  try {
    for (const name of opts.scenarios) {
      try {
        results.push(await runScenario(name))
      } catch (err) {
        console.log(`  scenario ${name} failed: ${err?.stack ?? err}`)
        results.push({ name, title: SCENARIOS[name].title, path: SCENARIOS[name].path, headers: {}, rows: [], skipped: [{ id: '*', why: `scenario error: ${err?.message ?? err}` }], ratios: [] })
      }
    }
  } finally {
    await stop(oproc)
  }
  mkdirSync(path.dirname(opts.out), { recursive: true })
  writeFileSync(opts.out, markdown(results, env) + '\n')
  writeFileSync(opts.out.replace(/\.md$/, '') + '.json', JSON.stringify({ env, opts, results }, null, 2) + '\n')
  console.log(`\nwrote ${path.relative(process.cwd(), opts.out)} (and .json)`)
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1) })
