import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { once } from 'node:events'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { reservePort } from '../helpers/ports.js'

let origin: Origin
let gw: TestGateway

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url, `  - name: api
    match: { pathPrefix: /api/, host: api.example.com }
    upstream: origin
  - name: small-bodies
    match: { pathPrefix: /small/ }
    upstream: origin
    maxBodyBytes: 10
`))
})
after(async () => { await gw.close(); await origin.close() })

/** Send raw bytes and read the whole response (the connection is closed by the request). */
async function raw (port: number, text: string): Promise<string> {
  const s = connect(port, '127.0.0.1')
  await once(s, 'connect')
  s.write(text)
  const chunks: Buffer[] = []
  s.on('data', (c) => chunks.push(c))
  await once(s, 'close')
  return Buffer.concat(chunks).toString('latin1')
}

test('a GET passes through with forwarding headers and Via set', async () => {
  origin.on('/hello', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain', 'x-origin': 'yes' }); res.end('hi') })
  const r = await request(gw.url + '/hello?x=1', { headers: { 'x-forwarded-for': '6.6.6.6', forwarded: 'for=6.6.6.6' } })
  assert.equal(r.statusCode, 200)
  assert.equal(await r.body.text(), 'hi')
  assert.equal(r.headers['x-origin'], 'yes')
  assert.equal(r.headers.via, '1.1 sluice')
  const seen = origin.seen.at(-1)!
  assert.equal(seen.url, '/hello?x=1')
  assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'an untrusted X-Forwarded-For is replaced, not appended to')
  assert.equal(seen.headers.forwarded, undefined)
  assert.equal(seen.headers['x-forwarded-proto'], 'http')
  assert.equal(seen.headers['x-forwarded-host'], new URL(gw.url).host)
  assert.equal(seen.headers.host, new URL(origin.url).host)
  assert.equal(seen.headers.via, '1.1 sluice')
})

test('hop-by-hop headers and those named in Connection are stripped in both directions', async () => {
  origin.on('/hop', (_req, res) => {
    res.writeHead(200, { connection: 'x-secret-down, keep-alive', 'x-secret-down': '1', 'keep-alive': 'timeout=5', 'proxy-authenticate': 'Basic', 'x-kept': '1' })
    res.end('ok')
  })
  const text = await raw(new URL(gw.url).port as unknown as number, 'GET /hop HTTP/1.1\r\nHost: x\r\nConnection: close, x-secret-up\r\nX-Secret-Up: 1\r\nTE: trailers\r\nProxy-Authorization: Basic abc\r\nUpgrade: h2c\r\nX-Kept-Up: 1\r\n\r\n')
  assert.match(text, /^HTTP\/1\.1 200/)
  assert.doesNotMatch(text.toLowerCase(), /x-secret-down|proxy-authenticate/)
  assert.match(text.toLowerCase(), /x-kept: 1/)
  const seen = origin.seen.at(-1)!
  for (const h of ['x-secret-up', 'te', 'proxy-authorization', 'upgrade']) assert.equal(seen.headers[h], undefined, h)
  assert.equal(seen.headers['x-kept-up'], '1')
})

test('no matching route is a 404 with a stable JSON error', async () => {
  const g2 = await startTestGateway(simpleConfig(origin.url).replace('pathPrefix: /', 'pathPrefix: /only/'))
  try {
    const r = await request(g2.url + '/elsewhere')
    assert.equal(r.statusCode, 404)
    assert.deepEqual(await r.body.json(), { error: 'SLUICE_ERR_NO_ROUTE', message: 'No route matches GET /elsewhere', requestId: r.headers['x-request-id'] })
    const line = g2.logs.find((l) => l.msg === 'request' && l.status === 404)
    assert.equal(line?.route, 'none')
  } finally { await g2.close() }
})

test('routes match on host', async () => {
  origin.on('/api/x', (req, res) => { res.end(String(req.headers['x-forwarded-host'])) })
  const r = await request(gw.url + '/api/x', { headers: { host: 'API.example.com' } })
  // X-Forwarded-Host is the client's Host in lower case, as the cache keys it.
  assert.equal(await r.body.text(), 'api.example.com')
  const line = gw.logs.filter((l) => l.msg === 'request' && l.url === '/api/x').at(-1)
  assert.equal(line?.route, 'api')
})

test('a refused connection is a 502 SLUICE_ERR_UPSTREAM_CONNECT, logged', async () => {
  // A port nothing listens on: every connection is refused.
  const port = await reservePort()
  const g2 = await startTestGateway(simpleConfig(`http://127.0.0.1:${port}`))
  try {
    const r = await request(g2.url + '/x')
    assert.equal(r.statusCode, 502)
    const body = await r.body.json() as { error: string }
    assert.equal(body.error, 'SLUICE_ERR_UPSTREAM_CONNECT')
    assert.ok(g2.logs.some((l) => l.msg === 'upstream error' && l.code === 'SLUICE_ERR_UPSTREAM_CONNECT'))
  } finally { await g2.close() }
})

test('an upstream slower than timeoutMs is a 504 SLUICE_ERR_UPSTREAM_TIMEOUT', async () => {
  origin.on('/slow', (_req, res) => { const t = setTimeout(() => res.end('late'), 5000); res.on('close', () => clearTimeout(t)) })
  const g2 = await startTestGateway(simpleConfig(origin.url).replace('timeoutMs: 2000', 'timeoutMs: 200'))
  try {
    const r = await request(g2.url + '/slow')
    assert.equal(r.statusCode, 504)
    assert.equal((await r.body.json() as { error: string }).error, 'SLUICE_ERR_UPSTREAM_TIMEOUT')
  } finally { await g2.close() }
})

test('an upstream name that does not resolve is a 502 SLUICE_ERR_UPSTREAM_DNS and the gateway stays up', async () => {
  const g2 = await startTestGateway(simpleConfig('http://no-such-host.invalid:80'))
  try {
    const r = await request(g2.url + '/x')
    assert.equal(r.statusCode, 502)
    assert.equal((await r.body.json() as { error: string }).error, 'SLUICE_ERR_UPSTREAM_DNS')
    const h = await request(g2.adminUrl + '/healthz')
    assert.equal(h.statusCode, 200)
    await h.body.dump()
  } finally { await g2.close() }
})

test('an oversized request header gets 431 with a JSON error', async () => {
  const text = await raw(Number(new URL(gw.url).port), `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`)
  assert.match(text, /^HTTP\/1\.1 431 /)
  assert.match(text, /SLUICE_ERR_HEADERS_TOO_LARGE/)
  assert.ok(gw.logs.some((l) => l.msg === 'rejected malformed request' && l.code === 'SLUICE_ERR_HEADERS_TOO_LARGE'))
})

test('a malformed request line gets 400 SLUICE_ERR_BAD_REQUEST', async () => {
  const text = await raw(Number(new URL(gw.url).port), 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')
  assert.match(text, /^HTTP\/1\.1 400 /)
  assert.match(text, /SLUICE_ERR_BAD_REQUEST/)
})

test('a body over the route\'s maxBodyBytes gets 413 before the upstream sees it', async () => {
  const before = origin.seen.length
  const r = await request(gw.url + '/small/x', { method: 'POST', body: 'x'.repeat(100) })
  assert.equal(r.statusCode, 413)
  assert.equal((await r.body.json() as { error: string }).error, 'SLUICE_ERR_BODY_TOO_LARGE')
  assert.equal(origin.seen.length, before)
})

test('server-sent events reach the client event by event, before the origin ends', async () => {
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  origin.on('/events', async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: one\n\n')
    await released
    res.end('data: two\n\n')
  })
  const r = await request(gw.url + '/events')
  const it = r.body[Symbol.asyncIterator]()
  const first = await it.next()
  assert.equal(String(first.value), 'data: one\n\n', 'the first event arrives while the origin still holds the stream open')
  release()
  let rest = ''
  for (;;) { const n = await it.next(); if (n.done) break; rest += String(n.value) }
  assert.equal(rest, 'data: two\n\n')
})

test('a WebSocket upgrade passes through both ways', async () => {
  origin.server.once('upgrade', (req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen-XFF: ' + req.headers['x-forwarded-for'] + '\r\n\r\n')
    socket.on('data', (d: Buffer) => socket.write(Buffer.concat([Buffer.from('echo:'), d])))
  })
  const s = connect(Number(new URL(gw.url).port), '127.0.0.1')
  await once(s, 'connect')
  s.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  let buf = ''
  s.on('data', (d) => { buf += d.toString('latin1') })
  while (!buf.includes('\r\n\r\n')) await once(s, 'data')
  assert.match(buf, /^HTTP\/1\.1 101 /)
  assert.match(buf, /X-Seen-XFF: 127\.0\.0\.1/)
  buf = ''
  s.write('ping')
  while (!buf.includes('echo:ping')) await once(s, 'data')
  s.destroy()
})

test('a WebSocket upgrade whose Connection names the request-ID header still carries the ID upstream', async () => {
  let seen: string | undefined
  origin.server.once('upgrade', (req, socket) => {
    seen = req.headers['x-request-id'] as string | undefined
    socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
  })
  const s = connect(Number(new URL(gw.url).port), '127.0.0.1')
  await once(s, 'connect')
  s.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, x-request-id\r\nX-Request-Id: ws-id-1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  let buf = ''
  s.on('data', (d) => { buf += d.toString('latin1') })
  while (!buf.includes('\r\n\r\n')) await once(s, 'data')
  assert.match(buf, /^HTTP\/1\.1 101 /)
  assert.equal(seen, 'ws-id-1')
  s.destroy()
})

test('request metrics carry route, method (unknown → _OTHER) and status class', async () => {
  origin.on('/m', (_req, res) => { res.end('m') })
  const a = await request(gw.url + '/m', { method: 'PROPFIND' as 'GET' })
  await a.body.dump()
  const m = await request(gw.adminUrl + '/metrics')
  const text = await m.body.text()
  assert.match(text, /sluice_http_requests_total\{route="all",method="_OTHER",status_class="2xx",cache="none"\} 1/)
  assert.match(text, /sluice_http_request_duration_seconds_bucket\{le="0\.5",route="all",cache="none"\}/)
  assert.match(text, /sluice_upstream_request_duration_seconds_count\{upstream="origin",status_class="2xx"\}/)
  assert.match(text, /process_resident_memory_bytes/)
})

test('the access log has one line per request, with credentials redacted', async () => {
  origin.on('/log', (_req, res) => { res.writeHead(200, { 'set-cookie': 'a=b' }); res.end('x') })
  const r = await request(gw.url + '/log?q=1', { headers: { authorization: 'Bearer zzz', cookie: 'c=d' } })
  await r.body.dump()
  const lines = gw.logs.filter((l) => l.msg === 'request' && l.url === '/log?q=1')
  assert.equal(lines.length, 1)
  assert.equal(lines[0].route, 'all')
  assert.equal(lines[0].upstream, 'origin')
  assert.equal(lines[0].status, 200)
  assert.equal(typeof lines[0].ms, 'number')
  assert.doesNotMatch(JSON.stringify(gw.logs), /zzz|c=d/)
})

test('paths are normalised before routing, and the normalised path is forwarded', async () => {
  const g2 = await startTestGateway(simpleConfig(origin.url).replace('pathPrefix: /', 'pathPrefix: /public/'))
  try {
    const port = Number(new URL(g2.url).port)
    const escaped = await raw(port, 'GET /public/%2e%2e/admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    assert.match(escaped, /^HTTP\/1\.1 404 /, 'the traversal resolves to /admin, which no route matches')
    const inside = await raw(port, 'GET /public/a/%2e%2e/b%2Dc?q=%2e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    assert.match(inside, /^HTTP\/1\.1 200 /)
    assert.equal(origin.seen.at(-1)!.url, '/public/b-c?q=%2e')
    for (const bad of ['/public/a%2fb', '/public/%00', '/public/%zz']) {
      const r = await raw(port, `GET ${bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      assert.match(r, /^HTTP\/1\.1 400 /, bad)
      assert.match(r, /SLUICE_ERR_BAD_PATH/, bad)
    }
  } finally { await g2.close() }
})

test('a request target longer than server.maxUrlBytes gets 414', async () => {
  const r = await request(gw.url + '/x?' + 'a'.repeat(9000))
  assert.equal(r.statusCode, 414)
  assert.equal((await r.body.json() as { error: string }).error, 'SLUICE_ERR_URI_TOO_LONG')
})

test('a chunked body over maxBodyBytes is cut off with 413', async () => {
  const before = origin.seen.length
  async function * chunks () { for (let i = 0; i < 10; i++) yield Buffer.alloc(5, 'y') }
  const r = await request(gw.url + '/small/chunked', { method: 'POST', body: Readable.from(chunks()) })
  assert.equal(r.statusCode, 413)
  assert.equal((await r.body.json() as { error: string }).error, 'SLUICE_ERR_BODY_TOO_LARGE')
  assert.equal(origin.seen.length, before, 'the origin never saw a complete request')
})

test('W3C trace context passes through unchanged', async () => {
  const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  const r = await request(gw.url + '/trace', { headers: { traceparent, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' } })
  await r.body.dump()
  const seen = origin.seen.at(-1)!
  assert.equal(seen.headers.traceparent, traceparent)
  assert.equal(seen.headers.tracestate, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7')
})

test('routes[].serverTiming adds a Server-Timing header with per-stage times', async () => {
  const g2 = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', '    upstream: origin\n    serverTiming: true\n'))
  try {
    const r = await request(g2.url + '/timed')
    await r.body.dump()
    const st = String(r.headers['server-timing'])
    for (const stage of ['route', 'limit', 'cache', 'upstream', 'compress', 'total']) assert.match(st, new RegExp(`${stage};dur=\\d+\\.\\d{3}`), st)
    const plain = await request(gw.url + '/timed')
    await plain.body.dump()
    assert.equal(plain.headers['server-timing'], undefined, 'off by default')
  } finally { await g2.close() }
})
