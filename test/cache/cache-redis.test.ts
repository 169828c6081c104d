// The shared L2 through real gateways on a real redis-server.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway, tempConfig } from '../helpers/gateway.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'
import { cliCommand, startedUrls } from '../helpers/cli.js'
import { reservePort } from '../helpers/ports.js'
import { until } from '../helpers/wait.js'
import { ReplyError } from 'ioredis'
import { unavailable } from '../../src/redis/client.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const config = (redisUrl: string, prefix: string, port = 0, admin = 0) =>
  redisCacheYaml(origin.url, redisUrl, prefix, { commandTimeoutMs: 200, upstreamTimeoutMs: 2000, port, admin })

async function get (base: string, path: string) {
  const r = await request(base + path)
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

test('a stored part (206) is shared through L2: another gateway answers a range inside it', async () => {
  const redis = await startRedis()
  const a = await startTestGateway(config(redis.url, redis.prefix))
  const b = await startTestGateway(config(redis.url, redis.prefix))
  const range = async (base: string, r: string) => {
    const res = await request(base + '/part-l2', { headers: { host: 'shop.example', range: r } })
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
  }
  try {
    origin.on('/part-l2', (_req, res) => {
      res.writeHead(206, { 'cache-control': 'max-age=60', etag: '"l2"', 'content-range': 'bytes 0-4/10' })
      res.end('01234')
    })
    assert.equal((await range(a.url, 'bytes=0-4')).headers['cache-status'], 'sluice; fwd=miss; stored')
    const c = redis.client()
    for (let i = 0; i < 100 && (await c.keys(`${redis.prefix}{*}c:G|shop.example|/part-l2*`)).length === 0; i++) await sleep(20)
    const fromL2 = await range(b.url, 'bytes=1-3')
    assert.equal(fromL2.status, 206)
    assert.equal(fromL2.body, '123')
    assert.equal(fromL2.headers['content-range'], 'bytes 1-3/10')
    assert.match(String(fromL2.headers['cache-status']), /^sluice; hit/)
    assert.equal(origin.count('/part-l2'), 1)
    const mine = await c.keys(redis.prefix + '*')
    if (mine.length) await c.del(...mine)
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('an entry stored by one gateway is an L2 hit for another, and backfills its L1', async () => {
  const redis = await startRedis()
  const a = await startTestGateway(config(redis.url, redis.prefix))
  const b = await startTestGateway(config(redis.url, redis.prefix))
  // Replicas behind one load balancer see the same Host header.
  const viaHost = async (base: string) => {
    const r = await request(base + '/shared', { headers: { host: 'shop.example' } })
    return { headers: r.headers, body: await r.body.text() }
  }
  try {
    origin.on('/shared', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('shared') })
    assert.equal((await viaHost(a.url)).headers['cache-status'], 'sluice; fwd=miss')
    // The L2 write is asynchronous: wait until the record is in Redis.
    const c = redis.client()
    for (let i = 0; i < 250 && (await c.keys(`${redis.prefix}{*}c:G|shop.example|/shared`)).length === 0; i++) await sleep(20)
    const fromL2 = await viaHost(b.url)
    assert.equal(fromL2.body, 'shared')
    assert.match(String(fromL2.headers['cache-status']), /^sluice; hit/)
    assert.equal(origin.count('/shared'), 1, 'the second gateway never went to the origin')
    const mine = await c.keys(redis.prefix + '*') // only this test's keys: REDIS_URL may be shared
    if (mine.length) await c.del(...mine)
    assert.match(String((await viaHost(b.url)).headers['cache-status']), /^sluice; hit/, 'now served from its own L1')
  } finally { await a.close(); await b.close(); await redis.stop() }
})

/**
 * An origin path whose response grows past maxEntryBytes (4096) on demand: `old` (3 bytes,
 * fresh for 1 s, stale-if-error for 600 s), `big` (8000 bytes), or `fail` (500).
 */
function growingOrigin (path: string): { large: Buffer, set: (m: 'old' | 'big' | 'fail') => void } {
  const large = Buffer.alloc(8000, 98)
  let mode: 'old' | 'big' | 'fail' = 'old'
  origin.on(path, (_q, r) => {
    if (mode === 'fail') { r.writeHead(500, { 'content-type': 'text/plain' }); r.end('down'); return }
    const body = mode === 'big' ? large : Buffer.from('old')
    r.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600', 'content-type': 'text/plain', 'content-length': String(body.length) })
    r.end(body)
  })
  return { large, set: (m) => { mode = m } }
}

test('a refresh whose new body is past maxEntryBytes takes the old entry out of L2 as well as L1', async () => {
  const redis = await startRedis()
  let t = Date.now()
  const a = await startTestGateway(config(redis.url, redis.prefix) + 'cache:\n  memory: { maxEntryBytes: 4096 }\n', { now: () => t })
  const { large, set } = growingOrigin('/l2-grow')
  const viaHost = async () => {
    const r = await request(a.url + '/l2-grow', { headers: { host: 'shop.example' } })
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
  }
  try {
    assert.equal((await viaHost()).body, 'old')
    const c = redis.client()
    const stored = async () => (await c.keys(`${redis.prefix}{*}c:G|shop.example|/l2-grow`)).length > 0
    await until('the L2 record', stored)
    t += 2000
    set('big')
    assert.equal((await viaHost()).body, large.toString())
    await until('the superseded L2 record gone', async () => !(await stored()), { tries: 40 })
    // Neither L1 nor L2 brings the superseded response back as stale on an origin error.
    set('fail')
    const after = await viaHost()
    assert.equal(after.status, 500, String(after.headers['cache-status']))
  } finally { await a.close(); await redis.stop() }
})

test('a refresh too large to store on one replica takes the old entry out of the other replicas\' L1 too', async () => {
  const redis = await startRedis()
  let t = Date.now()
  const yaml = config(redis.url, redis.prefix) + 'cache:\n  memory: { maxEntryBytes: 4096 }\n'
  const a = await startTestGateway(yaml, { now: () => t })
  const b = await startTestGateway(yaml, { now: () => t })
  const { large, set } = growingOrigin('/bus-grow')
  const via = async (base: string) => {
    const r = await request(base + '/bus-grow', { headers: { host: 'shop.example' } })
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
  }
  try {
    assert.equal((await via(a.url)).body, 'old')
    const c = redis.client()
    await until('the L2 record', async () => (await c.keys(`${redis.prefix}{*}c:G|shop.example|/bus-grow`)).length > 0, { tries: 400 })
    // b holds its own L1 copy (backfilled from L2).
    assert.match(String((await via(b.url)).headers['cache-status']), /^sluice; hit/)
    assert.equal(origin.count('/bus-grow'), 1)
    t += 2000
    set('big')
    assert.equal((await via(a.url)).body, large.toString())
    // b hears of it on the purge bus: its old copy is not served as stale on an origin error.
    set('fail')
    await until('b drops its superseded L1 copy', async () => (await via(b.url)).status === 500, { tries: 40 })
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('killing Redis mid-traffic keeps every request answered; /readyz says degraded', async () => {
  const redis = await startRedis({ own: true })
  const gw = await startTestGateway(config(redis.url, redis.prefix))
  try {
    origin.on('/during', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('ok') })
    let n = 0
    const statuses: number[] = []
    const load = (async () => {
      while (n < 300) {
        n++
        const r = await get(gw.url, `/during?i=${n % 20}`)
        statuses.push(r.status)
      }
    })()
    await sleep(50)
    await redis.kill()
    await load
    assert.equal(statuses.length, 300)
    assert.ok(statuses.every((s) => s === 200), `non-200: ${statuses.filter((s) => s !== 200).join(',')}`)
    for (let i = 0; i < 50; i++) {
      const ready = await (await request(gw.adminUrl + '/readyz')).body.json() as { status: string; degraded: string[] }
      if (ready.status === 'degraded') break
      await sleep(50)
    }
    const ready = await (await request(gw.adminUrl + '/readyz')).body.json() as { status: string; degraded: string[] }
    assert.equal(ready.status, 'degraded')
    assert.ok(ready.degraded.includes('redis'))
    const metrics = await (await request(gw.adminUrl + '/metrics')).body.text()
    assert.match(metrics, /sluice_redis_errors_total\{op="[a-z_]+"\} [1-9]/)
  } finally { await gw.close(); await redis.stop() }
})

async function startCli (yaml: string): Promise<{ child: ChildProcess; out: string[]; url: string; adminUrl: string }> {
  const { file } = tempConfig(yaml)
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  const end = Date.now() + 15000
  let urls = startedUrls(out)
  while (urls === null) {
    if (child.exitCode !== null || Date.now() > end) throw new Error('sluice did not start: ' + out.join(''))
    await sleep(50)
    urls = startedUrls(out)
  }
  return { child, out, ...urls }
}

test('a purge on one Sluice process evicts the entry from another process\'s L1 (pub/sub)', async () => {
  const redis = await startRedis()
  // Port 0 everywhere: each process reports the ports it got in its "sluice started" line.
  const one = await startCli(config(redis.url, redis.prefix))
  const two = await startCli(config(redis.url, redis.prefix))
  try {
    let version = 1
    origin.on('/purged', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'cache-tag': 'catalog' }); res.end('v' + version) })
    const url1 = one.url
    const url2 = two.url
    assert.equal((await get(url2, '/purged')).body, 'v1')
    assert.match(String((await get(url2, '/purged')).headers['cache-status']), /hit/, 'now in process two\'s L1')
    version = 2
    const r = await request(`${one.adminUrl}/admin/purge`, { method: 'POST', body: '{"tag":"catalog"}', headers: { 'content-type': 'application/json' } })
    assert.equal(r.statusCode, 200)
    await r.body.dump()
    let body = ''
    for (let i = 0; i < 50; i++) {
      body = (await get(url2, '/purged')).body
      if (body === 'v2') break
      await sleep(20)
    }
    assert.equal(body, 'v2', 'process two fetched the new version after the purge on process one')
    assert.equal((await get(url1, '/purged')).body, 'v2')
  } finally {
    for (const p of [one, two]) { p.child.kill('SIGTERM'); await once(p.child, 'exit') }
    await redis.stop()
  }
})

test('a purge that cannot reach Redis answers 503 SLUICE_ERR_PURGE_INCOMPLETE (its memory part done), so the caller retries', async () => {
  const redis = await startRedis({ own: true })
  const gw = await startTestGateway(config(redis.url, redis.prefix))
  try {
    origin.on('/gone', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('x') })
    await get(gw.url, '/gone')
    assert.match(String((await get(gw.url, '/gone')).headers['cache-status']), /hit/)
    await redis.kill()
    const r = await request(gw.adminUrl + '/admin/purge', { method: 'POST', body: JSON.stringify({ key: '/gone' }), headers: { 'content-type': 'application/json' } })
    assert.equal(r.statusCode, 503)
    const body = await r.body.json() as Record<string, unknown>
    assert.equal(body.error, 'SLUICE_ERR_PURGE_INCOMPLETE')
    assert.equal(body.ok, false)
    assert.equal(body.unreached, 'redis')
    assert.equal(body.purged, 1, 'the memory part was done')
    assert.ok(gw.logs.some((l) => l.msg === 'cache purge incomplete: Redis was not reached; retry it'))
  } finally { await gw.close(); await redis.stop() }
})

test('a Redis that hangs with its connection open: after one timeout the cache stops waiting on it, and when it answers again /readyz is ready again', async () => {
  const port = await reservePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' })
  const url = `redis://127.0.0.1:${port}`
  const gw = await startTestGateway(config(url, 'hang:'))
  try {
    origin.on('/hang', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end('ok') })
    await until('the gateway reaches Redis', async () => (await (await request(gw.adminUrl + '/readyz')).body.json() as { status: string }).status === 'ready')
    const errorsNow = async () => {
      const text = await (await request(gw.adminUrl + '/metrics')).body.text()
      return text.split('\n').filter((l) => /^sluice_redis_errors_total\{op="cache_(get|lease)"\}/.test(l)).reduce((a, l) => a + Number(l.split(' ').at(-1)), 0)
    }
    // The gateway may have started before redis-server listened: its first reads (the tag purge
    // record) then failed, and are made again by the next lookup. One request through a Redis
    // that answers first, so that the misses below send only their own commands, and what was
    // counted before them is not theirs.
    assert.equal((await get(gw.url, '/hang?before')).status, 200)
    const before = await errorsNow()
    child.kill('SIGSTOP')
    for (let i = 0; i < 10; i++) assert.equal((await get(gw.url, `/hang?i=${i}`)).status, 200)
    // The first miss's commands already in flight when the first timeout marks Redis down (its
    // lookups and lease; on a loaded machine they overlap) fail too; the later misses send none:
    // 10 misses sending theirs would be 20 or more.
    const failed = await errorsNow() - before
    assert.ok(failed <= 3, `the misses stopped sending cache commands to the hung Redis (${failed} failed)`)
    child.kill('SIGCONT')
    await until('/readyz ready again once Redis answers', async () => (await (await request(gw.adminUrl + '/readyz')).body.json() as { status: string }).status === 'ready', { tries: 200, intervalMs: 50 })
    assert.ok(gw.logs.some((l) => l.msg === 'redis is back'))
  } finally { child.kill('SIGCONT'); child.kill('SIGKILL'); await gw.close() }
})

test('a record that does not decode is one miss: Redis is not marked down, and other entries keep coming from L2', async () => {
  const redis = await startRedis()
  const a = await startTestGateway(config(redis.url, redis.prefix))
  const b = await startTestGateway(config(redis.url, redis.prefix))
  const c = redis.client()
  const viaHost = async (base: string, path: string) => {
    const r = await request(base + path, { headers: { host: 'shop.example' } })
    return { headers: r.headers, body: await r.body.text() }
  }
  try {
    for (const p of ['/cut', '/fine']) origin.on(p, (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('body of ' + p) })
    await viaHost(a.url, '/cut')
    await viaHost(a.url, '/fine')
    await until('both records in L2', async () => (await c.keys(`${redis.prefix}{*}c:G|shop.example|/*`)).length >= 2)
    const [cut] = await c.keys(`${redis.prefix}{*}c:G|shop.example|/cut`)
    const buf = await c.getBuffer(cut)
    await c.set(cut, buf!.subarray(0, buf!.length - 3)) // a truncated record
    assert.match(String((await viaHost(b.url, '/cut')).headers['cache-status']), /fwd=miss/)
    assert.match(String((await viaHost(b.url, '/fine')).headers['cache-status']), /^sluice; hit/, 'the next lookup still went to Redis')
    const ready = await (await request(b.adminUrl + '/readyz')).body.json() as { status: string }
    assert.equal(ready.status, 'ready')
    assert.equal(unavailable(new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value')), false)
    assert.equal(unavailable(new ReplyError('LOADING Redis is loading the dataset in memory')), true)
    assert.equal(unavailable(new Error('Command timed out')), true)
  } finally {
    const mine = await c.keys(redis.prefix + '*')
    if (mine.length) await c.del(...mine)
    await a.close(); await b.close(); await redis.stop()
  }
})
