#!/usr/bin/env node
// CPU time per request: what one feature costs, as the server's own CPU time (user + system,
// from /proc) over a fixed number of requests, not as req/s. Each target runs in a fresh
// process pinned to core 1, is warmed, then serves --requests requests from h2load (HTTP/1.1,
// pinned to core 0); its CPU ticks before and after are read from /proc/PID/stat. Rounds
// rotate the order of the targets, and every round starts every target afresh, so one slow
// process (this shared machine has them: docs/benchmarks.md) shows as spread, not as a result.
// The figure quoted is the median over rounds of each target's CPU per request divided by the
// first target's in the same round (paired ratios), with the medians of the raw figures beside it.
//
//   node bench/cpu.mjs --path /pass --target off=passthrough.yaml --target t5=passthrough-tracing5.yaml
//                      [--rounds 5] [--requests 200000] [--warm 30000] [--connections 50]
//   node bench/cpu.mjs --path /hit1k --target sluice=cache.yaml --target bare=anchor:fastify-buffer
//                      --target bare-h=anchor:fastify-buffer,--same-headers
//
// A target is NAME=CONFIG (a file in bench/configs/, run with this checkout's dist/ and its V8
// flags; NAME=CONFIG|--flag|--flag adds V8 flags after those, and a later flag wins) or
// NAME=anchor:SCRIPT[,ARG...][|--flag...] (bench/anchors/SCRIPT.mjs, run with Node's default
// flags unless some are given). Needs h2load (Debian's nghttp2-client) and a built dist/
// (npm run build).
//
// --interleave N: every round starts all the targets at once (each pinned to core 1, idle while
// another is loaded), warms each, then loads them in turn N requests at a time until each has
// served --requests. Each target's CPU is counted over the whole window, its idle turns
// included (a batch exported on a timer while another target is loaded is still its cost).
// This machine's speed drifts: one process serving the same requests ran at 89 µs and at 165 µs
// per request within three minutes; targets measured one after another see different machines,
// targets interleaved every few thousand requests see the same one. Rounds still start fresh
// processes, so a process that lands in a slow state shows as spread.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, interpolate, nodeFlags } from './lib/targets.mjs'
import { setTimeout as sleep } from 'node:timers/promises'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const BENCH = path.join(ROOT, 'bench')

const opts = { path: '/pass', rounds: 5, requests: 200000, warm: 30000, connections: 50, targets: [], out: null, interleave: 0 }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]; const val = () => argv[++i]
  if (a === '--path') opts.path = val()
  else if (a === '--rounds') opts.rounds = Number(val())
  else if (a === '--requests') opts.requests = Number(val())
  else if (a === '--warm') opts.warm = Number(val())
  else if (a === '--connections') opts.connections = Number(val())
  else if (a === '--target') { const v = val(); const eq = v.indexOf('='); opts.targets.push({ id: v.slice(0, eq), spec: v.slice(eq + 1) }) }
  else if (a === '--out') opts.out = val()
  else if (a === '--interleave') opts.interleave = Number(val())
  else { console.error(`unknown argument ${a}`); process.exit(2) }
}
if (!Number.isInteger(opts.interleave) || opts.interleave < 0) { console.error('--interleave takes a number of requests'); process.exit(2) }
if (opts.targets.length < 1 || opts.targets.some((t) => !t.id || !t.spec)) { console.error('give at least one --target NAME=CONFIG or NAME=anchor:SCRIPT'); process.exit(2) }
if (spawnSync('h2load', ['--version']).status !== 0) { console.error('h2load is missing: apt-get install nghttp2-client'); process.exit(2) }
const cli = path.join(ROOT, 'dist', 'src', 'cli.js')
if (opts.targets.some((t) => !t.spec.startsWith('anchor:')) && !existsSync(cli)) { console.error(`${cli} is missing: npm run build`); process.exit(2) }
const TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100

const TMP = mkdtempSync(path.join(os.tmpdir(), 'sluice-cpu-'))

function get (port, p) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)) })
    req.on('error', reject)
  })
}
async function waitUp (port, p, ms = 20000) {
  const end = Date.now() + ms
  for (;;) {
    try { return await get(port, p) } catch { if (Date.now() > end) throw new Error(`nothing answered on port ${port}`) }
    await sleep(100)
  }
}
/** user and system CPU seconds of a process (all its threads) */
function cpuOf (pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ') // fields from 3 (state) on
  return { user: Number(rest[11]) / TCK, sys: Number(rest[12]) / TCK }
}
function h2load (port, n) {
  const r = spawnSync('taskset', ['-c', '0', 'h2load', '--h1', '-n', String(n), '-c', String(opts.connections), `http://127.0.0.1:${port}${opts.path}`], { encoding: 'utf8' })
  const ok = Number(r.stdout.match(/(\d+) succeeded/)?.[1] ?? 0)
  const rps = Number(r.stdout.match(/finished in [\d.]+m?s, ([\d.]+) req\/s/)?.[1] ?? 0)
  const s2xx = Number(r.stdout.match(/status codes: (\d+) 2xx/)?.[1] ?? 0)
  return { ok, rps, s2xx }
}

async function command (t, port, originUrl) {
  if (t.spec.startsWith('anchor:')) {
    const [anchor, ...flags] = t.spec.slice(7).split('|')
    const [script, ...args] = anchor.split(',')
    return [...flags, path.join(BENCH, 'anchors', `${script}.mjs`), '--port', String(port), '--upstream', originUrl, ...args]
  }
  const vars = { BENCH_PORT: String(port), BENCH_ADMIN_PORT: String(await freePort()), BENCH_ORIGIN_URL: originUrl, REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' }
  const [config, ...extra] = t.spec.split('|')
  const text = interpolate(readFileSync(path.join(BENCH, 'configs', config), 'utf8'), vars)
  const file = path.join(TMP, `${t.id}.yaml`)
  writeFileSync(file, text)
  return [...await nodeFlags(cli), ...extra, cli, '--config', file]
}

/** A target's process, started, answering and warmed. */
async function start (t, originUrl) {
  const port = await freePort()
  const child = spawn('taskset', ['-c', '1', process.execPath, ...(await command(t, port, originUrl))], { stdio: ['ignore', 'ignore', 'pipe'] })
  const p = { t, port, child, err: '' }
  child.stderr.on('data', (d) => { p.err += d })
  try {
    const status = await waitUp(port, opts.path)
    if (status >= 400) throw new Error(`${opts.path} answered ${status}`)
    h2load(port, opts.warm)
  } catch (e) {
    await stop(p)
    throw failed(p, e)
  }
  return p
}
const failed = (p, e) => new Error(`${p.t.id}: ${e.message}${p.err ? `\n${p.err.split('\n').slice(-5).join('\n')}` : ''}`)
async function stop (p) {
  p.child.kill('SIGINT')
  const exited = new Promise((resolve) => p.child.once('exit', resolve))
  if (await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]) === false) { p.child.kill('SIGKILL'); await exited }
}
const perRequest = (a, b, n, rps) => {
  const user = (b.user - a.user) * 1e6 / n
  const sys = (b.sys - a.sys) * 1e6 / n
  return { us: user + sys, user, sys, rps }
}

async function measure (t, originUrl) {
  const p = await start(t, originUrl)
  try {
    const a = cpuOf(p.child.pid)
    const r = h2load(p.port, opts.requests)
    const b = cpuOf(p.child.pid)
    if (r.ok < opts.requests) throw new Error(`only ${r.ok} of ${opts.requests} requests succeeded`)
    return perRequest(a, b, opts.requests, r.rps)
  } catch (e) {
    throw failed(p, e)
  } finally {
    await stop(p)
  }
}

/** --interleave: all targets of a round at once, loaded in turn --interleave requests at a time. */
async function measureInterleaved (order, originUrl) {
  const procs = []
  try {
    for (const t of order) procs.push(await start(t, originUrl))
    const before = procs.map((p) => cpuOf(p.child.pid))
    const served = procs.map(() => 0)
    const rps = procs.map(() => [])
    for (let turn = 0; served.some((n) => n < opts.requests); turn++) {
      for (let k = 0; k < procs.length; k++) {
        const i = (k + turn) % procs.length // who goes first changes every turn
        const n = Math.min(opts.interleave, opts.requests - served[i])
        if (n === 0) continue
        const r = h2load(procs[i].port, n)
        if (r.ok < n) throw failed(procs[i], new Error(`only ${r.ok} of ${n} requests succeeded`))
        served[i] += n
        rps[i].push(r.rps)
      }
    }
    const after = procs.map((p) => cpuOf(p.child.pid))
    return procs.map((p, i) => perRequest(before[i], after[i], opts.requests, median(rps[i])))
  } finally {
    await Promise.all(procs.map(stop))
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }

async function main () {
  const originPort = await freePort()
  const origin = spawn('taskset', ['-c', '0', process.execPath, path.join(BENCH, 'origin.mjs'), '--port', String(originPort)], { stdio: 'ignore' })
  const originUrl = `http://127.0.0.1:${originPort}`
  const stop = () => { origin.kill(); rmSync(TMP, { recursive: true, force: true }) }
  process.on('SIGINT', () => { stop(); process.exit(130) })
  await waitUp(originPort, '/pass', 10000)
  const load = os.loadavg()[0]
  if (load > 1) console.log(`warning: load average ${load.toFixed(2)}: figures will be noisy`)
  const res = new Map(opts.targets.map((t) => [t.id, []]))
  for (let r = 0; r < opts.rounds; r++) {
    const order = opts.targets.map((_, i) => opts.targets[(i + r) % opts.targets.length])
    const line = []
    const ms = opts.interleave > 0 ? await measureInterleaved(order, originUrl) : []
    for (const [i, t] of order.entries()) {
      const m = opts.interleave > 0 ? ms[i] : await measure(t, originUrl)
      res.get(t.id)[r] = m
      line.push(`${t.id} ${m.us.toFixed(1)}`)
    }
    console.log(`round ${r + 1}: ${line.join(', ')} µs/request`)
  }
  stop()
  const first = opts.targets[0].id
  const rows = ['| target | CPU µs/request (median) | user | system | spread | req/s (median) | paired ratio to ' + first + ' (median, range) |', '|---|---|---|---|---|---|---|']
  for (const t of opts.targets) {
    const ms = res.get(t.id)
    const us = ms.map((m) => m.us)
    const ratios = ms.map((m, i) => m.us / res.get(first)[i].us)
    const spread = (Math.max(...us) - Math.min(...us)) / median(us)
    rows.push(`| ${t.id} (${t.spec}) | ${median(us).toFixed(1)} | ${median(ms.map((m) => m.user)).toFixed(1)} | ${median(ms.map((m) => m.sys)).toFixed(1)} | ${(100 * spread).toFixed(0)} % | ${Math.round(median(ms.map((m) => m.rps)))} | ${t.id === first ? '1' : `${median(ratios).toFixed(3)}x (${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`} |`)
  }
  const how = opts.interleave > 0 ? `the round's targets running at once, loaded in turn ${opts.interleave} requests at a time` : 'one target at a time'
  const head = `${opts.path}, ${opts.rounds} rounds, ${opts.requests} requests measured after ${opts.warm} of warm-up, ${opts.connections} connections; ${how}; commit ${spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim()}`
  console.log(`\n${head}\n\n${rows.join('\n')}`)
  if (opts.out) writeFileSync(opts.out, `${head}\n\n${rows.join('\n')}\n`)
}

main().catch((e) => { console.error(e.message); process.exit(1) })
