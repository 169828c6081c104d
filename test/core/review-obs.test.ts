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
