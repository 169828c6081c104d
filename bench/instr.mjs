#!/usr/bin/env node
// Instructions per request, counted by valgrind's callgrind: a figure that does not move with
// what else the machine is doing (wrk's req/s on a shared 2-core VM varies by 15-50 % from one
// process to the next; an instruction count repeats to a fraction of a per cent). It complements
// bench/run.mjs, it does not replace it: instructions are not time (cache misses, syscalls
// and GC pauses cost more than their count), so speed claims still quote wrk ratios.
//
//   node bench/instr.mjs [--scenario passthrough|hit1k|hit100k-gzip] [--requests N] [--warm N]
//                        [--concurrency N] [--baseline DIR] [--target ID]... [--config FILE]
//                        [--proto h1|tls|h2] [--by-function N] [--rounds N] [--cache-sim]
//
// --cache-sim: callgrind also simulates the caches (--cache-sim=yes, the host's L1 and last
// level sizes) and prints each target's L1 data, L1 instruction and last-level misses per
// request: what an instruction count hides when one server touches more memory than another.
//
// --target sluice=FILE (or sluice@base=FILE): that build with another of bench/configs/, so
// one run compares two configs of one build, e.g. `--target sluice --target
// sluice=cache-accesslog.yaml`: the access log's cost. --rounds N: start every target N times,
// in turn, and print each one's median, with the spread (one process's count varies by
// 1-3 % from the next: what the JIT inlined, when the scavenges fell).
//
// TARGET|--flag|--flag (e.g. `sluice|--max-semi-space-size=1`, `fastify-buffer|--no-memory-reducer`):
// that target with V8 flags added after its own.
//
// --by-function N: also print each target's N costliest functions (self instructions per
// request), JavaScript included: the targets run with --perf-basic-prof and callgrind's JIT
// addresses are named through V8's perf map (bench/lib/callgrind-js.mjs). That is how the
// tracing exporter's effect on Node's own stream code was found (docs/benchmarks.md).
//
// --proto: the client's protocol. tls and h2 give the Sluice targets a listener with
// listen.tls (a throwaway certificate) and listen.http2; tls sends HTTP/1.1 over TLS, h2 sends
// --concurrency streams at a time on one HTTP/2 connection. The anchors speak cleartext
// HTTP/1.1 only and are skipped.
//
// --config: another of bench/configs/ for the Sluice targets (e.g. cache-nometrics.yaml or
// cache-accesslog.yaml with --scenario hit1k: the cost of metrics or of the access log).
//
// Targets: sluice (this checkout's dist/), sluice@base (--baseline DIR's dist/), and the
// anchors fastify-proxy (passthrough) or fastify-buffer (hits). Each target runs under
// `valgrind --tool=callgrind --instr-atstart=no`; after --warm requests (JIT warm), counting is
// switched on for --requests requests, and the total Ir / requests is printed. The origin and
// the client run outside valgrind and are not counted.
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import http2 from 'node:http2'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { byFunction } from './lib/callgrind-js.mjs'
import { freePort, interpolate, nodeFlags, nginxConf } from './lib/targets.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const BENCH = path.join(ROOT, 'bench')

const opts = { scenario: 'passthrough', requests: 3000, warm: 3000, concurrency: 8, baseline: null, targets: [], config: null, proto: 'h1', byFunction: 0, rounds: 1, cacheSim: false }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]; const val = () => argv[++i]
  if (a === '--scenario') opts.scenario = val()
  else if (a === '--requests') opts.requests = Number(val())
  else if (a === '--warm') opts.warm = Number(val())
  else if (a === '--concurrency') opts.concurrency = Number(val())
  else if (a === '--baseline') opts.baseline = path.resolve(val())
  else if (a === '--target') opts.targets.push(val())
  else if (a === '--config') opts.config = val()
  else if (a === '--proto') opts.proto = val()
  else if (a === '--by-function') opts.byFunction = Number(val())
  else if (a === '--rounds') opts.rounds = Number(val())
  else if (a === '--cache-sim') opts.cacheSim = true
  else { console.error(`unknown argument ${a}`); process.exit(2) }
}

const SCENARIOS = {
  passthrough: { path: '/pass', headers: {}, config: 'passthrough.yaml', anchor: 'fastify-proxy' },
  hit1k: { path: '/hit1k', headers: {}, config: 'cache.yaml', anchor: 'fastify-buffer' },
  'hit100k-gzip': { path: '/hit100k.json', headers: { 'accept-encoding': 'br, gzip' }, config: 'compress.yaml', anchor: 'fastify-buffer' }
}
const scen = SCENARIOS[opts.scenario]
if (!scen) { console.error(`--scenario: one of ${Object.keys(SCENARIOS).join(', ')}`); process.exit(2) }
if (spawnSync('valgrind', ['--version']).status !== 0) { console.error('valgrind is not installed (apt-get install valgrind)'); process.exit(2) }

const TMP = mkdtempSync(path.join(os.tmpdir(), 'sluice-instr-'))
if (!['h1', 'tls', 'h2'].includes(opts.proto)) { console.error('--proto: one of h1, tls, h2'); process.exit(2) }
const tls = opts.proto !== 'h1'
if (tls) spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(TMP, 'k.pem'), '-out', path.join(TMP, 'c.pem'), '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' })
const agent = tls ? new https.Agent({ keepAlive: true, maxSockets: opts.concurrency, rejectUnauthorized: false }) : new http.Agent({ keepAlive: true, maxSockets: opts.concurrency })
const sessions = new Map()

function get (port, p = scen.path) {
  if (opts.proto === 'h2') {
    let s = sessions.get(port)
    if (s === undefined || s.destroyed || s.closed) { s = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false }); s.on('error', () => {}); sessions.set(port, s) }
    return new Promise((resolve, reject) => {
      const req = s.request({ ':path': p, ...scen.headers })
      let status = 0
      req.on('response', (h) => { status = h[':status'] })
      req.on('error', (e) => { sessions.delete(port); reject(e) })
      req.resume()
      req.on('end', () => resolve(status))
      req.end()
    })
  }
  return new Promise((resolve, reject) => {
    const req = (tls ? https : http).get({ host: '127.0.0.1', port, path: p, headers: scen.headers, agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', reject)
  })
}
async function load (port, n) {
  let next = 0; let bad = 0
  const worker = async () => { while (next < n) { next++; if ((await get(port)) >= 400) bad++ } }
  await Promise.all(Array.from({ length: opts.concurrency }, worker))
  return bad
}
async function waitUp (port, ms = 120000) {
  const end = Date.now() + ms
  for (;;) {
    try { await get(port); return } catch { if (Date.now() > end) throw new Error(`nothing answered on port ${port}`) }
    await sleep(250)
  }
}

// nginx variants for --scenario hit1k: without and with an access log (bench/lib/targets.mjs).
const NGINX_VARIANTS = [
  { id: 'nginx-cache', log: null },
  { id: 'nginx-cache-log', log: 'buffer=4k flush=1s' },
  { id: 'nginx-cache-log-unbuffered', log: '' } // the same instructions: callgrind does not count the kernel
]
function nginxArgs (t, port, originPort) {
  const dir = path.join(TMP, t.id)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  // Every variant sends a request ID, as every Sluice response does: the log line then costs
  // only its own work, not the ID's generation (nginx makes it with OpenSSL's RAND_bytes).
  const conf = nginxConf({ dir, port, originPort, cache: true, requestId: true, accessLog: t.log, masterProcess: false })
  writeFileSync(path.join(dir, 'nginx.conf'), conf)
  return ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')]
}

async function main () {
  const originPort = await freePort()
  const origin = spawn(process.execPath, [path.join(BENCH, 'origin.mjs'), '--port', String(originPort)], { stdio: 'ignore' })
  const originUrl = `http://127.0.0.1:${originPort}`
  await waitUp(originPort, 10000).catch(() => {})

  const all = [
    { id: 'sluice', root: ROOT },
    ...(opts.baseline ? [{ id: 'sluice@base', root: opts.baseline }] : []),
    { id: scen.anchor, anchor: true },
    // The hit anchor again, sending the four headers a Sluice hit adds (--same-headers).
    ...(scen.anchor === 'fastify-buffer' && opts.scenario === 'hit1k' ? [{ id: 'fastify-buffer-h', anchor: true, script: 'fastify-buffer', args: ['--same-headers'] }] : []),
    // nginx proxy_cache hits, without and with an access log (only when named with --target):
    // what an access line costs the C anchor, measured the same way as Sluice's. One process
    // (master_process off), so valgrind sees the worker.
    ...(opts.scenario === 'hit1k' ? NGINX_VARIANTS.map((v) => ({ ...v, anchor: true, nginx: true, optIn: true })) : [])
  ]
  // sluice=FILE, sluice@base=FILE: a build with its own config. TARGET|--flag|--flag: that
  // target with V8 flags added after its own (a later flag wins).
  for (const id of opts.targets) {
    const [name, ...flags] = id.split('|')
    const [build, config] = name.split('=')
    const t = all.find((x) => x.id === (flags.length ? name : build) && (flags.length > 0 || !x.anchor)) ?? all.find((x) => x.id === build && !x.anchor)
    if (t === undefined) continue
    if (flags.length > 0) all.push({ ...t, id, ...(config !== undefined && !t.anchor ? { config } : {}), flags })
    else if (config !== undefined) all.push({ ...t, id, config })
  }
  const chosen = (opts.targets.length ? opts.targets.map((id) => all.find((t) => t.id === id)).filter(Boolean) : all.filter((t) => !t.optIn)).filter((t) => !(tls && t.anchor))
  const targets = Array.from({ length: opts.rounds }, () => chosen).flat()
  const rows = []
  for (const t of targets) {
    const port = await freePort()
    let cmd
    let exe = process.execPath
    if (t.nginx) {
      const bin = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((b) => existsSync(b))
      if (bin === undefined) { console.log(`skip ${t.id}: nginx is not installed`); continue }
      exe = bin
      cmd = nginxArgs(t, port, originPort)
    } else if (t.anchor) {
      cmd = [...(t.flags ?? []), path.join(BENCH, 'anchors', `${t.script ?? t.id.split('|')[0]}.mjs`), '--port', String(port), '--upstream', originUrl, ...(t.args ?? [])]
    } else {
      const cli = path.join(t.root, 'dist', 'src', 'cli.js')
      if (!existsSync(cli)) { console.log(`skip ${t.id}: ${cli} missing (build it)`); continue }
      const vars = { BENCH_PORT: String(port), BENCH_ADMIN_PORT: String(await freePort()), BENCH_ORIGIN_URL: originUrl, REDIS_URL: '' }
      const text = interpolate(readFileSync(path.join(BENCH, 'configs', t.config ?? opts.config ?? scen.config), 'utf8'), vars)
      const file = path.join(TMP, `${t.id.replace(/[^A-Za-z0-9.-]/g, '-')}.yaml`)
      writeFileSync(file, tls ? text.replace(/^listen: \{ (.*) \}$/m, `listen: { $1, tls: { certFile: "${TMP}/c.pem", keyFile: "${TMP}/k.pem" }, http2: true }`) : text)
      // As the build ships: with its V8 flags (dist/src/node-flags.js), when it has them.
      cmd = [...await nodeFlags(cli), ...(t.flags ?? []), cli, '--config', file]
    }
    const out = path.join(TMP, `${t.id.replace(/[^A-Za-z0-9.-]/g, '-')}-${rows.length}.cg`)
    const vg = spawn('valgrind', ['--tool=callgrind', '--instr-atstart=no', ...(opts.cacheSim ? ['--cache-sim=yes'] : []), `--callgrind-out-file=${out}`, exe, ...(opts.byFunction > 0 && exe === process.execPath ? ['--perf-basic-prof'] : []), ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] })
    // stdout is a pipe this process reads and discards, as a container runtime's log collector
    // would: the access-log scenario (--config cache-accesslog.yaml) costs what it costs there.
    vg.stdout.resume()
    let err = ''
    vg.stderr.on('data', (d) => { err += d })
    try {
      await waitUp(port)
      const badWarm = await load(port, opts.warm)
      spawnSync('callgrind_control', ['-i', 'on', String(vg.pid)])
      const bad = await load(port, opts.requests)
      spawnSync('callgrind_control', ['-i', 'off', String(vg.pid)])
      spawnSync('callgrind_control', ['-d', String(vg.pid)])
      await sleep(500)
      vg.kill('SIGTERM')
      await new Promise((resolve) => vg.once('exit', resolve))
      // The dump holds the counted window ("totals:"); the file written at exit holds none.
      let ir = 0; let dump = null; let sim = ''
      for (const f of [out, ...Array.from({ length: 9 }, (_, i) => `${out}.${i + 1}`)]) {
        if (!existsSync(f)) continue
        const text = readFileSync(f, 'utf8')
        const m = text.match(/^totals: ([\d ]+)/m)
        if (m && Number(m[1].split(' ')[0]) > ir) {
          const tot = m[1].trim().split(' ').map(Number)
          ir = tot[0]; dump = f
          if (opts.cacheSim) {
            // events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw (callgrind's simulated caches)
            const ev = (text.match(/^events: (.*)$/m)?.[1] ?? '').trim().split(' ')
            const per = (name) => (tot[ev.indexOf(name)] ?? 0) / opts.requests
            sim = `; per request: L1 data misses ${(per('D1mr') + per('D1mw')).toFixed(0)}, L1 instruction misses ${per('I1mr').toFixed(0)}, last-level misses ${(per('ILmr') + per('DLmr') + per('DLmw')).toFixed(1)}`
          }
        }
      }
      rows.push({ id: t.id, ir, per: ir / opts.requests, bad: bad + badWarm })
      console.log(`${t.id.padEnd(16)} ${(ir / opts.requests / 1000).toFixed(1).padStart(8)} k instructions/request  (${opts.proto}; ${opts.requests} requests counted after ${opts.warm} warm-up${bad + badWarm ? `; ${bad + badWarm} non-2xx/3xx` : ''}${sim})`)
      if (opts.byFunction > 0 && dump !== null) {
        for (const f of byFunction(dump, opts.requests).slice(0, opts.byFunction)) console.log(`  ${(f.per / 1000).toFixed(2).padStart(7)}k  ${f.name.slice(0, 120)}`)
        if (opts.cacheSim) {
          for (const [what, ev] of [['last-level misses', ['ILmr', 'DLmr', 'DLmw']], ['L1 instruction misses', ['I1mr']]]) {
            console.log(`  by ${what} per request:`)
            for (const f of byFunction(dump, opts.requests, ev).slice(0, opts.byFunction)) console.log(`  ${f.per.toFixed(2).padStart(8)}  ${f.name.slice(0, 120)}`)
          }
        }
        if (!process.env.KEEP) rmSync(`/tmp/perf-${vg.pid}.map`, { force: true })
      }
    } catch (e) {
      vg.kill('SIGKILL')
      console.log(`skip ${t.id}: ${e.message}\n${err.split('\n').slice(-5).join('\n')}`)
    }
  }
  origin.kill()
  agent.destroy()
  for (const ss of sessions.values()) ss.destroy()
  if (opts.rounds > 1) {
    // One row per target: its median, and the spread over the rounds.
    const runs = new Map()
    for (const r of rows) runs.set(r.id, [...(runs.get(r.id) ?? []), r.per])
    rows.length = 0
    for (const [id, pers] of runs) {
      const sorted = [...pers].sort((a, b) => a - b)
      const per = sorted[Math.floor((sorted.length - 1) / 2)]
      rows.push({ id, per })
      console.log(`${id.padEnd(16)} median ${(per / 1000).toFixed(1)}k of ${sorted.map((x) => (x / 1000).toFixed(1)).join(', ')}`)
    }
  }
  const anchor = rows.find((r) => r.id === scen.anchor)
  const sameHeaders = rows.find((r) => r.id === 'fastify-buffer-h')
  const first = rows.find((r) => r.id !== scen.anchor && r.id !== 'fastify-buffer-h')
  for (const r of rows) {
    if (r === anchor || r === sameHeaders) continue
    const parts = []
    if (anchor) parts.push(`${(r.per / anchor.per).toFixed(2)}x ${anchor.id}`)
    if (sameHeaders) parts.push(`${(r.per / sameHeaders.per).toFixed(2)}x ${sameHeaders.id}`)
    const base = rows.find((x) => x.id === 'sluice@base')
    if (base && r.id === 'sluice') parts.push(`${(r.per / base.per).toFixed(2)}x sluice@base`)
    if (first && r !== first && r.id.includes('=')) parts.push(`${(r.per / first.per).toFixed(3)}x ${first.id}`)
    if (parts.length) console.log(`  ${r.id} instructions per request: ${parts.join(', ')} (lower is better)`)
  }
  if (!process.env.KEEP) rmSync(TMP, { recursive: true, force: true }); else console.log(TMP)
}

main().catch((e) => { console.error(e); process.exit(1) })
