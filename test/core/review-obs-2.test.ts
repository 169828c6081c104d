// Observability review, second round, as an operator reading JSON access lines, debug logs,
// traces and Prometheus metrics sees them: real gateways, real origins and a real OTLP/HTTP
// receiver on loopback.
// - An answer given before the pipeline runs (Fastify's own 415/400, a path it cannot decode,
//   Sluice's refusals before routing) is timed from the request's arrival, names its error code
//   in `err` and gets a SERVER span.
// - Retry and failover debug lines, and the HTTP/2 "answering a hit failed" warning, carry reqId.
// - sluice_upstream_retries_total counts retries sent, not retries scheduled.
// - A POST query body buffered for its cache key that is larger than retry.maxBufferBytes is
//   not retried (README: larger bodies are never retried).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as netConnect } from 'node:net'
import { connect as h2connect, type IncomingHttpHeaders } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { Writable } from 'node:stream'
import pino from 'pino'
import { Value } from '@sinclair/typebox/value'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { metric } from '../helpers/metrics.js'
import { until } from '../helpers/wait.js'
import { receiver, attr } from '../helpers/otlp.js'
import { createEdgeServer } from '../../src/edge/server.js'
import { Http2Schema, ListenTlsSchema, type Http2Config, type ListenTlsConfig } from '../../src/edge/config.js'

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}) })

async function gateway (yaml: string, level = 'info'): Promise<TestGateway> {
  const g = await startTestGateway(yaml, { level })
  closers.push(() => g.close())
  return g
}

type Line = Record<string, unknown>
const accessLine = (g: TestGateway, id: string): Line | undefined => g.logs.find((l) => l.msg === 'request' && l.reqId === id)

/** A raw HTTP/1.1 exchange: the bytes back until the server closes (or `ms` pass). */
async function raw (url: string, text: string): Promise<string> {
  const c = netConnect(Number(new URL(url).port), '127.0.0.1')
  c.on('error', () => {})
  let out = ''
  c.on('data', (d) => { out += d.toString('latin1') })
  c.write(text)
  const t = setTimeout(() => c.destroy(), 3000)
  await once(c, 'close')
  clearTimeout(t)
  return out
}

test('sluice_upstream_retries_total: a retry scheduled but never sent (the client left during its backoff) is not counted', async () => {
  const origin = await startOrigin()
  closers.push(() => origin.close())
  origin.on('/busy', (_req, res) => { res.writeHead(503, { 'retry-after': '3', 'content-length': '4' }); res.end('busy') })
  const g = await gateway(`log: { level: info, accessLog: true }\nupstreams:\n  main:\n    url: "${origin.url}"\n    retry: { attempts: 1, maxBackoffMs: 10000 }\nroutes:\n  - { name: busy, match: { pathPrefix: / }, upstream: main, timeoutMs: 20000 }\n`)
  const ac = new AbortController()
  const pending = request(g.url + '/busy', { headers: { 'x-request-id': 'gone-1' }, signal: ac.signal }).catch(() => null)
  await until('the first attempt reached the origin', () => origin.count('/busy') === 1)
  // The gateway waits out Retry-After (3 s) before the retry: the client leaves meanwhile.
  await new Promise((resolve) => setTimeout(resolve, 100))
  ac.abort()
  await pending
  await until('the access line (499)', () => accessLine(g, 'gone-1') !== undefined, { tries: 200, intervalMs: 50 })
  assert.equal(accessLine(g, 'gone-1')!.status, 499)
  assert.equal(origin.count('/busy'), 1, 'no retry went out')
  assert.equal(await metric(g.adminUrl, 'sluice_upstream_retries_total', { upstream: 'main' }), 0, 'a retry that was never sent is not counted')
})

test('retries: a POST query body buffered for its cache key but larger than retry.maxBufferBytes is not retried (README: larger bodies are never retried)', async () => {
  const origin = await startOrigin()
  closers.push(() => origin.close())
  origin.on('/q', (_req, res) => { res.writeHead(503, { 'content-length': '4' }); res.end('down') })
  const g = await gateway(`log: { level: info, accessLog: true }\nupstreams:\n  main:\n    url: "${origin.url}"\n    retry: { attempts: 2, backoffMs: 1, maxBackoffMs: 1, maxBufferBytes: 1024 }\nroutes:\n  - name: q\n    match: { pathPrefix: / }\n    upstream: main\n    retry: { nonIdempotent: true }\n    cache: { enabled: true, queryPost: { enabled: true, maxBodyBytes: 65536 } }\n`)
  const post = async (bytes: number): Promise<number> => {
    const r = await request(g.url + '/q', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ q: 'x'.repeat(bytes) }) })
    await r.body.dump()
    return r.statusCode
  }
  // A small body (within maxBufferBytes) is retried: the origin sees all three attempts.
  assert.equal(await post(100), 503)
  assert.equal(origin.count('/q'), 3)
  // A 4 KB body, read whole for the key, is over maxBufferBytes: one attempt only.
  assert.equal(await post(4096), 503)
  assert.equal(origin.count('/q'), 4, 'a body over retry.maxBufferBytes must not be sent again')
  assert.equal(origin.seen[3].body.length, 4096 + 8, 'the body went out whole')
})
