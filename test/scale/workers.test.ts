// `workers: 2`: a real primary with two worker processes sharing one proxy port.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess, execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { get as httpGet, createServer } from 'node:http'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { tempConfig } from '../helpers/gateway.js'
import { reservePort } from '../helpers/ports.js'
import { cliCommand } from '../helpers/cli.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => {
  origin = await startOrigin()
  origin.on('/slow', (_req, res) => { setTimeout(() => res.end('slow done'), 600) })
})
after(async () => { await origin.close() })

interface Cluster { child: ChildProcess; out: string[]; url: string; admin: string; file: string; config: (extra?: string) => string }

async function startCluster (): Promise<Cluster> {
  // Known up front: the cluster primary and its workers do not report the ports they bound.
  const [port, adminPort] = [await reservePort(), await reservePort()]
  const config = (extra = '') => `workers: 2
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: info, accessLog: false }
shutdownGraceMs: 5000
upstreams: { origin: { url: "${origin.url}", timeoutMs: 5000 } }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
  - name: limited
    match: { pathPrefix: /limited/ }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: 0.01, burst: 10, key: ip } }
${extra}`
  const { file } = tempConfig(config())
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const c = { child, out, url: `http://127.0.0.1:${port}`, admin: `http://127.0.0.1:${adminPort}`, file, config }
  try {
    await waitReady(c, 2)
  } catch (err) {
    // A cluster that did not come up must not outlive the test (its pipes would keep this file running).
    child.kill('SIGKILL')
    throw err
  }
  return c
}

async function readyz (c: Cluster): Promise<{ status: string; workers: { ready: number; restarts: number } }> {
  try { return await (await request(c.admin + '/readyz')).body.json() as never } catch { return { status: 'down', workers: { ready: 0, restarts: 0 } } }
}

async function waitReady (c: Cluster, workers: number, restarts = 0): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const r = await readyz(c)
    if (r.workers?.ready === workers && r.workers.restarts >= restarts) return
    if (c.child.exitCode !== null) throw new Error('sluice exited: ' + c.out.join(''))
    await sleep(50)
  }
  throw new Error('workers not ready: ' + c.out.join(''))
}

async function stop (c: Cluster): Promise<number | null> {
  if (c.child.exitCode !== null) return c.child.exitCode
  c.child.kill('SIGTERM')
  const [code] = await once(c.child, 'exit')
  return code as number | null
}

/** The primary's worker processes (its other children, like tsx's esbuild, are left out). */
function workerPids (primary: number): number[] {
  let pids: number[] = []
  try { pids = execFileSync('pgrep', ['-P', String(primary)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number) } catch { return [] }
  return pids.filter((p) => { try { return /cli\.(js|ts)/.test(readFileSync(`/proc/${p}/cmdline`, 'utf8')) } catch { return false } })
}

/** One request on a connection of its own (Connection: close), so the cluster spreads them over the workers. */
function oneShot (url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) }).on('error', reject)
  })
}

async function status (c: Cluster): Promise<{ perWorker: { pid: number; requests: number }[]; routes: { name: string; latency: { count: number } }[] }> {
  return await (await request(c.admin + '/admin/status')).body.json() as never
}

test('two workers serve one port, and /metrics on the primary counts every request exactly', async () => {
  const c = await startCluster()
  try {
    assert.equal(workerPids(c.child.pid!).length, 2)
    const n = 60
    const statuses = await Promise.all(Array.from({ length: n }, async () => { const r = await request(c.url + '/count'); await r.body.dump(); return r.statusCode }))
    assert.ok(statuses.every((s) => s === 200))
    const metrics = await (await request(c.admin + '/metrics')).body.text()
    const line = metrics.split('\n').find((l) => l.startsWith('sluice_http_requests_total{route="all",method="GET",status_class="2xx",cache="none"}'))
    assert.equal(Number(line?.split(' ').at(-1)), n)
    // One exposition: every family once (the primary's own are not repeated), build info once.
    const types = metrics.split('\n').filter((l) => l.startsWith('# TYPE '))
    assert.equal(new Set(types).size, types.length, 'no family appears twice')
    assert.match(metrics, /^sluice_build_info\{[^}]*\} 1$/m)
    assert.match(metrics, /^sluice_circuit_state\{upstream="origin"\} 0$/m, 'breaker state is the max over workers, not a sum')
    // Spread over both workers (one connection per request), and counted exactly again.
    for (let i = 0; i < 20; i++) assert.equal(await oneShot(c.url + '/spread'), 200)
    const s = await status(c)
    assert.equal(s.perWorker.length, 2)
    assert.ok(s.perWorker.every((w) => w.requests > 0), `both workers served: ${JSON.stringify(s.perWorker)}`)
    assert.equal(s.perWorker.reduce((a, w) => a + w.requests, 0), n + 20)
    assert.equal(s.routes.find((r) => r.name === 'all')?.latency.count, n + 20, '/admin/status latency counts every worker')
  } finally { assert.equal(await stop(c), 0) }
})

test('a killed worker is replaced and requests keep being answered', async () => {
  const c = await startCluster()
  try {
    const [victim] = workerPids(c.child.pid!)
    process.kill(victim, 'SIGKILL')
    await waitReady(c, 2, 1)
    const after = workerPids(c.child.pid!)
    assert.equal(after.length, 2)
    assert.ok(!after.includes(victim))
    for (let i = 0; i < 10; i++) { const r = await request(c.url + '/after'); await r.body.dump(); assert.equal(r.statusCode, 200) }
  } finally { await stop(c) }
})

test('after a refused reload, a replaced worker starts on the running config, not on the bad file', async () => {
  const c = await startCluster()
  try {
    writeFileSync(c.file, c.config().replace('timeoutMs: 5000', 'timeoutMs: soon'))
    const bad = await request(c.admin + '/admin/reload', { method: 'POST' })
    assert.equal(bad.statusCode, 422)
    await bad.body.dump()
    const [victim] = workerPids(c.child.pid!)
    process.kill(victim, 'SIGKILL')
    await waitReady(c, 2, 1)
    for (let i = 0; i < 8; i++) assert.equal(await oneShot(c.url + '/still'), 200)
  } finally { await stop(c) }
})

test('a bad reload changes no worker; a good one reaches every worker', async () => {
  const c = await startCluster()
  try {
    writeFileSync(c.file, c.config().replace('timeoutMs: 5000', 'timeoutMs: soon'))
    const bad = await request(c.admin + '/admin/reload', { method: 'POST' })
    assert.equal(bad.statusCode, 422)
    await bad.body.dump()
    const afterBad = await (await request(c.admin + '/metrics')).body.text()
    assert.match(afterBad, /^sluice_config_reloads_total\{result="failure"\} 1$/m, 'counted once, by the primary')
    assert.match(afterBad, /^sluice_config_reloads_total\{result="success"\} 0$/m)
    for (let i = 0; i < 6; i++) assert.equal(await oneShot(c.url + '/still'), 200, 'the workers kept the old config')
    writeFileSync(c.file, c.config('  - { name: other, match: { pathPrefix: /other/ }, upstream: origin }\n'))
    const good = await request(c.admin + '/admin/reload', { method: 'POST' })
    assert.equal(good.statusCode, 200)
    await good.body.dump()
    await sleep(300)
    for (let i = 0; i < 20; i++) { const r = await request(c.url + '/other/x'); await r.body.dump(); assert.equal(r.statusCode, 200) }
    const metrics = await (await request(c.admin + '/metrics')).body.text()
    const line = metrics.split('\n').find((l) => l.startsWith('sluice_http_requests_total{route="other"'))
    assert.equal(Number(line?.split(' ').at(-1)), 20, 'both workers route /other/ to the new route')
  } finally { await stop(c) }
})

test('a per-client limit holds across two workers without Redis: the primary holds the bucket', async () => {
  const c = await startCluster()
  try {
    // burst 10 at 0.01/s: exactly 10 of 30 pass, whichever worker each connection reaches.
    // (Each worker's own bucket would let 10 through per worker.)
    const codes: number[] = []
    for (let i = 0; i < 30; i++) codes.push(await oneShot(c.url + '/limited/x'))
    assert.equal(codes.filter((s) => s === 200).length, 10)
    assert.equal(codes.filter((s) => s === 429).length, 20)
    const s = await status(c)
    assert.ok(s.perWorker.every((w) => w.requests > 0), `both workers served: ${JSON.stringify(s.perWorker)}`)
    const metrics = await (await request(c.admin + '/metrics')).body.text()
    assert.match(metrics, /^sluice_rate_limited_total\{scope="client",name="limited"\} 20$/m)
  } finally { await stop(c) }
})

test('SIGTERM drains every worker: an in-flight slow request completes with 200, then exit 0', async () => {
  const c = await startCluster()
  const pending = request(c.url + '/slow')
  await sleep(150)
  c.child.kill('SIGTERM')
  // Draining: /readyz says 503 at once, so a load balancer stops sending (it said 200).
  let status = 0
  for (let i = 0; i < 40 && status !== 503; i++) { status = (await request(c.admin + '/readyz')).statusCode; if (status !== 503) await sleep(10) }
  assert.equal(status, 503)
  const r = await pending
  assert.equal(r.statusCode, 200)
  assert.equal(await r.body.text(), 'slow done')
  const [code] = await once(c.child, 'exit')
  assert.equal(code, 0)
})

test('SIGTERM while a replacement worker is still starting: that worker drains too once it is up, then exit 0', async () => {
  const c = await startCluster()
  const [survivor, victim] = workerPids(c.child.pid!)
  let fresh: number | undefined
  let frozen = false
  try {
    process.kill(victim, 'SIGKILL')
    await until('the replacement worker process', () => {
      fresh = workerPids(c.child.pid!).find((p) => p !== survivor && p !== victim)
      return fresh !== undefined
    }, { intervalMs: 5, tries: 2000, detail: () => c.out.join('') })
    // Held before it can report ready, so the shutdown below finds it still starting.
    process.kill(fresh!, 'SIGSTOP')
    frozen = true
    assert.equal((await readyz(c)).workers.ready, 1, 'the replacement is not ready yet')
    const exited = once(c.child, 'exit')
    c.child.kill('SIGTERM')
    await until('the primary to start draining', () => c.out.join('').includes('draining every worker'), { detail: () => c.out.join('') })
    process.kill(fresh!, 'SIGCONT')
    frozen = false
    const [code] = await exited
    assert.equal(code, 0)
    const drained = c.out.join('').split('\n').filter((l) => l.includes('"worker draining"'))
    assert.equal(drained.length, 2, `both workers drained (the replacement ${fresh} too): ${c.out.join('')}`)
  } finally {
    if (frozen) process.kill(fresh!, 'SIGCONT')
    await stop(c)
  }
})

test('a worker that cannot start (its port is taken) exits, and the primary replaces it with backoff', async () => {
  const blocker = createServer(() => {})
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  const taken = (blocker.address() as { port: number }).port
  const adminPort = await reservePort()
  const { file } = tempConfig(`workers: 2
listen: { host: 127.0.0.1, port: ${taken} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: info, accessLog: false }
upstreams: { origin: { url: "${origin.url}" } }
routes: [{ name: all, upstream: origin }]
`)
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  try {
    // Each failed worker exits and is replaced: the primary counts restarts (it counted none, the workers hung).
    for (let i = 0; i < 300; i++) {
      const r = await readyz({ admin: `http://127.0.0.1:${adminPort}` } as Cluster)
      if (r.workers?.restarts >= 2) break
      await sleep(50)
    }
    const r = await readyz({ admin: `http://127.0.0.1:${adminPort}` } as Cluster)
    assert.ok(r.workers.restarts >= 2, out.join(''))
    assert.match(out.join(''), /cannot listen on 127\.0\.0\.1:\d+: the address is already in use/)
  } finally {
    child.kill('SIGTERM')
    await once(child, 'exit')
    blocker.close()
  }
})
