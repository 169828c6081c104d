// Observability review (tracing, request IDs, access lines) as an operator running an
// OpenTelemetry collector and JSON access logs sees them: real gateways, a real OTLP/HTTP
// receiver, real origins on loopback.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { connect as netConnect } from 'node:net'
import { once } from 'node:events'
import pino from 'pino'
import { Value } from '@sinclair/typebox/value'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { receiver, attr } from '../helpers/otlp.js'
import { Tracing, TracingSchema, type TracingConfig } from '../../src/observability/tracing.js'

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}) })

async function gateway (yaml: string): Promise<TestGateway> {
  const g = await startTestGateway(yaml)
  closers.push(() => g.close())
  return g
}

test('tracing: url.path is the path alone; the query string goes in url.query (OTel HTTP semantic conventions)', async () => {
  const rx = await receiver(closers)
  const origin = await startOrigin()
  closers.push(() => origin.close())
  const g = await gateway(`tracing: { otlp: { url: "${rx.url}" }, exportDelayMs: 50, sampleRatio: 1 }\nupstreams:\n  api: { url: "${origin.url}" }\nroutes:\n  - { name: pass, match: { pathPrefix: / }, upstream: api }\n`)
  assert.equal((await fetch(g.url + '/items/7?token=s3cret&page=2')).status, 200)
  assert.equal((await fetch(g.url + '/plain')).status, 200)
  await until('the SERVER spans arrive', () => rx.spans.filter((s) => s.kind === 2).length >= 2, { tries: 100, intervalMs: 50 })
  const withQuery = rx.spans.find((s) => s.kind === 2 && String(attr(s, 'url.path')).startsWith('/items/'))!
  assert.equal(attr(withQuery, 'url.path'), '/items/7', 'url.path must not carry the query string')
  assert.equal(attr(withQuery, 'url.query'), 'token=s3cret&page=2')
  const plain = rx.spans.find((s) => s.kind === 2 && attr(s, 'url.path') === '/plain')!
  assert.equal(attr(plain, 'url.query'), undefined, 'no url.query without a query string')
})

test('tracing: a method outside the known set is _OTHER in the span name and http.request.method (bounded), the original kept aside', async () => {
  const rx = await receiver(closers)
  const t = new Tracing(pino({ level: 'silent' }))
  closers.push(() => t.close())
  t.configure(Value.Default(TracingSchema, { otlp: { url: rx.url }, exportDelayMs: 60_000, sampleRatio: 1 }) as TracingConfig)
  // An HTTP/2 client may send any token as :method: each would be a span name of its own.
  for (const m of ['GET', 'X-RANDOM-4711']) {
    const span = t.server({}, m)!
    Tracing.finish(span, { route: 'api', status: 200, cache: 'none', retries: 0, method: m })
  }
  await t.close()
  await until('both spans arrive', () => rx.spans.length >= 2, { tries: 100, intervalMs: 50 })
  const names = rx.spans.map((s) => s.name).sort()
  assert.deepEqual(names, ['GET api', 'HTTP api'])
  const other = rx.spans.find((s) => s.name === 'HTTP api')!
  assert.equal(attr(other, 'http.request.method'), '_OTHER')
  assert.equal(attr(other, 'http.request.method_original'), 'X-RANDOM-4711')
})

test('request IDs: the warn line about a WebSocket upstream that fails names the request (reqId), as every warn line about a request does', async () => {
  const g = await gateway(`log: { level: info, accessLog: true }\nupstreams:\n  dead: { url: "http://127.0.0.1:1" }\nroutes:\n  - { name: ws, match: { pathPrefix: / }, upstream: dead, websocket: true }\n`)
  const c = netConnect(Number(new URL(g.url).port), '127.0.0.1')
  c.on('error', () => {})
  let out = ''
  c.on('data', (d) => { out += d.toString('latin1') })
  c.write('GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Request-Id: ws-dead-1\r\n\r\n')
  await once(c, 'close')
  assert.match(out, /^HTTP\/1\.1 502 /)
  assert.match(out, /"requestId":"ws-dead-1"/)
  await until('the access line', () => g.logs.some((l) => l.msg === 'request' && l.reqId === 'ws-dead-1'))
  const warn = g.logs.find((l) => l.msg === 'websocket upstream error')
  assert.ok(warn !== undefined, 'the failure is logged')
  assert.equal(warn.reqId, 'ws-dead-1', JSON.stringify(warn))
})

test('access line: an error Sluice answers itself logs the bytes of its JSON body (0 for HEAD), not -1 "unknown"', async () => {
  const g = await gateway(`log: { level: info, accessLog: true }\nupstreams:\n  dead: { url: "http://127.0.0.1:1", retry: { attempts: 0 } }\nroutes:\n  - { name: dead, match: { pathPrefix: /dead }, upstream: dead }\n`)
  const cases: [string, string, string, number][] = [['GET', '/nowhere', 'b-404', 404], ['HEAD', '/nowhere', 'b-404-head', 404], ['GET', '/dead', 'b-502', 502], ['GET', '/%zz', 'b-400', 400]]
  for (const [method, path, id, status] of cases) {
    const r = await fetch(g.url + path, { method, headers: { 'x-request-id': id } })
    assert.equal(r.status, status)
    const body = Buffer.from(await r.arrayBuffer())
    await until(`the access line of ${id}`, () => g.logs.some((l) => l.msg === 'request' && l.reqId === id))
    const line = g.logs.find((l) => l.msg === 'request' && l.reqId === id)!
    assert.equal(line.bytes, method === 'HEAD' ? 0 : body.length, JSON.stringify(line))
    assert.ok(body.length > 0 || method === 'HEAD')
  }
})
