// Issue 16 metrics, end to end through real gateways, a real origin and a real Redis:
// cache hits by layer, L1 evictions, Redis command latency, request and response body sizes.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { metric, parseSamples } from '../helpers/metrics.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const gatewayConfig = (routes: string, top = '') => `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
${top}
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 2000 }
routes:
${routes}`

async function get (base: string, path: string, headers: Record<string, string> = {}) {
  const r = await request(base + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

async function scrape (adminUrl: string): Promise<string> {
  const r = await request(adminUrl + '/metrics')
  return r.body.text()
}

test('cache hits carry layer l1 (fast path) or l2 (read from Redis); other results have no layer; Redis commands are timed', async () => {
  const redis = await startRedis()
  const top = `redis: { url: "${redis.url}", keyPrefix: "${redis.prefix}", commandTimeoutMs: 1000 }`
  const routes = `
  - name: layered
    match: { pathPrefix: /layered/ }
    upstream: origin
    cache: { enabled: true }
  - name: limited
    match: { pathPrefix: /limited/ }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: 100, burst: 100, key: ip } }
`
  const a = await startTestGateway(gatewayConfig(routes, top))
  const b = await startTestGateway(gatewayConfig(routes, top))
  const host = { host: 'layers.example' }
  try {
    origin.on('/layered/x', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' }); res.end('layered body') })
    assert.equal((await get(a.url, '/layered/x', host)).headers['cache-status'], 'sluice; fwd=miss')
    // The L2 write is asynchronous: wait until the record is in Redis.
    const c = redis.client()
    await until('the entry to reach Redis', async () => (await c.keys(`${redis.prefix}*layered/x*`)).length > 0)

    // Gateway b has nothing in L1: its first answer is an L2 hit, its second an L1 (fast path) hit.
    const first = await get(b.url, '/layered/x', host)
    assert.match(String(first.headers['cache-status']), /^sluice; hit/)
    assert.equal(await metric(b.adminUrl, 'sluice_cache_events_total', { route: 'layered', result: 'hit', layer: 'l2' }), 1)
    assert.equal(await metric(b.adminUrl, 'sluice_cache_events_total', { route: 'layered', result: 'hit', layer: 'l1' }), 0)
    const second = await get(b.url, '/layered/x', host)
    assert.match(String(second.headers['cache-status']), /^sluice; hit/)
    assert.equal(await metric(b.adminUrl, 'sluice_cache_events_total', { route: 'layered', result: 'hit', layer: 'l1' }), 1)
    assert.equal(await metric(b.adminUrl, 'sluice_cache_events_total', { route: 'layered', result: 'hit', layer: 'l2' }), 1)
    // Gateway a stored the entry in its own L1 when it filled: its hit is l1.
    await get(a.url, '/layered/x', host)
    assert.equal(await metric(a.adminUrl, 'sluice_cache_events_total', { route: 'layered', result: 'hit', layer: 'l1' }), 1)
    assert.equal(await metric(a.adminUrl, 'sluice_cache_events_total', { route: 'layered', result: 'hit', layer: 'l2' }), 0)

    // A miss is exposed with route and result only (an empty layer is left out).
    const events = parseSamples(await scrape(a.adminUrl)).filter((s) => s.name === 'sluice_cache_events_total')
    const miss = events.find((s) => s.labels.route === 'layered' && s.labels.result === 'miss')
    assert.deepEqual(miss?.labels, { route: 'layered', result: 'miss' })
    assert.equal(miss?.value, 1)
    for (const s of events) {
      if (s.labels.result === 'hit') assert.ok(s.labels.layer === 'l1' || s.labels.layer === 'l2', JSON.stringify(s.labels))
      else assert.equal(s.labels.layer, undefined, JSON.stringify(s.labels))
    }

    // Redis latency: a stored the entry with its SET script (eval); b read it with GET.
    assert.ok(await metric(a.adminUrl, 'sluice_redis_command_duration_seconds_count', { command: 'eval' }) >= 1)
    assert.ok(await metric(b.adminUrl, 'sluice_redis_command_duration_seconds_count', { command: 'get' }) >= 1)
    // The rate limiter's bucket script goes through the same client (EVALSHA, or EVAL after NOSCRIPT).
    origin.on('/limited/y', (_req, res) => { res.writeHead(200); res.end('ok') })
    const scripts = async () => await metric(b.adminUrl, 'sluice_redis_command_duration_seconds_count', { command: 'evalsha' }) +
      await metric(b.adminUrl, 'sluice_redis_command_duration_seconds_count', { command: 'eval' })
    const before = await scripts()
    for (let i = 0; i < 3; i++) assert.equal((await get(b.url, '/limited/y')).status, 200)
    await until('the limiter\'s Redis script to be timed', async () => await scripts() > before)

    // Every command label is from the fixed set, and each histogram is consistent.
    const text = await scrape(b.adminUrl)
    const samples = parseSamples(text).filter((s) => s.name.startsWith('sluice_redis_command_duration_seconds'))
    const known = new Set(['get', 'set', 'del', 'eval', 'evalsha', 'publish', 'scan', 'hsetnx', 'sadd', 'smembers', 'scard', 'spop', 'pexpire', 'ping', 'memory', 'exists', 'pttl', 'getrange', '_other'])
    for (const s of samples) assert.ok(known.has(s.labels.command), s.labels.command)
    for (const cmd of known) {
      const count = samples.find((s) => s.name.endsWith('_count') && s.labels.command === cmd)
      const inf = samples.find((s) => s.name.endsWith('_bucket') && s.labels.command === cmd && s.labels.le === '+Inf')
      assert.ok(count !== undefined && inf !== undefined, `series for ${cmd}`)
      assert.equal(inf.value, count.value)
    }
    await c.quit()
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('L1 evictions for space count as reason size; an expired entry as expired; a purge not at all; the bound is exported', async () => {
  let clock = Date.now()
  const top = 'cache: { memory: { maxBytes: 16000, maxEntryBytes: 8000 } }'
  const gw = await startTestGateway(gatewayConfig(`
  - name: small
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true }
`, top), { now: () => clock })
  const evictions = (reason: string) => metric(gw.adminUrl, 'sluice_cache_evictions_total', { tier: 'memory', reason })
  try {
    origin.on('*', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'application/octet-stream' }); res.end(Buffer.alloc(3000, 7)) })
    assert.equal(await metric(gw.adminUrl, 'sluice_cache_max_bytes', { tier: 'memory' }), 16000)
    assert.equal(await evictions('size'), 0)
    assert.equal(await evictions('expired'), 0)
    // (octet-stream: no encoded copies are added to the entries later.)
    // An entry of 3000 body bytes counts about 4700 (headers and overhead): three fit in 16000,
    // and each one past them evicts one.
    for (let i = 0; i < 3; i++) assert.equal((await get(gw.url, `/e${i}`)).status, 200)
    assert.equal(await evictions('size'), 0)
    for (let i = 3; i < 6; i++) assert.equal((await get(gw.url, `/e${i}`)).status, 200)
    assert.equal(await evictions('size'), 3)

    // Purged entries are not evictions.
    const p = await request(gw.adminUrl + '/admin/purge', { method: 'POST', body: '{"key":"/e5"}', headers: { 'content-type': 'application/json' } })
    assert.equal(p.statusCode, 200)
    await p.body.text()
    assert.equal(await evictions('size'), 3)
    assert.equal(await evictions('expired'), 0)
    // The purge refreshed the L1 gauges: two entries left, within the bound the alert compares with.
    const held = await metric(gw.adminUrl, 'sluice_cache_bytes', { tier: 'memory' })
    assert.ok(held > 6000 && held <= 16000, String(held))

    // Past every stale window, the next lookup finds /e4 expired.
    clock += 3600_000
    assert.equal((await get(gw.url, '/e4')).headers['cache-status'], 'sluice; fwd=miss')
    assert.equal(await evictions('expired'), 1)
  } finally { await gw.close() }
})

test('request and response body sizes per route: Content-Length, buffered, streamed chunked bodies and fast-path hits', async () => {
  const gw = await startTestGateway(gatewayConfig(`
  - name: sized
    match: { pathPrefix: /sized/ }
    upstream: origin
  - name: sizedcache
    match: { pathPrefix: /hits/ }
    upstream: origin
    cache: { enabled: true }
`))
  const sum = (name: string, route: string) => metric(gw.adminUrl, `${name}_sum`, { route })
  const count = (name: string, route: string) => metric(gw.adminUrl, `${name}_count`, { route })
  const bucket = (name: string, route: string, le: string) => metric(gw.adminUrl, `${name}_bucket`, { route, le })
  const REQ = 'sluice_http_request_size_bytes'
  const RES = 'sluice_http_response_size_bytes'
  try {
    origin.on('/sized/fixed', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1000' }); res.end('f'.repeat(1000)) })
    origin.on('/sized/chunked', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      res.write(Buffer.alloc(700, 1))
      setImmediate(() => { res.write(Buffer.alloc(300, 2)); res.end() })
    })
    origin.on('/sized/echo', (_req, res, body) => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) }); res.end(body) })
    origin.on('/hits/h', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' }); res.end('h'.repeat(200)) })

    // A GET without a body: request size 0; response size from Content-Length.
    assert.equal((await get(gw.url, '/sized/fixed')).body.length, 1000)
    await until('the first sizes', async () => await count(RES, 'sized') === 1)
    assert.equal(await count(REQ, 'sized'), 1)
    assert.equal(await sum(REQ, 'sized'), 0)
    assert.equal(await bucket(REQ, 'sized', '0'), 1)
    assert.equal(await sum(RES, 'sized'), 1000)
    assert.equal(await bucket(RES, 'sized', '1024'), 1)
    assert.equal(await bucket(RES, 'sized', '256'), 0)

    // A chunked response (no Content-Length): its bytes are counted as they stream.
    const chunked = await request(gw.url + '/sized/chunked')
    assert.equal(chunked.headers['content-length'], undefined)
    assert.equal((await chunked.body.arrayBuffer()).byteLength, 1000)
    await until('the chunked response to be observed', async () => await count(RES, 'sized') === 2)
    assert.equal(await sum(RES, 'sized'), 2000)

    // A request body with a Content-Length.
    const posted = await request(gw.url + '/sized/echo', { method: 'POST', body: 'p'.repeat(300), headers: { 'content-type': 'text/plain' } })
    assert.equal((await posted.body.text()).length, 300)
    await until('the POST to be observed', async () => await count(REQ, 'sized') === 3)
    assert.equal(await sum(REQ, 'sized'), 300)
    assert.equal(await bucket(REQ, 'sized', '256'), 2, 'the two GETs (0 bytes)')
    assert.equal(await bucket(REQ, 'sized', '1024'), 3)
    assert.equal(await sum(RES, 'sized'), 2300)

    // A miss through the pipeline, then two fresh L1 hits answered by the fast path.
    assert.equal((await get(gw.url, '/hits/h')).headers['cache-status'], 'sluice; fwd=miss')
    await until('the miss to be observed', async () => await count(RES, 'sizedcache') === 1)
    for (let i = 0; i < 2; i++) assert.match(String((await get(gw.url, '/hits/h')).headers['cache-status']), /^sluice; hit/)
    assert.equal(await metric(gw.adminUrl, 'sluice_http_requests_total', { route: 'sizedcache', cache: 'hit' }), 2)
    assert.equal(await count(RES, 'sizedcache'), 3)
    assert.equal(await sum(RES, 'sizedcache'), 600)
    assert.equal(await count(REQ, 'sizedcache'), 3)
    assert.equal(await sum(REQ, 'sizedcache'), 0)
    // HEAD hits send no body.
    const head = await request(gw.url + '/hits/h', { method: 'HEAD' })
    await head.body.text()
    assert.equal(await count(RES, 'sizedcache'), 4)
    assert.equal(await sum(RES, 'sizedcache'), 600)
  } finally { await gw.close() }
})
