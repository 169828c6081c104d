// Edges of the upstream stage (src/stages/upstream.ts) and of streamed answers (src/send.ts,
// src/pipeline.ts), with real loopback origins:
// - an answer refused for its Transfer-Encoding is a failure of the target's and the
//   breaker's (the breaker opens on them), named in the metrics and the 'upstream error' line;
// - a retry on an upstream status is logged at debug level as a retry on an error is;
// - a streamed body that fails before its first byte during a drain is still answered (502,
//   Connection: close), not cut.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer as netServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { startOrigin } from '../helpers/origin.js'
import { until } from '../helpers/wait.js'
import { metric } from '../helpers/metrics.js'
import { send, req } from '../hardening/raw.js'

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}) })

/** A raw origin: `answer` gets each connection once its first request head arrived. */
async function rawOrigin (answer: (s: Socket, path: string) => void): Promise<{ url: string, server: Server, heads: () => number }> {
  let heads = 0
  const server = netServer((s) => {
    let head = ''
    s.on('error', () => {})
    s.on('data', (c: Buffer) => {
      if (head.includes('\r\n\r\n')) return
      head += c.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      heads++
      answer(s, head.split(' ')[1] ?? '/')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, heads: () => heads }
}

async function gateway (yaml: string, level = 'info'): Promise<TestGateway> {
  const g = await startTestGateway(yaml, { level })
  closers.push(() => g.close())
  return g
}

const accessLine = (g: TestGateway, id: string) => g.logs.find((l) => l.msg === 'request' && l.reqId === id)

test('answers refused for their Transfer-Encoding are the breaker\'s failures: they open it, then a fast 503 SLUICE_ERR_CIRCUIT_OPEN', async () => {
  const o = await rawOrigin((s) => {
    s.end(Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n', 'latin1'))
  })
  const g = await gateway(simpleConfig(o.url).replace('    connectTimeoutMs: 1000\n', `    connectTimeoutMs: 1000
    retry: { attempts: 0 }
    outlierDetection: { consecutiveErrors: 100 }
    circuitBreaker: { volumeThreshold: 2, errorThresholdPercent: 50, resetTimeoutMs: 600000 }
`))
  const get = async (id: string) => {
    const r = await request(g.url + '/te', { headers: { 'x-request-id': id } })
    return { status: r.statusCode, headers: r.headers, body: await r.body.json() as Record<string, unknown> }
  }
  for (const id of ['te-1', 'te-2']) {
    const r = await get(id)
    assert.equal(r.status, 502)
    assert.equal(r.body.error, 'SLUICE_ERR_UPSTREAM_PROTOCOL')
  }
  assert.equal(o.heads(), 2)
  const open = await get('te-3')
  assert.equal(open.status, 503)
  assert.equal(open.body.error, 'SLUICE_ERR_CIRCUIT_OPEN')
  assert.ok(open.headers['retry-after'] !== undefined, 'Retry-After to half-open')
  assert.equal(o.heads(), 2, 'the open breaker sent nothing to the upstream')
  // Named as an upstream failure: the warn line gives its target; the metrics count the
  // attempts under `error` (no usable answer), not 2xx.
  const target = o.url.replace('http://', '')
  const warn = g.logs.filter((l) => l.msg === 'upstream error' && l.code === 'SLUICE_ERR_UPSTREAM_PROTOCOL')
  assert.equal(warn.length, 2, JSON.stringify(warn))
  for (const l of warn) {
    assert.equal(l.upstream, 'origin')
    assert.ok(typeof l.target === 'string' && l.target.includes(target), JSON.stringify(l))
  }
  assert.equal(await metric(g.adminUrl, 'sluice_upstream_request_duration_seconds_count', { upstream: 'origin', status_class: 'error' }), 2)
  assert.equal(await metric(g.adminUrl, 'sluice_upstream_request_duration_seconds_count', { upstream: 'origin', status_class: '2xx' }), 0)
  assert.equal(await metric(g.adminUrl, 'sluice_upstream_target_requests_total', { upstream: 'origin', class: 'error' }), 2)
  assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'origin' }), 2)
})

test('a retry on an upstream status gets the debug line a retry on an error gets (reqId, upstream, target, attempt, status)', async () => {
  const o = await startOrigin()
  closers.push(() => o.close())
  let n = 0
  o.on('/flaky', (_q, res) => {
    if (n++ === 0) { res.writeHead(503, { 'content-length': '4' }); res.end('busy'); return }
    res.writeHead(200, { 'content-length': '2' }); res.end('ok')
  })
  const g = await gateway(simpleConfig(o.url).replace('    connectTimeoutMs: 1000\n', '    connectTimeoutMs: 1000\n    retry: { attempts: 1, backoffMs: 1, maxBackoffMs: 1 }\n').replace('log: { level: info, accessLog: true }', 'log: { level: debug, accessLog: true }'), 'debug')
  const r = await request(g.url + '/flaky', { headers: { 'x-request-id': 'retry-status-1' } })
  assert.equal(r.statusCode, 200)
  assert.equal(await r.body.text(), 'ok')
  assert.equal(o.count('/flaky'), 2)
  const lines = g.logs.filter((l) => l.msg === 'retrying upstream request')
  assert.equal(lines.length, 1, JSON.stringify(lines))
  const l = lines[0]
  assert.equal(l.level, 20)
  assert.equal(l.reqId, 'retry-status-1')
  assert.equal(l.upstream, 'origin')
  assert.ok(typeof l.target === 'string' && l.target.includes(String(o.port)), JSON.stringify(l))
  assert.equal(l.attempt, 1)
  assert.equal(l.status, 503)
  assert.equal(typeof l.delay, 'number')
})

test('during a drain, a streamed body that fails before its first byte is still answered: 502 with Connection: close, not a cut', async () => {
  let held: Socket | null = null
  const o = await rawOrigin((s) => {
    // A head with a length, then nothing until the test resets the connection.
    s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\n', () => { held = s })
  })
  const g = await gateway(simpleConfig(o.url).replace('    connectTimeoutMs: 1000\n', '    connectTimeoutMs: 1000\n    retry: { attempts: 0 }\n'))
  const port = Number(new URL(g.url).port)
  const id = 'drain-502'
  const ex = send(port, req('GET /held HTTP/1.1', 'Host: a.example', `X-Request-Id: ${id}`), { waitMs: 10000 })
  await until('the origin sent its head', () => held !== null)
  // Let the head reach the gateway and its stream begin (nothing of it can go to the client yet).
  await new Promise((resolve) => setTimeout(resolve, 100))
  const server = (g.gw as unknown as { proxy: { server: { listening: boolean } } }).proxy.server
  const closing = g.gw.close(10000)
  // The server stops listening once the drain has begun (after Fastify's preClose hooks).
  await until('the drain began', () => !server.listening, { intervalMs: 5 })
  ;(held as Socket | null)!.resetAndDestroy()
  const r = await ex
  const res = r.responses[0]
  assert.ok(res !== undefined, `no response, only ${JSON.stringify(r.data.toString('latin1'))}`)
  assert.equal(res.status, 502)
  assert.deepEqual(res.headers.connection, ['close'])
  assert.deepEqual(res.headers['x-request-id'], [id])
  const body = JSON.parse(res.body.toString('utf8')) as Record<string, unknown>
  assert.equal(body.error, 'SLUICE_ERR_UPSTREAM_RESET')
  assert.equal(r.closed, true, 'the connection closes after it')
  await closing
  const line = accessLine(g, id)
  assert.ok(line !== undefined, JSON.stringify(g.logs.map((l) => l.msg)))
  assert.equal(line.status, 502)
  assert.equal(line.err, 'SLUICE_ERR_UPSTREAM_RESET')
})
