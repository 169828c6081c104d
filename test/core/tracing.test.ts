// OpenTelemetry tracing against a real OTLP/HTTP receiver on loopback: the spans' parent and
// child ids, their attributes, the traceparent sent upstream, cache hits, and a dead collector.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { createHash } from 'node:crypto'
import { connect as netConnect, type Socket } from 'node:net'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { receiver, attr, hex, type OtlpSpan } from '../helpers/otlp.js'
import pino from 'pino'
import { Value } from '@sinclair/typebox/value'
import { Tracing, TracingSchema, type TracingConfig } from '../../src/observability/tracing.js'

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}) })

async function gateway (tracing: string, originUrl: string): Promise<TestGateway> {
  const g = await startTestGateway(`${tracing}upstreams:\n  api: { url: "${originUrl}" }\nroutes:\n  - { name: cached, match: { pathPrefix: /c/ }, upstream: api, cache: { enabled: true } }\n  - { name: pass, match: { pathPrefix: / }, upstream: api }\n`)
  closers.push(() => g.close())
  return g
}

test('a sampled client trace continues: SERVER span child of the client, CLIENT span per attempt, upstream traceparent parented on it; hits make spans too', async () => {
  const rx = await receiver(closers)
  const origin = await startOrigin()
  closers.push(() => origin.close())
  origin.on('/c/x', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('cached') })
  const g = await gateway(`tracing: { otlp: { url: "${rx.url}" }, exportDelayMs: 100, sampleRatio: 0, serviceName: sluice-test }\n`, origin.url)
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
  const clientSpan = '00f067aa0ba902b7'
  const res = await fetch(g.url + '/api/items', { headers: { traceparent: `00-${traceId}-${clientSpan}-01` } })
  assert.equal(res.status, 200)
  const sent = origin.seen.find((r) => r.url === '/api/items')!.headers.traceparent as string
  assert.match(sent, new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`), 'the upstream continues the same trace')
  await until('the spans reach the collector', () => rx.spans.length >= 2, { tries: 100, intervalMs: 50 })
  const server = rx.spans.find((s) => s.kind === 2)!
  const client = rx.spans.find((s) => s.kind === 3)!
  assert.equal(hex(server.traceId), traceId)
  assert.equal(hex(server.parentSpanId!), clientSpan, 'the SERVER span is a child of the client\'s span')
  assert.equal(hex(client.parentSpanId!), hex(server.spanId), 'the attempt is a child of the SERVER span')
  assert.equal(sent.split('-')[2], hex(client.spanId), 'the upstream\'s parent is the attempt span')
  assert.equal(attr(server, 'http.route'), 'pass')
  assert.equal(attr(server, 'sluice.cache'), 'none')
  assert.equal(attr(server, 'sluice.upstream'), 'api')
  assert.equal(Number(attr(server, 'http.response.status_code')), 200)
  assert.equal(Number(attr(server, 'sluice.retries')), 0)
  assert.equal(attr(client, 'sluice.upstream'), 'api')
  // sampleRatio 0: a request without a sampled parent makes no exported span...
  const before = rx.spans.length
  await fetch(g.url + '/api/other')
  // ...but a cache hit with a sampled parent does (the fast path makes its span).
  const tp = { traceparent: `00-${traceId}-${clientSpan}-01` }
  await (await fetch(g.url + '/c/x', { headers: tp })).text()
  await (await fetch(g.url + '/c/x', { headers: tp })).text()
  await until('the hit span arrives', () => rx.spans.some((s) => attr(s, 'sluice.cache') === 'hit'), { tries: 100, intervalMs: 50 })
  assert.ok(!rx.spans.slice(before).some((s) => attr(s, 'url.path') === '/api/other'), 'an unsampled trace exports nothing')
  assert.deepEqual([...new Set(rx.types)], ['application/x-protobuf'], 'OTLP/protobuf by default')
})

test('otlp.protocol http/json exports OTLP/JSON with the same spans', async () => {
  const rx = await receiver(closers)
  const origin = await startOrigin()
  closers.push(() => origin.close())
  const g = await gateway(`tracing: { otlp: { url: "${rx.url}", protocol: http/json }, exportDelayMs: 100, sampleRatio: 1 }\n`, origin.url)
  assert.equal((await fetch(g.url + '/api/json')).status, 200)
  await until('the spans reach the collector', () => rx.spans.length >= 2, { tries: 100, intervalMs: 50 })
  assert.deepEqual([...new Set(rx.types)], ['application/json'])
  const server = rx.spans.find((s) => s.kind === 2)!
  const client = rx.spans.find((s) => s.kind === 3)!
  assert.equal(hex(client.parentSpanId!), hex(server.spanId))
  assert.equal(attr(server, 'url.path'), '/api/json')
  // Times: the attempt lies within its request, and both are of this minute.
  const t = (sp: OtlpSpan, k: 'startTimeUnixNano' | 'endTimeUnixNano'): number => Number(BigInt((sp as unknown as Record<string, string>)[k]) / 1000000n)
  const now = Date.now()
  assert.ok(t(server, 'startTimeUnixNano') > now - 60_000 && t(server, 'endTimeUnixNano') <= now, 'epoch times')
  assert.ok(t(server, 'startTimeUnixNano') <= t(client, 'startTimeUnixNano') && t(client, 'endTimeUnixNano') <= t(server, 'endTimeUnixNano'), 'the attempt within its request')
  assert.equal((server as unknown as { status?: { code?: number } }).status?.code ?? 0, 0)
  // An upstream 5xx marks both spans as errors.
  origin.on('/api/fail', (_req, res) => { res.writeHead(503); res.end() })
  assert.equal((await fetch(g.url + '/api/fail')).status, 503)
  await until('the error spans arrive', () => rx.spans.filter((s) => attr(s, 'url.path') === '/api/fail').length === 1 && rx.spans.length >= 4, { tries: 100, intervalMs: 50 })
  const failed = rx.spans.slice(2) as unknown as { kind: number, status?: { code?: number } }[]
  assert.deepEqual(failed.map((s) => [s.kind, s.status?.code]).sort(), [[2, 2], [3, 2]])
})

test('a dead collector never fails or slows a request: every request is answered', async () => {
  const origin = await startOrigin()
  closers.push(() => origin.close())
  const g = await gateway('tracing: { otlp: { url: "http://127.0.0.1:9/v1/traces", timeoutMs: 200 }, exportDelayMs: 100, sampleRatio: 1, maxQueueSize: 16 }\n', origin.url)
  for (let i = 0; i < 100; i++) assert.equal((await fetch(g.url + '/x')).status, 200)
})

test('a WebSocket upgrade is traced like a request: SERVER span, CLIENT span for the handshake, traceparent upstream', async () => {
  const rx = await receiver(closers)
  const origin = await startOrigin()
  closers.push(() => origin.close())
  let upstreamTp = ''
  const upgraded: Socket[] = []
  origin.server.on('upgrade', (req, socket: Socket) => {
    upgraded.push(socket)
    upstreamTp = String(req.headers.traceparent)
    const accept = createHash('sha1').update(String(req.headers['sec-websocket-key']) + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
  })
  closers.push(async () => { for (const u of upgraded) u.destroy() })
  const g = await gateway(`tracing: { otlp: { url: "${rx.url}" }, exportDelayMs: 100, sampleRatio: 0 }\n`, origin.url)
  const traceId = '0af7651916cd43dd8448eb211c80319c'
  const clientSpan = 'b7ad6b7169203331'
  const c = netConnect(Number(new URL(g.url).port), '127.0.0.1')
  c.on('error', () => {})
  c.write(`GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\ntraceparent: 00-${traceId}-${clientSpan}-01\r\n\r\n`)
  const [head] = await once(c, 'data') as [Buffer]
  assert.match(head.toString('latin1'), /^HTTP\/1\.1 101 /)
  c.destroy() // the tunnel ends: its SERVER span ends with it
  await until('the tunnel\'s spans', () => rx.spans.filter((s) => hex(s.traceId) === traceId).length >= 2, { tries: 100, intervalMs: 50 })
  const mine = rx.spans.filter((s) => hex(s.traceId) === traceId)
  const server = mine.find((s) => s.kind === 2)!
  const client = mine.find((s) => s.kind === 3)!
  assert.equal(hex(server.parentSpanId!), clientSpan)
  assert.equal(hex(client.parentSpanId!), hex(server.spanId))
  assert.equal(upstreamTp.split('-')[2], hex(client.spanId), 'the upstream\'s parent is the handshake\'s span')
  assert.equal(attr(server, 'http.route'), 'pass')
  assert.equal(Number(attr(server, 'http.response.status_code')), 101)
  assert.equal(Number(attr(client, 'http.response.status_code')), 101)
})

test('reload turns tracing on and off', async () => {
  const rx = await receiver(closers)
  const origin = await startOrigin()
  closers.push(() => origin.close())
  const g = await gateway('', origin.url)
  await fetch(g.url + '/a')
  assert.equal(origin.seen.at(-1)?.headers.traceparent, undefined, 'off: no traceparent made up')
  g.write(`tracing: { otlp: { url: "${rx.url}" }, exportDelayMs: 100, sampleRatio: 1 }\nupstreams:\n  api: { url: "${origin.url}" }\nroutes:\n  - { name: pass, match: { pathPrefix: / }, upstream: api }\n`)
  assert.equal((await g.gw.reloader.reload('test')).ok, true)
  await fetch(g.url + '/b')
  assert.match(String(origin.seen.at(-1)?.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
  await until('spans exported after the reload', () => rx.spans.length > 0, { tries: 100, intervalMs: 50 })
})

test('an invalid traceparent is ignored (W3C): it neither forces sampling at sampleRatio 0 nor is continued', async () => {
  const origin = await startOrigin()
  closers.push(() => origin.close())
  let seen: string | undefined
  origin.on('/tp', (req, res) => { seen = req.headers.traceparent as string | undefined; res.end('ok') })
  const g = await gateway('tracing: { otlp: { url: "http://127.0.0.1:9/v1/traces", timeoutMs: 200 }, exportDelayMs: 100, sampleRatio: 0, maxQueueSize: 16 }\n', origin.url)
  const id = '4bf92f3577b34da6a3ce929d0e0e4736'
  const span = '00f067aa0ba902b7'
  for (const bad of [`ff-${id}-${span}-01`, `00-${'0'.repeat(32)}-${span}-01`, `00-${id}-${'0'.repeat(16)}-01`, `00-${id.toUpperCase()}-${span}-01`, `00-${id}-${span}-01-extra`, 'x'.repeat(53) + '01']) {
    seen = undefined
    assert.equal((await fetch(g.url + '/tp', { headers: { traceparent: bad } })).status, 200)
    assert.equal(seen, bad, `${bad}: not sampled, so it reaches the upstream as sent (no new trace was started for it)`)
  }
  // A valid sampled one is continued: the upstream gets the same trace id with a new parent.
  await fetch(g.url + '/tp', { headers: { traceparent: `00-${id}-${span}-01` } })
  assert.match(String(seen), new RegExp(`^00-${id}-(?!${span})[0-9a-f]{16}-01$`))
})

test('closing tracing whose collector is down stops the export thread (the SDK skips it when the last flush fails)', async () => {
  const t = new Tracing(pino({ level: 'silent' }))
  t.configure(Value.Default(TracingSchema, { otlp: { url: 'http://127.0.0.1:9/v1/traces', timeoutMs: 200 }, exportDelayMs: 60_000, sampleRatio: 1 }) as TracingConfig)
  const span = t.server({}, 'GET')
  assert.ok(span !== null)
  Tracing.finish(span, { route: 'r', status: 200, cache: 'none', retries: 0, method: 'GET' })
  const exporter = (t as unknown as { active: { exporter: { dead: boolean } } }).active.exporter
  await t.close() // flushes the span to a collector that refuses it
  assert.equal(exporter.dead, true, 'the export thread was stopped')
})
