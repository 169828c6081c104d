// Streamed responses (src/send.ts, src/upstream/headers.ts) in front of origins that write raw,
// malformed answers: a body that fails before any byte reached the client is answered with
// Sluice's 502 instead of a bare close; one that fails after is still cut; a transfer coding
// other than chunked is refused.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createServer as netServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { metric } from '../helpers/metrics.js'
import { send, req } from '../hardening/raw.js'

/** What the raw origin writes for a request path (after the request head arrived). */
const answers: Record<string, (s: Socket) => void> = {
  // A chunked head, then a chunk size that is not hex.
  '/bad-chunk': (s) => { s.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n') },
  // A head with a length, then a reset before any body byte.
  '/reset-after-head': (s) => { s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\n', () => setTimeout(() => s.resetAndDestroy(), 20)) },
  // A first chunk, then a reset: part of the body reached the client.
  '/reset-mid-body': (s) => { s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n', () => setTimeout(() => s.resetAndDestroy(), 50)) },
  // A gzip transfer coding under chunked: the chunks carry gzip bytes.
  '/te-gzip': (s) => { s.end(Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n', 'latin1')) },
  '/ok': (s) => { s.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n') }
}

let origin: Server
let gw: TestGateway
let port: number

before(async () => {
  origin = netServer((s) => {
    let head = ''
    s.on('error', () => {})
    s.on('data', (c: Buffer) => {
      if (head.includes('\r\n\r\n')) return
      head += c.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      const path = head.split(' ')[1] ?? '/'
      ;(answers[path] ?? answers['/ok'])(s)
    })
  })
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`
  // No retries: each request reaches the origin once.
  gw = await startTestGateway(simpleConfig(url).replace('    connectTimeoutMs: 1000\n', '    connectTimeoutMs: 1000\n    retry: { attempts: 0 }\n'))
  port = Number(new URL(gw.url).port)
})
after(async () => { await gw.close(); await new Promise<void>((resolve) => origin.close(() => resolve())) })

async function accessLine (id: string): Promise<Record<string, unknown>> {
  await until(`the access line of ${id}`, () => gw.logs.some((l) => l.msg === 'request' && l.reqId === id))
  return gw.logs.find((l) => l.msg === 'request' && l.reqId === id)!
}

for (const [path, code] of [['/bad-chunk', 'SLUICE_ERR_UPSTREAM_PROTOCOL'], ['/reset-after-head', 'SLUICE_ERR_UPSTREAM_RESET']] as const) {
  test(`a body that fails before any byte reached the client is answered with 502 ${code}, not a bare close (${path})`, async () => {
    const id = 'send-' + path.slice(1)
    const ex = await send(port, req(`GET ${path} HTTP/1.1`, 'Host: a.example', `X-Request-Id: ${id}`), { responses: 1 })
    const r = ex.responses[0]
    assert.ok(r !== undefined, `no response, only ${JSON.stringify(ex.data.toString('latin1'))}`)
    assert.equal(r.status, 502)
    assert.equal(r.reason, 'Bad Gateway')
    assert.deepEqual(r.headers['content-type'], ['application/json'])
    assert.deepEqual(r.headers['x-request-id'], [id])
    // Nothing of the origin's head: no chunked framing, no text/plain.
    assert.equal(r.headers['transfer-encoding'], undefined)
    const body = JSON.parse(r.body.toString('utf8')) as Record<string, unknown>
    assert.equal(body.error, code)
    assert.equal(body.requestId, id)
    const line = await accessLine(id)
    assert.equal(line.status, 502)
    assert.equal(line.err, code)
    assert.equal(line.bytes, r.body.length)
  })
}

test('the connection that got the 502 serves the next request', async () => {
  const ex = await send(port, req('GET /bad-chunk HTTP/1.1', 'Host: a.example') + req('GET /ok HTTP/1.1', 'Host: a.example'), { responses: 2 })
  assert.deepEqual(ex.responses.map((r) => r.status), [502, 200])
  assert.equal(ex.responses[1].body.toString(), 'ok')
})

test('the 502 answered instead is an error of Sluice\'s own: not observed in the response size histogram', async () => {
  const count = () => metric(gw.adminUrl, 'sluice_http_response_size_bytes_count', { route: 'all' })
  await send(port, req('GET /ok HTTP/1.1', 'Host: a.example', 'X-Request-Id: send-size-ok'), { responses: 1 })
  await accessLine('send-size-ok')
  const before = await count()
  const ex = await send(port, req('GET /bad-chunk HTTP/1.1', 'Host: a.example', 'X-Request-Id: send-size-502'), { responses: 1 })
  assert.equal(ex.responses[0]?.status, 502)
  // The histogram is observed in the same callback as the access line, just after it.
  await accessLine('send-size-502')
  assert.equal(await count(), before)
})

test('a body that fails after its first bytes went out still cuts the connection', async () => {
  const id = 'send-mid-body'
  const ex = await send(port, req('GET /reset-mid-body HTTP/1.1', 'Host: a.example', `X-Request-Id: ${id}`))
  assert.equal(ex.closed, true)
  const text = ex.data.toString('latin1')
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n/)
  assert.ok(text.includes('hello'))
  // Never the last chunk: the client cannot take the part for the whole.
  assert.ok(!text.endsWith('0\r\n\r\n'), JSON.stringify(text))
  const line = await accessLine(id)
  assert.equal(line.status, 200)
  assert.equal(line.err, 'SLUICE_ERR_UPSTREAM_RESET')
})

test('Transfer-Encoding: gzip, chunked from the origin is refused with 502, never sent on as unlabelled gzip bytes', async () => {
  const id = 'send-te-gzip'
  const ex = await send(port, req('GET /te-gzip HTTP/1.1', 'Host: a.example', `X-Request-Id: ${id}`), { responses: 1 })
  const r = ex.responses[0]
  assert.ok(r !== undefined, `no response, only ${JSON.stringify(ex.data.toString('latin1'))}`)
  assert.equal(r.status, 502)
  const body = JSON.parse(r.body.toString('utf8')) as Record<string, unknown>
  assert.equal(body.error, 'SLUICE_ERR_UPSTREAM_PROTOCOL')
  assert.equal(body.requestId, id)
  const line = await accessLine(id)
  assert.equal(line.status, 502)
  assert.equal(line.err, 'SLUICE_ERR_UPSTREAM_PROTOCOL')
})
