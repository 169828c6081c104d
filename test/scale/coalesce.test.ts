// Miss coalescing across replicas: three Sluice processes on one Redis send one request upstream
// per key, through a fill lease in Redis and a "filled" message. When the lease holder is too
// slow, or Redis is gone, each replica falls back to coalescing its own misses.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool, request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { tempConfig, startTestGateway } from '../helpers/gateway.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'
import { cliCommand, startedUrls } from '../helpers/cli.js'
import { reservePort } from '../helpers/ports.js'

let origin: Origin
let redis: RedisHandle
const replicas: Replica[] = []

/** Behind one load balancer, every replica sees the same Host (it is part of the cache key). */
const HOST = { host: 'fleet.example' }

interface Replica { child: ChildProcess; out: string[]; url: string; admin: string; pool: Pool }

before(async () => {
  origin = await startOrigin()
  // A slow, cacheable origin: every request that reaches it is counted by its URL.
  origin.on('/hot', (_req, res) => { setTimeout(() => { res.setHeader('cache-control', 'max-age=60'); res.end('hot body') }, 300) })
  origin.on('/private', (_req, res) => { setTimeout(() => { res.setHeader('cache-control', 'private'); res.end('mine') }, 300) })
  // The first request hangs (a lease holder that is stuck, or has died); later ones are quick.
  let stuck = 0
  origin.on('/stuck', (_req, res) => { setTimeout(() => { res.setHeader('cache-control', 'max-age=60'); res.end('late') }, stuck++ === 0 ? 3000 : 50) })
  redis = await startRedis()
  for (let i = 0; i < 3; i++) replicas.push(await startReplica())
})
after(async () => {
  for (const r of replicas) {
    await r.pool.close()
    if (r.child.exitCode === null) { r.child.kill('SIGTERM'); await once(r.child, 'exit') }
  }
  await redis.stop()
  await origin.close()
})

async function startReplica (): Promise<Replica> {
  // Port 0: the OS picks both ports; the "sluice started" line (logged at info) reports them.
  const { file } = tempConfig(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
redis: { url: "${redis.url}", keyPrefix: "${redis.prefix}" }
upstreams: { origin: { url: "${origin.url}", timeoutMs: 10000, connections: 512 } }
routes:
  - name: slow-fill
    match: { pathPrefix: /stuck }
    upstream: origin
    cache: { enabled: true, coalesceTimeoutMs: 400 }
  - name: all
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true, coalesceTimeoutMs: 5000 }
`)
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  let urls = startedUrls(out)
  for (let i = 0; urls === null; i++) {
    if (child.exitCode !== null) throw new Error('sluice exited: ' + out.join(''))
    if (i >= 400) { child.kill('SIGKILL'); throw new Error('replica did not start: ' + out.join('')) }
    await sleep(50)
    urls = startedUrls(out)
  }
  const r: Replica = { child, out, url: urls.url, admin: urls.adminUrl, pool: new Pool(urls.url, { connections: 200, pipelining: 0 }) }
  for (let i = 0; i < 400; i++) {
    try {
      const res = await request(r.admin + '/readyz')
      const body = await res.body.json() as { status: string }
      if (res.statusCode === 200 && body.status === 'ready') return r
    } catch { /* not listening yet */ }
    if (child.exitCode !== null) throw new Error('sluice exited: ' + out.join(''))
    await sleep(50)
  }
  throw new Error('replica not ready: ' + out.join(''))
}

/** `n` concurrent GETs of `path` on each replica, all sent before any answer. */
async function burst (path: string, n: number): Promise<{ status: number; body: string; cache: string }[]> {
  const all = replicas.flatMap((r) => Array.from({ length: n }, async () => {
    const res = await r.pool.request({ path, method: 'GET', headers: HOST })
    return { status: res.statusCode, body: await res.body.text(), cache: String(res.headers['cache-status'] ?? '') }
  }))
  return Promise.all(all)
}

async function leases (r: Replica): Promise<Record<string, number>> {
  const text = await (await request(r.admin + '/metrics')).body.text()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^sluice_cache_leases_total\{result="(\w+)"\} (\d+)/gm)) out[m[1]] = Number(m[2])
  return out
}

test('300 concurrent misses for one key across three processes send exactly one request upstream', async () => {
  const path = '/hot?key=one'
  const results = await burst(path, 100)
  assert.equal(results.length, 300)
  for (const r of results) {
    assert.equal(r.status, 200)
    assert.equal(r.body, 'hot body')
  }
  assert.equal(origin.count(path), 1, 'one upstream request in the whole fleet')
  const stored = results.filter((r) => r.cache.includes('fwd=miss; stored'))
  const collapsed = results.filter((r) => r.cache.includes('collapsed'))
  assert.equal(stored.length, 1, 'one leader')
  assert.equal(collapsed.length + stored.length + results.filter((r) => r.cache.includes('; hit')).length, 300)
  assert.ok(collapsed.length >= 200, `most requests were collapsed: ${collapsed.length}`)
  // Exactly one lease was granted; the other replicas waited for it.
  const ls = await Promise.all(replicas.map(leases))
  assert.equal(ls.reduce((a, l) => a + (l.acquired ?? 0), 0), 1, JSON.stringify(ls))
  assert.equal(ls.reduce((a, l) => a + (l.held ?? 0) + (l.filled ?? 0), 0), 2, JSON.stringify(ls))
  // Afterwards every replica answers from its own L1 (the filled message put the entry there).
  for (const r of replicas) {
    const res = await r.pool.request({ path, method: 'GET', headers: HOST })
    await res.body.text()
    assert.match(String(res.headers['cache-status']), /sluice; hit/)
  }
  assert.equal(origin.count(path), 1)
})

test('an uncacheable fill is not shared: each waiting request goes upstream itself, then hit-for-miss', async () => {
  const path = '/private?key=two'
  const results = await burst(path, 5)
  for (const r of results) { assert.equal(r.status, 200); assert.equal(r.body, 'mine') }
  // The leader's private answer is never given to anyone else: the 14 others asked the origin.
  assert.equal(origin.count(path), 15)
  assert.equal(results.filter((r) => r.cache.includes('collapsed')).length, 0)
  assert.ok(results.filter((r) => r.cache.includes('detail=PRIVATE')).length >= 1)
  const next = await replicas[2].pool.request({ path, method: 'GET', headers: HOST })
  await next.body.text()
  assert.match(String(next.headers['cache-status']), /detail=HIT-FOR-MISS/)
})

test('a lease holder that never fills: after coalesceTimeoutMs the others fill in-process, once per replica', async () => {
  const path = '/stuck?key=three'
  const results = await burst(path, 20)
  for (const r of results) { assert.equal(r.status, 200); assert.equal(r.body, 'late') }
  // The holder's replica: its stuck fill, and its 19 other requests going upstream alone once
  // coalesceTimeoutMs has passed (as in a single process). The two other replicas: their lease
  // wait times out, then one fill each, which all their 40 requests share.
  assert.equal(origin.count(path), 1 + 19 + 2)
  assert.equal(results.filter((r) => r.cache.includes('collapsed')).length, 40)
  assert.equal(results.filter((r) => r.cache.includes('COALESCE-FALLBACK')).length, 19)
  const timeouts = (await Promise.all(replicas.map(leases))).reduce((a, l) => a + (l.timeout ?? 0), 0)
  assert.equal(timeouts, 2)
})

test('with Redis unreachable, a replica still coalesces its own misses', async () => {
  // A port nothing listens on: Redis is down from the start.
  const deadRedis = `redis://127.0.0.1:${await reservePort()}`
  const g = await startTestGateway(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
redis: { url: "${deadRedis}", connectTimeoutMs: 100, commandTimeoutMs: 100 }
upstreams: { origin: { url: "${origin.url}", timeoutMs: 10000 } }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin, cache: { enabled: true } }
`)
  const pool = new Pool(g.url, { connections: 100 })
  try {
    const path = '/hot?key=four'
    const results = await Promise.all(Array.from({ length: 100 }, async () => {
      const res = await pool.request({ path, method: 'GET' })
      return { status: res.statusCode, body: await res.body.text() }
    }))
    for (const r of results) { assert.equal(r.status, 200); assert.equal(r.body, 'hot body') }
    assert.equal(origin.count(path), 1)
  } finally {
    await pool.close()
    await g.close()
  }
})
