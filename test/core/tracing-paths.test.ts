// Tracing and request IDs on the paths a review found without them: a cache fill (its
// attempts are CLIENT spans; the origin never gets the client's traceparent), a background
// refresh (not in the client's trace), an answer Sluice gives before the upstream (a SERVER
// span all the same), a reload in the middle of a request (its span is still exported), and
// Fastify's own 400 for a malformed URL (the request ID).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { receiver, attr, hex } from '../helpers/otlp.js'

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}) })

async function gw (rx: string, originUrl: string, extraRoutes = '', upExtra = ''): Promise<TestGateway> {
  const g = await startTestGateway(`tracing: { otlp: { url: "${rx}" }, exportDelayMs: 50, sampleRatio: 0 }\nupstreams:\n  api: { url: "${originUrl}"${upExtra} }\nroutes:\n${extraRoutes}  - { name: cached, match: { pathPrefix: /c/ }, upstream: api, cache: { enabled: true } }\n  - { name: pass, match: { pathPrefix: /api/ }, upstream: api }\n`)
  closers.push(() => g.close())
  return g
}
async function org (): Promise<Origin> { const o = await startOrigin(); closers.push(() => o.close()); return o }
const TID = '4bf92f3577b34da6a3ce929d0e0e4736'
const CSPAN = '00f067aa0ba902b7'
const TP = `00-${TID}-${CSPAN}-01`

test('cache miss (fill): upstream traceparent is parented on a CLIENT span, not the client\'s own', async () => {
  const rx = await receiver(closers)
  const origin = await org()
  origin.on('/c/miss', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('x') })
  const g = await gw(rx.url, origin.url)
  assert.equal((await fetch(g.url + '/c/miss', { headers: { traceparent: TP } })).status, 200)
  const sent = String(origin.seen.find((r) => r.url === '/c/miss')!.headers.traceparent)
  await until('server and client spans', () => rx.spans.some((s) => s.kind === 2) && rx.spans.some((s) => s.kind === 3), { tries: 100, intervalMs: 50 })
  const server = rx.spans.find((s) => s.kind === 2)!
  assert.equal(attr(server, 'sluice.cache'), 'miss')
  assert.notEqual(sent, TP, 'the upstream must not get the client\'s traceparent unchanged')
  const client = rx.spans.find((s) => s.kind === 3)
  assert.ok(client !== undefined, 'a CLIENT span for the fill attempt')
  assert.equal(sent.split('-')[2], hex(client.spanId))
})

test('retries: one CLIENT span per attempt, distinct ids, same request ID upstream, sluice.retries counted', async () => {
  const rx = await receiver(closers)
  const origin = await org()
  let n = 0
  origin.on('/api/r', (_req, res) => { n++; res.writeHead(n === 1 ? 503 : 200); res.end('x') })
  const g = await gw(rx.url, origin.url, '', ', retry: { attempts: 2, backoffMs: 10, maxBackoffMs: 10 }')
  const r = await fetch(g.url + '/api/r', { headers: { traceparent: TP, tracestate: 'k=v', 'x-request-id': 'abc-1' } })
  assert.equal(r.status, 200)
  const seen = origin.seen.filter((s) => s.url === '/api/r')
  assert.equal(seen.length, 2)
  assert.deepEqual(seen.map((s) => s.headers['x-request-id']), ['abc-1', 'abc-1'])
  assert.deepEqual(seen.map((s) => s.headers.tracestate), ['k=v', 'k=v'])
  await until('spans', () => rx.spans.filter((s) => s.kind === 3).length >= 2 && rx.spans.some((s) => s.kind === 2), { tries: 100, intervalMs: 50 })
  const server = rx.spans.find((s) => s.kind === 2)!
  const clients = rx.spans.filter((s) => s.kind === 3)
  assert.equal(new Set(clients.map((c) => c.spanId)).size, 2)
  for (const c of clients) assert.equal(hex(c.parentSpanId!), hex(server.spanId))
  assert.deepEqual(seen.map((s) => String(s.headers.traceparent).split('-')[2]).sort(), clients.map((c) => hex(c.spanId)).sort())
  assert.equal(Number(attr(server, 'sluice.retries')), 1)
})

test('a request Sluice answers 404 (no route) still gets a SERVER span', async () => {
  const rx = await receiver(closers)
  const origin = await org()
  const g = await gw(rx.url, origin.url)
  assert.equal((await fetch(g.url + '/nowhere', { headers: { traceparent: TP } })).status, 404)
  await fetch(g.url + '/api/after', { headers: { traceparent: TP } })
  await until('the later request\'s span', () => rx.spans.some((s) => attr(s, 'url.path') === '/api/after'), { tries: 100, intervalMs: 50 })
  assert.ok(rx.spans.some((s) => s.kind === 2 && Number(attr(s, 'http.response.status_code')) === 404), 'a SERVER span for the 404')
})

test('stale-while-revalidate background refresh: refresh upstream request not sent with the client traceparent', async () => {
  const rx = await receiver(closers)
  const origin = await org()
  // Stale at once, and served stale while a background refresh runs.
  origin.on('/c/swr', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=0, stale-while-revalidate=60' }); res.end('x') })
  const g = await gw(rx.url, origin.url)
  await (await fetch(g.url + '/c/swr')).text()
  const r = await fetch(g.url + '/c/swr', { headers: { traceparent: TP } })
  await r.text()
  assert.match(String(r.headers.get('cache-status')), /fwd=stale/)
  await until('refresh', () => origin.count('/c/swr') === 2, { tries: 100, intervalMs: 20 })
  const sent = String(origin.seen.filter((s) => s.url === '/c/swr')[1].headers.traceparent)
  assert.equal(sent, 'undefined', 'the refresh is not part of the client\'s trace: no traceparent of the client\'s goes upstream')
})

test('reload that changes tracing while a sampled request is in flight: its SERVER span is still exported', async () => {
  const rx = await receiver(closers)
  const origin = await org()
  origin.on('/api/slow', (_req, res) => { setTimeout(() => { res.end('late') }, 600) })
  const g = await gw(rx.url, origin.url)
  const p = fetch(g.url + '/api/slow', { headers: { traceparent: TP } }).then((r) => r.text())
  await until('origin got it', () => origin.count('/api/slow') === 1, { tries: 100, intervalMs: 20 })
  g.write(`tracing: { otlp: { url: "${rx.url}" }, exportDelayMs: 50, sampleRatio: 0, serviceName: renamed }\nupstreams:\n  api: { url: "${origin.url}" }\nroutes:\n  - { name: pass, match: { pathPrefix: /api/ }, upstream: api }\n`)
  assert.equal((await g.gw.reloader.reload('test')).ok, true)
  await p
  await fetch(g.url + '/api/after', { headers: { traceparent: TP } })
  await until('the later request\'s span', () => rx.spans.some((s) => s.kind === 2 && attr(s, 'url.path') === '/api/after'), { tries: 100, intervalMs: 50 })
  await until('the SERVER span of the request in flight during the reload', () => rx.spans.some((s) => s.kind === 2 && attr(s, 'url.path') === '/api/slow'), { tries: 100, intervalMs: 50 })
})

test('a malformed URL Fastify refuses (400) still carries the request ID in header and body', async () => {
  const origin = await org()
  const g = await gw('http://127.0.0.1:9/v1/traces', origin.url)
  const { request } = await import('undici')
  const r = await request(g.url + '/api/%E0%A4%A', { headers: { 'x-request-id': 'mine-1' } })
  const body = await r.body.text()
  assert.equal(r.statusCode, 400, body)
  assert.equal(r.headers['x-request-id'], 'mine-1', 'header')
  assert.equal(JSON.parse(body).requestId, 'mine-1', 'body')
})
