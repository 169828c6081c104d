// `workers: 2`: POST /admin/reload on the primary's admin port is answered only once every
// worker has applied the new file, so the very first requests after a 200 (each on a fresh
// connection, spread over both workers) already see the new config; a broken file answers 422
// and every worker keeps serving the config it had.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { get as httpGet } from 'node:http'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { tempConfig } from '../helpers/gateway.js'
import { reservePort } from '../helpers/ports.js'
import { cliCommand } from '../helpers/cli.js'
import { until } from '../helpers/wait.js'

let origin: Origin
/** Every process this file spawned (primaries) or found (their workers): killed in `after` if still alive. */
const spawned: ChildProcess[] = []
const workerPidsSeen = new Set<number>()

before(async () => { origin = await startOrigin() })
after(async () => {
  for (const child of spawned) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(t)
    }
  }
  // A worker whose primary is gone exits with it; any that did not is killed here, by pid
  // (only while that pid is still a sluice CLI process, not a reused number).
  for (const pid of workerPidsSeen) {
    try { if (/cli\.(js|ts)/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'))) process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
  }
  await origin.close()
})

interface Cluster { child: ChildProcess; out: string[]; url: string; admin: string; file: string; write: (yaml: string) => void; config: (o: ConfigOpts) => string }
interface ConfigOpts { base: string; fresh?: boolean; broken?: 'schema' | 'reference' }

async function startCluster (): Promise<Cluster> {
  // The cluster primary and its workers do not report the ports they bound: reserve them up front.
  const [port, adminPort] = [await reservePort(), await reservePort()]
  const config = ({ base, fresh = false, broken }: ConfigOpts): string => `workers: 2
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: info, accessLog: false }
shutdownGraceMs: 2000
upstreams: { origin: { url: "${origin.url}/${base}", timeoutMs: ${broken === 'schema' ? 'soon' : 5000} } }
routes:
  - { name: api, match: { pathPrefix: /api/ }, upstream: ${broken === 'reference' ? 'nowhere' : 'origin'} }
${fresh ? '  - { name: fresh, match: { pathPrefix: /fresh/ }, upstream: origin }\n' : ''}`
  const { file } = tempConfig(config({ base: 'v1' }))
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  spawned.push(child)
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const c: Cluster = { child, out, url: `http://127.0.0.1:${port}`, admin: `http://127.0.0.1:${adminPort}`, file, write: (yaml) => writeFileSync(file, yaml), config }
  await until('both workers ready', async () => {
    if (child.exitCode !== null) throw new Error('sluice exited')
    const r = await (await request(c.admin + '/readyz')).body.json() as { workers?: { ready: number } }
    return r.workers?.ready === 2
  }, { tries: 400, detail: () => out.join('') })
  for (const pid of workerPids(child.pid!)) workerPidsSeen.add(pid)
  return c
}

async function stop (c: Cluster): Promise<number | null> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return c.child.exitCode
  const exited = once(c.child, 'exit')
  c.child.kill('SIGTERM')
  const [code] = await exited
  return code as number | null
}

/** The primary's worker processes (its other children, like tsx's esbuild, are left out). */
function workerPids (primary: number): number[] {
  let pids: number[] = []
  try { pids = execFileSync('pgrep', ['-P', String(primary)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number) } catch { return [] }
  return pids.filter((p) => { try { return /cli\.(js|ts)/.test(readFileSync(`/proc/${p}/cmdline`, 'utf8')) } catch { return false } })
}

/** One request on a connection of its own (no agent, Connection: close), so the cluster spreads them over the workers. */
function oneShot (url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

/** Requests served so far by each worker (by pid), from the primary's /admin/status. */
async function perWorker (c: Cluster): Promise<Map<number, number>> {
  const s = await (await request(c.admin + '/admin/status')).body.json() as { perWorker: { pid: number; requests: number }[] }
  return new Map(s.perWorker.map((w) => [w.pid, w.requests]))
}

async function reload (c: Cluster): Promise<{ status: number; body: { ok?: boolean; version?: string; errors?: string[]; error?: string } & Record<string, unknown> }> {
  const r = await request(c.admin + '/admin/reload', { method: 'POST' })
  return { status: r.statusCode, body: await r.body.json() as never }
}

async function configVersion (c: Cluster): Promise<string> {
  return (await (await request(c.admin + '/admin/config')).body.json() as { version: string }).version
}

/** 20 requests, each on a fresh connection, sent one after another with nothing in between. */
async function burst (c: Cluster, path: string): Promise<{ status: number; body: string }[]> {
  const results: { status: number; body: string }[] = []
  for (let i = 0; i < 20; i++) results.push(await oneShot(c.url + path))
  return results
}

async function assertBothWorkersServed (c: Cluster, before: Map<number, number>, what: string): Promise<void> {
  const now = await perWorker(c)
  assert.equal(now.size, 2, `two workers report (${what})`)
  for (const [pid, n] of now) {
    assert.ok(n > (before.get(pid) ?? 0), `worker ${pid} served some of the requests (${what}): before ${JSON.stringify([...before])}, after ${JSON.stringify([...now])}`)
  }
}

/** Every one of 20 fresh-connection requests sees the config with upstream base `base`, and /fresh/ routed or not. */
async function assertEveryWorkerOn (c: Cluster, base: string, fresh: boolean, what: string): Promise<void> {
  const beforeApi = await perWorker(c)
  const api = await burst(c, '/api/x')
  for (const [i, r] of api.entries()) {
    assert.equal(r.status, 200, `/api/x request ${i} (${what})`)
    assert.equal(r.body, `origin GET /${base}/api/x`, `/api/x request ${i} went to the ${base} upstream (${what})`)
  }
  await assertBothWorkersServed(c, beforeApi, `${what}, /api/x`)
  const beforeFresh = await perWorker(c)
  const fr = await burst(c, '/fresh/y')
  for (const [i, r] of fr.entries()) {
    if (fresh) {
      assert.equal(r.status, 200, `/fresh/y request ${i} is routed (${what})`)
      assert.equal(r.body, `origin GET /${base}/fresh/y`, `/fresh/y request ${i} (${what})`)
    } else {
      assert.equal(r.status, 404, `/fresh/y request ${i} has no route (${what})`)
      assert.match(r.body, /SLUICE_ERR_NO_ROUTE/, `/fresh/y request ${i} (${what})`)
    }
  }
  // A 404 has no route to count under: only a routed burst can show both workers answered it.
  if (fresh) await assertBothWorkersServed(c, beforeFresh, `${what}, /fresh/y`)
}

test('workers: 2: right after a reload answers 200, every request on a fresh connection, on either worker, sees the new config', async () => {
  // (With round-robin scheduling the primary hands each connection to a worker over the same
  // IPC channel as the reload, so this alone would rarely catch an early answer: the next test
  // holds one worker back to show the answer waits for it.)
  const c = await startCluster()
  try {
    await assertEveryWorkerOn(c, 'v1', false, 'as started')
    // Several reloads in a row, each checked with no pause after its answer.
    const steps: ConfigOpts[] = [{ base: 'v2', fresh: true }, { base: 'v3', fresh: false }, { base: 'v4', fresh: true }]
    for (const step of steps) {
      const before = await configVersion(c)
      c.write(c.config(step))
      const r = await reload(c)
      assert.equal(r.status, 200, JSON.stringify(r.body))
      assert.equal(r.body.ok, true)
      // The very first requests after the answer: nothing (not even another admin call) in between.
      await assertEveryWorkerOn(c, step.base, step.fresh ?? false, `right after the 200 of the reload to ${step.base}`)
      const now = await configVersion(c)
      assert.notEqual(now, before, 'the primary swapped its snapshot')
      // The answer is for this file, unless the file watcher's own reload of it ran first
      // (then this one finds it unchanged); the primary reports this file's version either way.
      assert.equal(r.body.version, now)
    }
    assert.equal(c.child.exitCode, null, 'the primary still runs')
    assert.equal(workerPids(c.child.pid!).length, 2, 'no worker was replaced along the way')
  } finally { assert.equal(await stop(c), 0, c.out.join('')) }
})

/** Log records of the workers' own reloads (the primary logs its own with trigger "admin" or "file"). */
function workerReloadLogs (c: Cluster): Record<string, unknown>[] {
  const recs: Record<string, unknown>[] = []
  for (const line of c.out.join('').split('\n')) {
    if (!line.includes('config reloaded')) continue
    try { recs.push(JSON.parse(line) as Record<string, unknown>) } catch { /* a partial line: not yet */ }
  }
  return recs.filter((r) => r.msg === 'config reloaded' && r.trigger === 'primary')
}

test('workers: 2: with one worker stopped, the reload stays unanswered until that worker has applied it too', async () => {
  const c = await startCluster()
  const pids = workerPids(c.child.pid!)
  assert.equal(pids.length, 2)
  const [paused] = pids
  let stopped = false
  try {
    await assertEveryWorkerOn(c, 'v1', false, 'as started')
    c.write(c.config({ base: 'v2', fresh: true }))
    process.kill(paused, 'SIGSTOP')
    stopped = true
    let answered = false
    const pending = reload(c).finally(() => { answered = true })
    // The running worker applies it (and logs so); the stopped one cannot.
    await until('the running worker to apply the reload', () => workerReloadLogs(c).length >= 1, { tries: 400, detail: () => c.out.join('') })
    // One more round trip to the primary, so an answer it had already sent would have arrived.
    await (await request(c.admin + '/readyz')).body.dump()
    assert.equal(answered, false, 'the reload is not answered while a worker has not applied it')
    assert.equal(workerReloadLogs(c).length, 1, 'only the running worker applied it so far')
    process.kill(paused, 'SIGCONT')
    stopped = false
    const r = await pending
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.ok, true)
    await assertEveryWorkerOn(c, 'v2', true, 'right after the 200, the stopped worker having resumed')
    await until('both workers to have logged the reload', () => workerReloadLogs(c).length === 2, { detail: () => c.out.join('') })
  } finally {
    if (stopped) process.kill(paused, 'SIGCONT')
    assert.equal(await stop(c), 0, c.out.join(''))
  }
})

test('workers: 2: a worker that becomes ready while a reload is in progress runs the new config too once the reload answers 200', async () => {
  const c = await startCluster()
  const [paused, victim] = workerPids(c.child.pid!)
  const frozen = new Set<number>()
  const freeze = (pid: number) => { process.kill(pid, 'SIGSTOP'); frozen.add(pid) }
  const thaw = (pid: number) => { process.kill(pid, 'SIGCONT'); frozen.delete(pid) }
  try {
    // A replacement that is still starting (held) when the reload begins, so it is not asked.
    process.kill(victim, 'SIGKILL')
    let fresh: number | undefined
    await until('the replacement worker process', () => {
      fresh = workerPids(c.child.pid!).find((p) => p !== paused && p !== victim)
      return fresh !== undefined
    }, { intervalMs: 5, tries: 2000, detail: () => c.out.join('') })
    workerPidsSeen.add(fresh!)
    freeze(fresh!)
    // The other worker is held too, so the reload stays in progress while the replacement comes up.
    freeze(paused)
    c.write(c.config({ base: 'v2', fresh: true }))
    let answered = false
    const pending = reload(c).finally(() => { answered = true })
    // The reload is read and sent to the held worker long before a node process has started.
    thaw(fresh!)
    await until('the replacement to be ready', async () => {
      const r = await (await request(c.admin + '/readyz')).body.json() as { workers?: { ready: number } }
      return r.workers?.ready === 2
    }, { tries: 400, detail: () => c.out.join('') })
    assert.equal(answered, false, 'the reload waits for the held worker')
    thaw(paused)
    const r = await pending
    assert.equal(r.status, 200, JSON.stringify(r.body))
    await assertEveryWorkerOn(c, 'v2', true, 'right after the 200, the replacement having come up during the reload')
    // A retry of the same file answers 200 and changes nothing.
    const again = await reload(c)
    assert.equal(again.status, 200, JSON.stringify(again.body))
    await assertEveryWorkerOn(c, 'v2', true, 'after a retry of the same file')
  } finally {
    for (const pid of frozen) process.kill(pid, 'SIGCONT')
    assert.equal(await stop(c), 0, c.out.join(''))
  }
})

test('workers: 2: a broken file answers 422 and every worker keeps the old config', async () => {
  const c = await startCluster()
  try {
    // Move off the startup config first, so "old" is a config that came by reload.
    c.write(c.config({ base: 'v2', fresh: true }))
    const good = await reload(c)
    assert.equal(good.status, 200, JSON.stringify(good.body))
    const version = await configVersion(c)
    await assertEveryWorkerOn(c, 'v2', true, 'after the good reload')

    const brokenFiles: [ConfigOpts['broken'], RegExp][] = [['schema', /timeoutMs/], ['reference', /nowhere/]]
    for (const [broken, mentions] of brokenFiles) {
      // The broken file would also move the upstream base and drop /fresh/: neither may happen.
      c.write(c.config({ base: 'v9', fresh: false, broken }))
      const bad = await reload(c)
      assert.equal(bad.status, 422, JSON.stringify(bad.body))
      assert.equal(bad.body.ok, false)
      assert.equal(bad.body.error, 'SLUICE_ERR_CONFIG_INVALID')
      assert.ok(Array.isArray(bad.body.errors) && bad.body.errors.some((e) => mentions.test(e)), `the errors name the problem: ${JSON.stringify(bad.body.errors)}`)
      assert.equal(bad.body.version, version, 'the answer names the version that keeps serving')
      await assertEveryWorkerOn(c, 'v2', true, `right after the 422 for the ${broken} error`)
      assert.equal(await configVersion(c), version, 'the primary kept its snapshot')
      const ready = await (await request(c.admin + '/readyz')).body.json() as { status: string; degraded: string[] }
      assert.ok(ready.degraded.includes('config'), `readyz reports the failed reload: ${JSON.stringify(ready)}`)
    }

    // The file is fixed again: the next reload reaches every worker.
    c.write(c.config({ base: 'v3', fresh: false }))
    const fixed = await reload(c)
    assert.equal(fixed.status, 200, JSON.stringify(fixed.body))
    await assertEveryWorkerOn(c, 'v3', false, 'right after the 200 of the fixed file')
    const ready = await (await request(c.admin + '/readyz')).body.json() as { degraded: string[] }
    assert.ok(!ready.degraded.includes('config'), `a good reload clears the config degradation: ${JSON.stringify(ready)}`)
    assert.equal(workerPids(c.child.pid!).length, 2, 'no worker was replaced along the way')
  } finally { assert.equal(await stop(c), 0, c.out.join('')) }
})
