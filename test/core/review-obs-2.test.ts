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

test('access line and span: an error Fastify answers before the pipeline (a QUERY with an unparseable Content-Type, an undecodable path) names its code and is timed', async () => {
  const rx = await receiver(closers)
  const origin = await startOrigin()
  closers.push(() => origin.close())
  const g = await gateway(`log: { level: info, accessLog: true }\ntracing: { otlp: { url: "${rx.url}" }, exportDelayMs: 50, sampleRatio: 1 }\nupstreams:\n  api: { url: "${origin.url}" }\nroutes:\n  - { name: pass, match: { pathPrefix: / }, upstream: api }\n`)
  // A QUERY's Content-Type is still Fastify's to judge (RFC 10008); other methods' are forwarded as sent.
  const ct = await request(g.url + '/submit', { method: 'QUERY', headers: { 'content-type': 'not a media type', 'x-request-id': 'early-ct' }, body: 'x=1' })
  const ctBody = await ct.body.json() as { error: string }
  assert.equal(ct.statusCode, 400)
  const path = await request(g.url + '/%zz', { headers: { 'x-request-id': 'early-path' } })
  const pathBody = await path.body.json() as { error: string }
  assert.equal(path.statusCode, 400)
  assert.equal(origin.seen.length, 0, 'neither reached the origin')
  for (const [id, code] of [['early-ct', ctBody.error], ['early-path', pathBody.error]]) {
    await until(`the access line of ${id}`, () => accessLine(g, id) !== undefined)
    const line = accessLine(g, id)!
    assert.equal(line.err, code, `the access line names the code of the answer: ${JSON.stringify(line)}`)
    assert.ok((line.ms as number) > 0, `timed from the request's arrival, not 0: ${JSON.stringify(line)}`)
  }
  await until('both SERVER spans arrive', () => rx.spans.filter((s) => s.kind === 2).length >= 2, { tries: 100, intervalMs: 50 })
  const errors = rx.spans.filter((s) => s.kind === 2).map((s) => attr(s, 'error.type')).sort()
  assert.deepEqual(errors, [ctBody.error, pathBody.error].sort())
})

test('access line: the refusals before routing (a bad Host, a transfer coding Sluice cannot decode) are timed from the request\'s arrival, not ms 0', async () => {
  const origin = await startOrigin()
  closers.push(() => origin.close())
  const g = await gateway(`log: { level: info, accessLog: true }\nupstreams:\n  api: { url: "${origin.url}" }\nroutes:\n  - { name: pass, match: { pathPrefix: / }, upstream: api }\n`)
  const host = await raw(g.url, 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-Request-Id: pre-host\r\n\r\n')
  assert.match(host, /^HTTP\/1\.1 400 /)
  const te = await raw(g.url, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nX-Request-Id: pre-te\r\n\r\n0\r\n\r\n')
  assert.match(te, /^HTTP\/1\.1 501 /)
  for (const [id, code] of [['pre-host', 'SLUICE_ERR_BAD_REQUEST'], ['pre-te', 'SLUICE_ERR_NOT_IMPLEMENTED']]) {
    await until(`the access line of ${id}`, () => accessLine(g, id) !== undefined)
    const line = accessLine(g, id)!
    assert.equal(line.err, code)
    assert.ok((line.ms as number) > 0, `timed, not 0: ${JSON.stringify(line)}`)
  }
})

test('debug lines: a failover to another target and a retry name the request (reqId)', async () => {
  const g = await gateway(`log: { level: debug, accessLog: true }\nupstreams:\n  dead:\n    targets: [ "http://127.0.0.1:1", "http://127.0.0.1:2" ]\n    retry: { attempts: 1, backoffMs: 1, maxBackoffMs: 1 }\nroutes:\n  - { name: dead, match: { pathPrefix: / }, upstream: dead }\n`, 'debug')
  const r = await request(g.url + '/x', { headers: { 'x-request-id': 'fo-1' } })
  await r.body.dump()
  assert.ok(r.statusCode >= 502, String(r.statusCode))
  await until('the access line', () => accessLine(g, 'fo-1') !== undefined)
  const failover = g.logs.filter((l) => l.msg === 'upstream target failed; trying another')
  const retry = g.logs.filter((l) => l.msg === 'retrying upstream request')
  assert.ok(failover.length >= 1, 'a failover was logged')
  assert.ok(retry.length >= 1, 'a retry was logged')
  for (const l of [...failover, ...retry]) assert.equal(l.reqId, 'fo-1', JSON.stringify(l))
})

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

test('HTTP/2: the warning when answering a hit on the stream fails names the request (reqId) the full path answers with', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-obs2-'))
  closers.push(async () => rmSync(dir, { recursive: true, force: true }))
  const k = join(dir, 'k.pem')
  const c = join(dir, 'c.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', k, '-out', c, '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })
  const lines: Line[] = []
  const log = pino({ level: 'info' }, new Writable({ write (chunk, _e, cb) { for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l)); cb() } }))
  const tlsCfg = Value.Default(ListenTlsSchema, { certFile: c, keyFile: k }) as ListenTlsConfig
  const edge = createEdgeServer({
    http1: { maxHeaderSize: 16384, headersTimeout: 5000, requestTimeout: 10000, keepAliveTimeout: 5000, connectionsCheckingInterval: 1000, maxRequestsPerSocket: 0, maxHeadersCount: 100 },
    tls: { material: { cert: readFileSync(c), key: readFileSync(k), minVersion: 'TLSv1.2', validTo: '', subject: '' }, cfg: tlsCfg },
    http2: Value.Default(Http2Schema, {}) as Http2Config,
    log,
    requestIdOf: (h: IncomingHttpHeaders) => h['x-request-id'] as string | undefined
  }, (req, res) => {
    // As the gateway's listener: the request gets its ID (here a fresh one), then its answer.
    req.headers['x-request-id'] = 'full-path-id'
    res.setHeader('x-request-id', 'full-path-id')
    res.end('full path')
  })
  // A hook that fails before answering (as a fast-path hit whose write throws).
  edge.onStream(() => { throw new Error('boom') })
  edge.server.listen(0, '127.0.0.1')
  await once(edge.server, 'listening')
  closers.push(async () => { edge.closeAll(); await new Promise((resolve) => edge.server.close(resolve)) })
  const port = (edge.server.address() as AddressInfo).port
  const session = h2connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false })
  closers.push(async () => { session.destroy() })
  const s = session.request({ ':path': '/c/hit' })
  let text = ''
  s.setEncoding('utf8')
  s.on('data', (d) => { text += d })
  const [headers] = await once(s, 'response') as [IncomingHttpHeaders]
  await once(s, 'end')
  assert.equal(text, 'full path')
  assert.equal(headers['x-request-id'], 'full-path-id')
  const warn = lines.find((l) => String(l.msg).startsWith('HTTP/2: answering a hit on the stream failed'))
  assert.ok(warn !== undefined, 'the failure is logged')
  assert.equal(warn.reqId, 'full-path-id', JSON.stringify(warn))
})
