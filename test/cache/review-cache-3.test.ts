// Cache leftovers, third review: a 206 part does not replace the complete entry's Vary
// record (L1 and L2), a background refresh keeps the request ID of the request that started it
// (its retry lines name it), and another replica's failed fill tells its waiters the origin's
// status (their stale answers name it, fwd-status). Real gateways, a real loopback origin and
// (for the fleet cases) a real redis-server.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { createHash } from 'node:crypto'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway, cachedConfig } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const HOST = 'cache3.example'

async function get (base: string, path: string, headers: Record<string, string> = {}) {
  const r = await request(base + path, { headers: { host: HOST, ...headers } })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

async function leases (adminUrl: string, result: string): Promise<number> {
  const text = await (await request(adminUrl + '/metrics')).body.text()
  const m = new RegExp(`^sluice_cache_leases_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

/**
 * An origin whose complete answers vary on Accept-Language, and whose 206 answers also name
 * Accept-Encoding (servers that add it to ranges only): the part's Vary is not the complete one's.
 */
function varyingParts (text: string) {
  return (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''))
    const h = { 'cache-control': 'max-age=600', etag: '"vp1"', 'content-type': 'text/plain' }
    if (m === null) { res.writeHead(200, { ...h, vary: 'Accept-Language' }); res.end(text); return }
    const start = Number(m[1]); const end = Math.min(Number(m[2]), text.length - 1)
    res.writeHead(206, { ...h, vary: 'Accept-Language, Accept-Encoding', 'content-range': `bytes ${start}-${end}/${text.length}` })
    res.end(text.slice(start, end + 1))
  }
}

test('L1: a stored 206 part whose Vary differs from the complete entry\'s does not replace its Vary record: the complete entry is still a hit', async () => {
  const g = await startTestGateway(cachedConfig(origin.url))
  origin.on('/vary-part', varyingParts('0123456789'))
  try {
    const en = { 'accept-language': 'en' }
    assert.equal((await get(g.url, '/vary-part', en)).body, '0123456789')
    assert.match(String((await get(g.url, '/vary-part', en)).headers['cache-status']), /^sluice; hit/)
    // Another language's range: no complete entry for it, so the origin's 206 is kept as a part,
    // unless (as here) its Vary is not the complete entry's: no lookup would find it, so it is
    // not stored at all (review-cache-variants.test.ts).
    const part = await get(g.url, '/vary-part', { 'accept-language': 'de', range: 'bytes=2-4' })
    assert.equal(part.status, 206)
    assert.equal(part.body, '234')
    assert.equal(part.headers['cache-status'], 'sluice; fwd=bypass; detail=VARY-PART')
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal((g.gw.cache.stats().memory as { entries: number }).entries, 1, 'the unreachable part is not stored')
    const again = await get(g.url, '/vary-part', en)
    assert.equal(again.body, '0123456789')
    assert.match(String(again.headers['cache-status']), /^sluice; hit/, 'the complete entry is still found')
    assert.equal(origin.count('/vary-part'), 2)
  } finally { await g.close() }
})

test('L2: a 206 part stored by one replica does not replace the Vary record in Redis: another replica still finds the complete entry', async () => {
  const redis = await startRedis()
  const yaml = redisCacheYaml(origin.url, redis.url, redis.prefix, { commandTimeoutMs: 2000 })
  const a = await startTestGateway(yaml)
  const b = await startTestGateway(yaml)
  origin.on('/vary-part-l2', varyingParts('abcdefghij'))
  const c = redis.client()
  const records = async () => (await c.keys(`${redis.prefix}{*}c:G|${HOST}|/vary-part-l2*`)).length
  try {
    const en = { 'accept-language': 'en' }
    assert.equal((await get(a.url, '/vary-part-l2', en)).body, 'abcdefghij')
    await until('A\'s complete entry to reach L2', async () => await records() === 1)
    const part = await get(a.url, '/vary-part-l2', { 'accept-language': 'de', range: 'bytes=2-4' })
    assert.equal(part.status, 206)
    assert.equal(part.headers['cache-status'], 'sluice; fwd=bypass; detail=VARY-PART', 'refused by L1 and by the L2 record: not said to be stored')
    // Its L2 write is done once A's background jobs are (the part itself is not stored: its
    // Vary is not the record's, review-cache-variants.test.ts).
    await until('A\'s background writes to end', () => (a.gw.cache.stats() as { background: number }).background === 0)
    assert.equal(await records(), 1, 'no unreachable part in L2')
    const fromB = await get(b.url, '/vary-part-l2', en)
    assert.equal(fromB.body, 'abcdefghij')
    assert.match(String(fromB.headers['cache-status']), /^sluice; hit/, 'B finds the complete entry through the Vary record')
    assert.equal(origin.count('/vary-part-l2'), 2)
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('a background refresh keeps the request ID of the request that started it: its retry lines carry that reqId', async () => {
  let skew = 0
  const yaml = cachedConfig(origin.url).replace('log: { level: info, accessLog: true }', 'log: { level: debug, accessLog: true }')
    .replace('    connectTimeoutMs: 1000', '    connectTimeoutMs: 1000\n    retry: { attempts: 1, backoffMs: 1, maxBackoffMs: 1 }')
  const g = await startTestGateway(yaml, { level: 'debug', now: () => Date.now() + skew })
  let n = 0
  origin.on('/bg-reqid', (req, res) => {
    if (n++ === 0) { res.writeHead(200, { 'cache-control': 'max-age=1, stale-while-revalidate=600' }); res.end('v1'); return }
    req.socket.destroy() // a reset before any response byte: retried
  })
  try {
    assert.equal((await get(g.url, '/bg-reqid')).body, 'v1')
    skew = 5000
    const r = await get(g.url, '/bg-reqid', { 'x-request-id': 'swr-refresh-1' })
    assert.match(String(r.headers['cache-status']), /STALE-WHILE-REVALIDATE/)
    await until('the refresh and its retry to reach the origin', () => n === 3)
    const retry = () => g.logs.filter((l) => l.msg === 'retrying upstream request')
    await until('the retry line', () => retry().length > 0, { detail: () => g.logs.map((l) => l.msg) })
    for (const l of retry()) assert.equal(l.reqId, 'swr-refresh-1', JSON.stringify(l))
  } finally { await g.close() }
})

test('across replicas: a waiter for another replica\'s fill that failed with a 5xx serves stale-if-error naming the origin\'s status (fwd-status)', async () => {
  const redis = await startRedis()
  let skew = 0
  const yaml = redisCacheYaml(origin.url, redis.url, redis.prefix, { commandTimeoutMs: 2000 })
  const a = await startTestGateway(yaml, { now: () => Date.now() + skew })
  const b = await startTestGateway(yaml, { now: () => Date.now() + skew })
  let n = 0
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/fleet-sie', (_req, res) => {
    if (n++ === 0) { res.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600', etag: '"s1"' }); res.end('v1'); return }
    // The revalidation (B's) hangs until the test lets it go, then fails.
    void held.then(() => { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('down') })
  })
  try {
    assert.equal((await get(a.url, '/fleet-sie')).body, 'v1')
    const c = redis.client()
    await until('A\'s entry to reach L2', async () => (await c.keys(`${redis.prefix}{*}c:G|${HOST}|/fleet-sie`)).length > 0)
    // ...and its fill's lease to go (released just after the write): B asking while A still held
    // it would wait for a "filled" message A had already sent, for the whole coalesce timeout.
    await until('A\'s fill lease to be released', async () => (await c.keys(`${redis.prefix}{*}l:G|${HOST}|/fleet-sie`)).length === 0)
    skew = 5000
    // B revalidates the stale entry (read from L2) and holds the key's fill lease meanwhile.
    const fromB = get(b.url, '/fleet-sie')
    await until('B\'s revalidation to reach the origin', () => n === 2)
    // A's client finds the lease held and waits for B's "filled" message.
    const fromA = get(a.url, '/fleet-sie')
    await until('A\'s client to find the lease held', async () => await leases(a.adminUrl, 'held') === 1)
    release()
    const rb = await fromB
    assert.match(String(rb.headers['cache-status']), /fwd=stale; fwd-status=503/)
    const ra = await fromA
    assert.equal(ra.body, 'v1')
    assert.match(String(ra.headers['cache-status']), /fwd=stale; fwd-status=503; detail=COALESCED-FILL-FAILED/)
    assert.equal(n, 2, 'one revalidation upstream for both')
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('across replicas: a "filled" message of an older replica (no status) still settles the waiters: stale-if-error without fwd-status', async () => {
  const redis = await startRedis()
  let skew = 0
  const yaml = redisCacheYaml(origin.url, redis.url, redis.prefix, { commandTimeoutMs: 2000 })
  const a = await startTestGateway(yaml, { now: () => Date.now() + skew })
  const b = await startTestGateway(yaml, { now: () => Date.now() + skew })
  let n = 0
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/fleet-old-msg', (_req, res) => {
    if (n++ === 0) { res.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600', etag: '"o1"' }); res.end('v1'); return }
    void held.then(() => { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('down') })
  })
  const c = redis.client()
  try {
    assert.equal((await get(a.url, '/fleet-old-msg')).body, 'v1')
    await until('A\'s entry to reach L2', async () => (await c.keys(`${redis.prefix}{*}c:G|${HOST}|/fleet-old-msg`)).length > 0)
    // ...and its fill's lease to go (released just after the write): B asking while A still held
    // it would wait for a "filled" message A had already sent, for the whole coalesce timeout.
    await until('A\'s fill lease to be released', async () => (await c.keys(`${redis.prefix}{*}l:G|${HOST}|/fleet-old-msg`)).length === 0)
    skew = 5000
    const fromB = get(b.url, '/fleet-old-msg')
    await until('B\'s revalidation to reach the origin', () => n === 2)
    const fromA = get(a.url, '/fleet-old-msg')
    await until('A\'s client to find the lease held', async () => await leases(a.adminUrl, 'held') === 1)
    // The message as a replica of an older version sends it: no `s`.
    const [lease] = await c.keys(`${redis.prefix}{*}l:G|${HOST}|/fleet-old-msg`)
    const k = lease.slice(lease.indexOf('l:') + 2)
    await c.publish(`${redis.prefix}filled`, JSON.stringify({ k, r: 'ERROR', from: 'an-older-replica' }))
    const ra = await fromA
    assert.equal(ra.body, 'v1')
    assert.match(String(ra.headers['cache-status']), /fwd=stale; detail=COALESCED-FILL-FAILED/)
    release()
    await fromB
  } finally { release(); await a.close(); await b.close(); await redis.stop() }
})

test('across replicas: a "filled" message that arrives just before this replica starts waiting for it still settles the wait (no coalesce timeout)', async () => {
  const redis = await startRedis()
  const g = await startTestGateway(redisCacheYaml(origin.url, redis.url, redis.prefix, { commandTimeoutMs: 2000 }))
  origin.on('/early-msg', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('filled here') })
  origin.on('/early-probe', (_req, res) => { res.writeHead(200, { 'cache-control': 'no-store' }); res.end('probe') })
  const c = redis.client()
  try {
    // Another replica holds the fill lease of the key...
    const k = `G|${HOST}|/early-msg`
    const slot = '{' + createHash('sha1').update(k).digest('base64url').slice(0, 12) + '}'
    await c.hset(`${redis.prefix}${slot}l:${k}`, 'o', 'another-replica')
    await c.pexpire(`${redis.prefix}${slot}l:${k}`, 60_000)
    // ...and its "filled" message reaches this replica before its own lease call returns 'held'
    // (two connections): here, before the request at all.
    await c.publish(`${redis.prefix}filled`, JSON.stringify({ k, r: 'ERROR', from: 'another-replica' }))
    await get(g.url, '/early-probe')
    await get(g.url, '/early-probe')
    const r = await get(g.url, '/early-msg')
    assert.equal(r.body, 'filled here')
    assert.equal(await leases(g.adminUrl, 'held'), 1)
    // The wait was settled by the kept message; it used to sit out coalesceTimeoutMs.
    assert.equal(await leases(g.adminUrl, 'timeout'), 0)
  } finally { await g.close(); await redis.stop() }
})
