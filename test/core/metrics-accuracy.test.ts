// Metrics that told operators something untrue (found by a review of the metrics): answers
// Sluice gives before Fastify that were never counted, a breaker gauge left behind by a
// reload, gauges summed over workers that must not be, a cut stream counted whole, upstream
// failures counted as 5xx responses, and an HTTP/2 upload of unknown length counted as empty.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { execFileSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as h2connect } from 'node:http2'
import { once } from 'node:events'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig } from '../helpers/gateway.js'
import { startTestCluster } from '../helpers/cluster.js'
import { metric, sampleSum } from '../helpers/metrics.js'
import { until } from '../helpers/wait.js'
import { startRedis } from '../helpers/redis.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

async function raw (url: string, text: string): Promise<string> {
  const u = new URL(url)
  const s = connect(Number(u.port), u.hostname)
  await once(s, 'connect')
  s.write(text)
  let out = ''
  s.on('data', (d) => { out += String(d) })
  await once(s, 'close')
  return out
}

test('answers Sluice gives before Fastify (no Host, two Hosts, gzip transfer coding, an Expect it cannot meet, a malformed request) are counted, route none', async () => {
  const g = await startTestGateway(simpleConfig(origin.url))
  try {
    const before = await metric(g.adminUrl, 'sluice_http_requests_total', { route: 'none' })
    assert.match(await raw(g.url, 'GET /x HTTP/1.1\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400/)
    assert.match(await raw(g.url, 'GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400/)
    assert.match(await raw(g.url, 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n'), /^HTTP\/1\.1 501/)
    assert.match(await raw(g.url, 'GET /x HTTP/1.1\r\nHost: a\r\nExpect: tea\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 417/)
    assert.match(await raw(g.url, 'GET /x HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n'), /^HTTP\/1\.1 400/)
    assert.equal(await metric(g.adminUrl, 'sluice_http_requests_total', { route: 'none' }) - before, 5)
    assert.equal(await metric(g.adminUrl, 'sluice_http_requests_total', { route: 'none', method: '_OTHER', status_class: '4xx' }), 1, 'the malformed one: its method is not known')
    // Each answer that had a request gets its access line; the malformed one its bounded log line.
    const lines = g.logs.filter((l) => l.msg === 'request' && l.route === 'none')
    assert.deepEqual(lines.map((l) => [l.status, l.err]).sort(), [[400, 'SLUICE_ERR_BAD_REQUEST'], [400, 'SLUICE_ERR_BAD_REQUEST'], [417, 'SLUICE_ERR_EXPECTATION_FAILED'], [501, 'SLUICE_ERR_NOT_IMPLEMENTED']])
    assert.ok(lines.every((l) => typeof l.reqId === 'string' && (l.bytes as number) > 0), JSON.stringify(lines))
  } finally { await g.close() }
})

test('sluice_circuit_state of an upstream removed by a reload does not stay at 2 (open) forever', async () => {
  const yaml = (withFlaky: boolean) => `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 2000 }
${withFlaky ? `  flaky:
    url: "http://127.0.0.1:1"
    timeoutMs: 1000
    circuitBreaker: { errorThresholdPercent: 50, volumeThreshold: 2, windowMs: 10000, resetTimeoutMs: 600000 }
    retry: { attempts: 0 }` : ''}
routes:
${withFlaky ? `  - { name: flaky, match: { pathPrefix: /flaky/ }, upstream: flaky }` : ''}
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`
  const g = await startTestGateway(yaml(true))
  try {
    for (let i = 0; i < 5; i++) await (await request(g.url + '/flaky/x')).body.text()
    assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'flaky' }), 2, 'breaker open before the reload')
    g.write(yaml(false))
    const r = await g.gw.reloader.reload('test')
    assert.equal(r.ok, true)
    // The upstream is gone: its gauge should be removed (or at least not read "open").
    assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'flaky' }), 0, 'an upstream that no longer exists still reports an open breaker')
  } finally { await g.close() }
})

test('workers: 2: target health is 1 only while every worker has the target in rotation (not summed); the L1 bound is summed as the L1 bytes are', async () => {
  const c = await startTestCluster((port, adminPort) => `workers: 2
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: warn, accessLog: false }
cache: { memory: { maxBytes: 1000000 } }
upstreams: { origin: { url: "${origin.url}", timeoutMs: 2000 } }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: origin }
`)
  try {
    assert.equal(await metric(c.admin, 'sluice_upstream_target_healthy', { upstream: 'origin' }), 1, '1 while in rotation, not 2')
    assert.equal(await metric(c.admin, 'sluice_cache_max_bytes', { tier: 'memory' }), 2000000, 'two workers, each with an L1 of 1,000,000 bytes')
  } finally { await c.stop() }
})

test('an upstream body that fails after the 200 head: the size histogram and the access line get the bytes sent, not its Content-Length', async () => {
  origin.on('/cut', (_req, res) => {
    res.writeHead(200, { 'content-length': '100000', 'content-type': 'text/plain' })
    res.write('x'.repeat(10))
    setTimeout(() => res.socket?.destroy(), 50)
  })
  const g = await startTestGateway(simpleConfig(origin.url))
  try {
    const r = await request(g.url + '/cut')
    assert.equal(r.statusCode, 200)
    await r.body.text().catch(() => {})
    await until('the access line', () => g.logs.some((l) => l.msg === 'request'))
    const log = g.logs.find((l) => l.msg === 'request')
    // The access line knows it failed: err is set.
    assert.ok(log?.err, JSON.stringify(log))
    // Metrics: the size histogram took the declared 100000 bytes, though 10 were sent.
    assert.equal(log?.bytes, 10, 'the access line: bytes sent')
    assert.equal(await metric(g.adminUrl, 'sluice_http_response_size_bytes_sum', { route: 'all' }), 10, 'bytes actually sent')
  } finally { await g.close() }
})

test('sluice_upstream_request_duration_seconds: a refused connection (no response at all) is not labelled status_class 5xx', async () => {
  const g = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  dead: { url: "http://127.0.0.1:1", timeoutMs: 1000, retry: { attempts: 0 } }
routes:
  - { name: dead, match: { pathPrefix: / }, upstream: dead }
`)
  try {
    const r = await request(g.url + '/x')
    assert.equal(r.statusCode, 502)
    await r.body.text()
    assert.equal(await metric(g.adminUrl, 'sluice_upstream_request_duration_seconds_count', { upstream: 'dead', status_class: '5xx' }), 0, 'no upstream response had a 5xx status')
    assert.equal(await metric(g.adminUrl, 'sluice_upstream_request_duration_seconds_count', { upstream: 'dead', status_class: 'error' }), 1, 'an attempt with no response')
  } finally { await g.close() }
})

test('h2: a streamed upload without content-length is not observed as a 0-byte (no body) request', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-metrics-'))
  const certFile = join(dir, 'c.pem'); const keyFile = join(dir, 'c.key')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=x', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })
  const g = await startTestGateway(`listen:
  host: 127.0.0.1
  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }
  http2: true
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  api: { url: "${origin.url}" }
routes:
  - name: up
    match: { pathPrefix: / }
    upstream: api
`)
  try {
    const s = h2connect(g.url.replace('http:', 'https:'), { rejectUnauthorized: false })
    const st = s.request({ ':method': 'POST', ':path': '/upload' })
    st.write(Buffer.alloc(5000, 1))
    st.end()
    let status = 0
    st.on('response', (h) => { status = Number(h[':status']) })
    st.resume()
    await once(st, 'end')
    s.close()
    assert.equal(status, 200)
    assert.equal(origin.seen.at(-1)?.body.length, 5000)
    // An upload of unknown length that streams is not observed (README), never as 0 bytes.
    assert.equal(await metric(g.adminUrl, 'sluice_http_request_size_bytes_bucket', { route: 'up', le: '0' }), 0, 'a 5000-byte upload landed in the le="0" (no body) bucket')
    assert.equal(await metric(g.adminUrl, 'sluice_http_request_size_bytes_count', { route: 'up' }), 0)
  } finally { await g.close() }
})

test('sluice_cache_entries follows an unsafe-method invalidation at once, not at the next 5 s sample', async () => {
  origin.on('/inv/x', (req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' }); res.end(req.method === 'GET' ? 'v' : 'ok') })
  const g = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', '    upstream: origin\n    cache: { enabled: true }\n'))
  try {
    await (await request(g.url + '/inv/x')).body.text()
    assert.equal(await metric(g.adminUrl, 'sluice_cache_entries', { tier: 'memory' }), 1)
    const r = await request(g.url + '/inv/x', { method: 'POST', body: 'x' })
    await r.body.text()
    assert.equal(r.statusCode, 200)
    assert.equal(await metric(g.adminUrl, 'sluice_cache_entries', { tier: 'memory' }), 0)
  } finally { await g.close() }
})

test('a request Fastify refuses itself (a path it cannot decode) is timed from its arrival, not observed as 0 s', async () => {
  const g = await startTestGateway(simpleConfig(origin.url))
  try {
    const r = await raw(g.url, 'GET /%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    assert.match(r, /^HTTP\/1\.1 400 /)
    assert.match(r, /SLUICE_ERR_BAD_PATH/)
    await until('the refusal is observed', async () => await metric(g.adminUrl, 'sluice_http_request_duration_seconds_count', { route: 'none' }) === 1)
    assert.ok(await metric(g.adminUrl, 'sluice_http_request_duration_seconds_sum', { route: 'none' }) > 0, 'its duration is the time it took, not 0')
    const line = g.logs.find((l) => l.msg === 'request' && l.route === 'none')
    assert.ok(line !== undefined && (line.ms as number) > 0, JSON.stringify(line))
  } finally { await g.close() }
})

test('while draining, a new request on an open keep-alive connection gets 503 SLUICE_ERR_SHUTTING_DOWN, counted (route none) and access-logged', async () => {
  const held: Array<() => void> = []
  origin.on('/drain/held', (_req, res) => { held.push(() => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('held') }) })
  origin.on('/drain/ok', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok') })
  const g = await startTestGateway(simpleConfig(origin.url))
  const u = new URL(g.url)
  const s = connect(Number(u.port), u.hostname)
  let out = ''
  s.on('data', (d) => { out += String(d) })
  const ended = once(s, 'close')
  await once(s, 'connect')
  let closing: Promise<void> | null = null
  try {
    // The connection is busy with a held request, so the drain does not close it as idle.
    s.write('GET /drain/held HTTP/1.1\r\nHost: x\r\n\r\n')
    await until('the origin holds the request', () => held.length === 1)
    closing = g.gw.close(5000)
    // The listener stops accepting once the drain has begun (Fastify is closing by then).
    await until('new connections are refused', () => new Promise<boolean>((resolve) => {
      const c = connect(Number(u.port), u.hostname)
      c.once('connect', () => { c.destroy(); resolve(false) })
      c.once('error', () => resolve(true))
    }))
    const before = sampleSum(await g.gw.metrics.registry.metrics(), 'sluice_http_requests_total', { route: 'none', status_class: '5xx' })
    s.write('GET /drain/ok HTTP/1.1\r\nHost: x\r\n\r\n')
    // Answered at once (queued behind the held answer), counted and logged when answered.
    await until('the refusal is counted', async () => sampleSum(await g.gw.metrics.registry.metrics(), 'sluice_http_requests_total', { route: 'none', status_class: '5xx' }) === before + 1)
  } finally {
    held[0]?.()
    await ended
    await closing
  }
  const responses = out.split(/(?=HTTP\/1\.1 )/)
  assert.equal(responses.length, 2, out)
  assert.match(responses[0], /^HTTP\/1\.1 200 /)
  assert.match(responses[1], /^HTTP\/1\.1 503 /)
  assert.match(responses[1], /SLUICE_ERR_SHUTTING_DOWN/)
  assert.match(responses[1], /connection: close/i)
  assert.equal(origin.count('/drain/ok'), 0, 'the refused request never reached the origin')
  const lines = g.logs.filter((l) => l.msg === 'request')
  assert.deepEqual(lines.map((l) => [l.route, l.status, l.err ?? null]).sort(), [['all', 200, null], ['none', 503, 'SLUICE_ERR_SHUTTING_DOWN']])
})

/** A route caching everything (`extra`: more of its YAML, e.g. compression). */
const cachedRoute = (extra = '') => simpleConfig(origin.url).replace('    upstream: origin\n', `    upstream: origin\n    cache: { enabled: true }\n${extra}`)
/** The gateway's own L1 figures, which the gauges should read. */
const l1 = (g: { gw: { cache: { stats (): Record<string, unknown> } } }) => g.gw.cache.stats().memory as { entries: number; bytes: number }

test('the L1 gauges follow an expired entry dropped on lookup at once', async () => {
  let t = Date.now()
  let cacheable = true
  origin.on('/gauge/expired', (_req, res) => { res.writeHead(200, { 'cache-control': cacheable ? 'max-age=1' : 'no-store', 'content-type': 'text/plain' }); res.end('v') })
  const g = await startTestGateway(cachedRoute(), { now: () => t })
  try {
    await (await request(g.url + '/gauge/expired')).body.text()
    assert.equal(await metric(g.adminUrl, 'sluice_cache_entries', { tier: 'memory' }), 1)
    t += 5000
    cacheable = false // nothing new is stored: only the lookup's drop changes L1
    await (await request(g.url + '/gauge/expired')).body.text()
    assert.equal(l1(g).entries, 0)
    assert.equal(await metric(g.adminUrl, 'sluice_cache_entries', { tier: 'memory' }), 0)
    assert.equal(await metric(g.adminUrl, 'sluice_cache_bytes', { tier: 'memory' }), 0)
  } finally { await g.close() }
})

test('the L1 gauges follow an L2 hit kept in L1 at once', async () => {
  const redis = await startRedis()
  const yaml = cachedRoute() + `redis: { url: "${redis.url}", keyPrefix: "${redis.prefix}" }\n`
  const a = await startTestGateway(yaml)
  const b = await startTestGateway(yaml)
  origin.on('/gauge/l2', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' }); res.end('shared') })
  try {
    const get = async (base: string) => { const r = await request(base + '/gauge/l2', { headers: { host: 'shop.example' } }); await r.body.text(); return String(r.headers['cache-status']) }
    await get(a.url)
    const c = redis.client()
    await until('the L2 record', async () => (await c.keys(`${redis.prefix}{*}c:G|shop.example|/gauge/l2`)).length > 0)
    assert.match(await get(b.url), /^sluice; hit/)
    assert.equal(l1(b).entries, 1)
    assert.equal(await metric(b.adminUrl, 'sluice_cache_entries', { tier: 'memory' }), 1)
    assert.equal(await metric(b.adminUrl, 'sluice_cache_bytes', { tier: 'memory' }), l1(b).bytes)
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('the L1 gauges follow the encoded copies added to a stored entry at once', async () => {
  const body = 'compressible text '.repeat(500)
  origin.on('/gauge/grew', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain', 'content-length': String(body.length) }); res.end(body) })
  const g = await startTestGateway(cachedRoute('    compression: { enabled: true }\n'))
  try {
    await (await request(g.url + '/gauge/grew')).body.text()
    const identityOnly = l1(g).bytes
    // The copies are made in the background; a hit served gzip from the store says they are there.
    await until('a stored gzip copy', async () => {
      const r = await request(g.url + '/gauge/grew', { headers: { 'accept-encoding': 'gzip' } })
      await r.body.arrayBuffer()
      return r.headers['content-encoding'] === 'gzip' && /^sluice; hit/.test(String(r.headers['cache-status']))
    })
    assert.ok(l1(g).bytes > identityOnly)
    assert.equal(await metric(g.adminUrl, 'sluice_cache_bytes', { tier: 'memory' }), l1(g).bytes)
  } finally { await g.close() }
})
