// Hand-written raw requests, part two (raw-requests.test.ts has the first set): every framing
// attack is followed by a pipelined request, and the origin's own socket bytes prove that nothing
// (not even the follow-up) reached it; limits, timeouts, paths, forwarding headers, hop-by-hop
// headers and WebSocket tunnels, asserted on the status and on what the origin received.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { once } from 'node:events'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { send, req, errorCode, type RawResponse } from './raw.js'

let a: Origin // public and catch-all routes
let b: Origin // the /private/ route
let early: Origin // answers before reading the request body
let ws: NetServer // a raw origin for upgrades: records every byte, answers the first request only
let wsBytes: Buffer[] = []
let wsAnswer = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
const wsSockets = new Set<Socket>()
/** Every byte origin `a` received on its sockets. */
let aBytes: Buffer[] = []
let gw: TestGateway
let trusted: TestGateway
let port: number
let tport: number

const config = (aUrl: string, bUrl: string, earlyUrl: string, wsUrl: string, listenExtra = '') => `
listen: { host: 127.0.0.1, port: 0${listenExtra} }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: true }
server: { maxHeaderBytes: 4096, maxUrlBytes: 512, headersTimeoutMs: 400, requestTimeoutMs: 800, keepAliveTimeoutMs: 300, maxRequestsPerSocket: 3 }
upstreams:
  a: { url: "${aUrl}", timeoutMs: 2000, retry: { attempts: 0 } }
  b: { url: "${bUrl}", timeoutMs: 2000, retry: { attempts: 0 } }
  early: { url: "${earlyUrl}", timeoutMs: 2000, retry: { attempts: 0 } }
  ws: { url: "${wsUrl}", timeoutMs: 2000, retry: { attempts: 0 } }
routes:
  - { name: public, match: { pathPrefix: /public/ }, upstream: a, maxBodyBytes: 16 }
  - { name: private, match: { pathPrefix: /private/ }, upstream: b, websocket: false }
  - { name: early, match: { pathPrefix: /early/ }, upstream: early }
  - { name: ws, match: { pathPrefix: /ws/ }, upstream: ws }
  - { name: limited, match: { pathPrefix: /limited/ }, upstream: a, rateLimit: { perClient: { requestsPerSecond: 0.001, burst: 1, key: ip } } }
  - { name: rest, match: { pathPrefix: / }, upstream: a }
`

before(async () => {
  a = await startOrigin()
  a.server.on('connection', (s: Socket) => s.on('data', (d: Buffer) => aBytes.push(d)))
  a.on('*', (req, res, body) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(`a ${req.method} ${req.url} ${body.length}`) })
  b = await startOrigin()
  b.on('*', (req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(`b ${req.method} ${req.url}`) })
  early = await startOrigin()
  early.streamBodies = true
  early.on('*', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.write('started ') }) // never ends
  ws = createNetServer((s) => {
    wsSockets.add(s)
    s.on('close', () => wsSockets.delete(s))
    let answered = false
    s.on('data', (d) => {
      wsBytes.push(d)
      if (!answered && Buffer.concat(wsBytes).includes('\r\n\r\n')) { answered = true; s.write(wsAnswer) }
    })
    s.on('error', () => {})
  })
  ws.listen(0, '127.0.0.1')
  await once(ws, 'listening')
  const wsUrl = `http://127.0.0.1:${(ws.address() as { port: number }).port}`
  gw = await startTestGateway(config(a.url, b.url, early.url, wsUrl))
  trusted = await startTestGateway(config(a.url, b.url, early.url, wsUrl, ', trustedProxies: [127.0.0.1/32, 10.0.0.0/8]'))
  port = Number(new URL(gw.url).port)
  tport = Number(new URL(trusted.url).port)
})
after(async () => {
  await gw.close(); await trusted.close()
  for (const s of wsSockets) s.destroy()
  ws.close()
  await a.close(); await b.close(); await early.close()
})

function reset (): void { a.seen.length = 0; b.seen.length = 0; aBytes = []; wsBytes = [] }
const FOLLOW_UP = 'GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n'

async function refused (bytes: string, status: number, code: string | RegExp, what: string, streamed = false): Promise<void> {
  reset()
  const x = await send(port, bytes + FOLLOW_UP, { waitMs: 2000 })
  assert.equal(x.responses.length, 1, `${what}: exactly one answer, then the close: ${JSON.stringify(x.data.toString('latin1').slice(0, 200))}`)
  assert.equal(x.responses[0].status, status, what)
  if (typeof code === 'string') assert.equal(errorCode(x.responses[0]), code, what)
  else assert.match(errorCode(x.responses[0]) ?? '', code, what)
  assert.equal(x.responses[0].headers.connection?.[0], 'close', what)
  assert.ok(x.closed, `${what}: the gateway closes the connection`)
  assert.equal(a.seen.length, 0, `${what}: the origin saw no request`)
  // A body error found mid-stream (the body already flowing upstream) aborts the upstream request.
  if (!streamed) assert.equal(Buffer.concat(aBytes).length, 0, `${what}: not one byte reached the origin`)
}

test('framing attacks get 400 SLUICE_ERR_BAD_REQUEST and the connection closes before a pipelined follow-up', async () => {
  const post = (headers: string[], body: string) => req('POST /public/x HTTP/1.1', 'Host: a', ...headers) + body
  const cases: Array<[string, string]> = [
    ['CL.TE', post(['Content-Length: 6', 'Transfer-Encoding: chunked'], '0\r\n\r\nG')],
    ['TE.CL', post(['Transfer-Encoding: chunked', 'Content-Length: 3'], '8\r\nSMUGGLED\r\n0\r\n\r\n')],
    ['TE.TE: two Transfer-Encoding lines', post(['Transfer-Encoding: chunked', 'Transfer-Encoding: x'], '0\r\n\r\n')],
    ['TE.TE: chunked not last', post(['Transfer-Encoding: chunked, identity'], '0\r\n\r\n')],
    ['TE.TE: identity', post(['Transfer-Encoding: identity'], '')],
    ['TE.TE: space before the colon', post(['Transfer-Encoding : chunked'], '0\r\n\r\n')],
    ['TE.TE: obs-fold value', post(['Transfer-Encoding:', ' chunked'], '0\r\n\r\n')],
    ['TE.TE: vertical tab', post(['Transfer-Encoding:\x0bchunked'], '0\r\n\r\n')],
    ['duplicate Content-Length, same value', post(['Content-Length: 3', 'Content-Length: 3'], 'abc')],
    ['duplicate Content-Length, list', post(['Content-Length: 3, 3'], 'abc')],
    ['Content-Length +3', post(['Content-Length: +3'], 'abc')],
    ['Content-Length 0x3', post(['Content-Length: 0x3'], 'abc')],
    ['Content-Length 3 3', post(['Content-Length: 3 3'], 'abc')],
    ['Content-Length empty', post(['Content-Length:'], '')],
    ['Content-Length overflow', post(['Content-Length: 99999999999999999999999'], 'abc')],
    ['chunk size overflow', post(['Transfer-Encoding: chunked'], 'fffffffffffffffffff\r\nabc\r\n0\r\n\r\n')],
    ['negative chunk size', post(['Transfer-Encoding: chunked'], '-3\r\nabc\r\n0\r\n\r\n')],
    ['chunk size 0x3', post(['Transfer-Encoding: chunked'], '0x3\r\nabc\r\n0\r\n\r\n')],
    ['bare LF line endings', 'GET /public/x HTTP/1.1\nHost: a\n\n'],
    ['bare LF in a header line', 'GET /public/x HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n'],
    ['bare CR', 'GET /public/x HTTP/1.1\rHost: a\r\n\r\n'],
    ['obs-fold', req('GET /public/x HTTP/1.1', 'Host: a', 'X-A: one', '\ttwo')],
    ['NUL in a header value', req('GET /public/x HTTP/1.1', 'Host: a', 'X-A: o\x00ne')],
    ['space in a header name', req('GET /public/x HTTP/1.1', 'Host: a', 'X A: 1')],
    ['DEL in a header name', req('GET /public/x HTTP/1.1', 'Host: a', 'X\x7fA: 1')],
    ['unknown method token', req('G@T /public/x HTTP/1.1', 'Host: a')],
    ['extra token on the request line', req('GET /public/x HTTP/1.1 x', 'Host: a')],
    ['raw NUL in the target', req('GET /public/x\x00y HTTP/1.1', 'Host: a')]
  ]
  const failures: string[] = []
  for (const [what, bytes] of cases) {
    try { await refused(bytes, 400, /^SLUICE_ERR_BAD_(REQUEST|PATH)$/, what) } catch (err) { failures.push((err as Error).message.split('\n')[0]) }
  }
  // Found inside a body that is already streaming upstream: the upstream request is aborted,
  // so the origin never sees a complete request.
  try { await refused(post(['Transfer-Encoding: chunked'], '3\r\nabcdef\r\n0\r\n\r\n'), 400, 'SLUICE_ERR_BAD_REQUEST', 'chunk data longer than its size', true) } catch (err) { failures.push((err as Error).message.split('\n')[0]) }
  assert.deepEqual(failures, [])
})

test('a missing or repeated Host gets 400 (RFC 9112 §3.2) and never reaches the origin', async () => {
  for (const [what, bytes] of [
    ['no Host in HTTP/1.1', req('GET /public/x HTTP/1.1', 'X-A: 1')],
    ['two Host headers', req('GET /public/x HTTP/1.1', 'Host: a', 'Host: evil.example')],
    ['two Host headers, different case', req('GET /public/x HTTP/1.1', 'host: a', 'HOST: evil.example')],
    ['two Host headers on a WebSocket upgrade', req('GET /ws/x HTTP/1.1', 'Host: a', 'Host: evil.example', 'Connection: Upgrade', 'Upgrade: websocket')],
    ['a Host with a space', req('GET /public/x HTTP/1.1', 'Host: a.example evil.example')],
    ['a Host with a path', req('GET /public/x HTTP/1.1', 'Host: a.example/evil')],
    ['a Host with userinfo', req('GET /public/x HTTP/1.1', 'Host: evil@a.example')],
    ['a Host with two ports', req('GET /public/x HTTP/1.1', 'Host: a.example:80:81')],
    ['a Host with a query', req('GET /public/x HTTP/1.1', 'Host: a.example?x')],
    ['a Host with a path on a WebSocket upgrade', req('GET /ws/x HTTP/1.1', 'Host: a.example/evil', 'Connection: Upgrade', 'Upgrade: websocket')]
  ]) {
    reset()
    const x = await send(port, bytes, { waitMs: 2000 })
    assert.equal(x.responses[0]?.status, 400, what)
    assert.equal(errorCode(x.responses[0]), 'SLUICE_ERR_BAD_REQUEST', what)
    assert.ok(x.closed, what)
    assert.equal(a.seen.length + Buffer.concat(wsBytes).length, 0, what)
  }
  for (const host of ['a.example:8080', 'A.Example', '127.0.0.1:1', '[::1]:8080', 'xn--bcher-kva.example', 'a_b.example']) {
    reset()
    const x = await send(port, req('GET /public/ok HTTP/1.1', `Host: ${host}`, 'Connection: close'))
    assert.equal(x.responses[0]?.status, 200, host)
  }
  // HTTP/1.0 has no Host requirement: it routes on the catch-all host.
  reset()
  const x = await send(port, 'GET /public/v10 HTTP/1.0\r\n\r\n')
  assert.equal(x.responses[0]?.status, 200)
})

test('an HTTP/2.0 request line over HTTP/1 is refused or forwarded as one clean HTTP/1.1 request', async () => {
  reset()
  const x = await send(port, req('GET /public/v2 HTTP/2.0', 'Host: a', 'Connection: close'), { waitMs: 2000 })
  if (x.responses[0]?.status === 400 || x.responses[0]?.status === 505) { assert.equal(a.seen.length, 0); return }
  assert.equal(x.responses[0]?.status, 200)
  assert.deepEqual(a.seen.map((s) => s.url), ['/public/v2'])
  assert.match(Buffer.concat(aBytes).toString('latin1'), /^GET \/public\/v2 HTTP\/1\.1\r\n/)
})

test('a request whose declared body never fully arrives never reaches the origin as complete', async () => {
  reset()
  const x = await send(port, req('POST /x HTTP/1.1', 'Host: a', 'Content-Length: 10') + 'abc', { waitMs: 300 })
  assert.equal(x.responses.length, 0)
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(a.seen.length, 0, 'the origin never saw a complete request')
})

test('a clean pipelined pair reaches the origin as exactly two clean requests, bodies byte for byte', async () => {
  reset()
  const x = await send(port, req('POST /public/one HTTP/1.1', 'Host: a', 'Transfer-Encoding: chunked') + '3;ext=1\r\nabc\r\n0\r\n\r\n' +
    req('POST /public/two HTTP/1.1', 'Host: a', 'Content-Length: 4', 'Connection: close') + 'wxyz', { waitMs: 2000 })
  assert.deepEqual(x.responses.map((r) => r.status), [200, 200])
  assert.deepEqual(x.responses.map((r) => r.body.toString()), ['a POST /public/one 3', 'a POST /public/two 4'])
  assert.deepEqual(a.seen.map((s) => [s.url, s.body.toString()]), [['/public/one', 'abc'], ['/public/two', 'wxyz']])
  const wire = Buffer.concat(aBytes).toString('latin1')
  assert.equal(wire.match(/^(GET|POST|PUT) /gm)?.length, 2, 'two request lines on the origin\'s wire, no more')
  for (const s of a.seen) {
    const names = s.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
    const framing = names.filter((n) => n === 'content-length' || n === 'transfer-encoding')
    assert.equal(framing.length, 1, `one framing header upstream, got ${framing.join(', ')}`)
    assert.equal(names.filter((n) => n === 'host').length, 1)
  }
})

test('the request target is bounded (414) and the body is bounded per route (413), declared or chunked', async () => {
  reset()
  let x = await send(port, req('GET /public/' + 'x'.repeat(600) + ' HTTP/1.1', 'Host: a', 'Connection: close'))
  assert.equal(x.responses[0]?.status, 414)
  assert.equal(errorCode(x.responses[0]), 'SLUICE_ERR_URI_TOO_LONG')
  x = await send(port, req('POST /public/big HTTP/1.1', 'Host: a', 'Content-Length: 17', 'Connection: close') + 'x'.repeat(17))
  assert.equal(x.responses[0]?.status, 413)
  assert.equal(errorCode(x.responses[0]), 'SLUICE_ERR_BODY_TOO_LARGE')
  x = await send(port, req('POST /public/big HTTP/1.1', 'Host: a', 'Transfer-Encoding: chunked', 'Connection: close') + '10\r\n' + 'y'.repeat(16) + '\r\n10\r\n' + 'z'.repeat(16) + '\r\n0\r\n\r\n')
  assert.equal(x.responses[0]?.status, 413)
  assert.equal(a.seen.length, 0, 'the origin never saw an over-long request as complete')
  // The same body on a route without a limit passes whole.
  x = await send(port, req('POST /other HTTP/1.1', 'Host: a', 'Content-Length: 17', 'Connection: close') + 'x'.repeat(17))
  assert.equal(x.responses[0]?.status, 200)
  assert.equal(a.seen.at(-1)?.body.toString(), 'x'.repeat(17))
})

test('a header block over maxHeaderBytes gets 431', async () => {
  reset()
  const x = await send(port, req('GET /public/x HTTP/1.1', 'Host: a', 'X-Big: ' + 'v'.repeat(5000)))
  assert.equal(x.responses[0]?.status, 431)
  assert.equal(errorCode(x.responses[0]), 'SLUICE_ERR_HEADERS_TOO_LARGE')
  assert.ok(x.closed)
  assert.equal(a.seen.length, 0)
})

test('slowloris: headers trickling in past headersTimeoutMs get 408 and a close', async () => {
  reset()
  const x = await send(port, '', {
    waitMs: 5000,
    drive: (s) => {
      s.write('GET /public/slow HTTP/1.1\r\nHost: a\r\n')
      let n = 0
      const t = setInterval(() => { if (s.destroyed || n++ > 40) clearInterval(t); else s.write(`X-${n}: 1\r\n`) }, 50)
      s.on('close', () => clearInterval(t))
    }
  })
  assert.ok(x.closed, 'the gateway closed the connection')
  assert.equal(x.responses[0]?.status, 408)
  assert.equal(errorCode(x.responses[0]), 'SLUICE_ERR_REQUEST_TIMEOUT')
  assert.equal(a.seen.length, 0)
})

test('a body that stalls past requestTimeoutMs gets 408 and a close, and the origin never sees it complete', async () => {
  reset()
  const x = await send(port, req('POST /public/stall HTTP/1.1', 'Host: a', 'Content-Length: 10') + 'abc', { waitMs: 5000 })
  assert.ok(x.closed)
  assert.ok(x.responses.length === 0 || x.responses[0].status === 408, JSON.stringify(x.data.toString('latin1').slice(0, 100)))
  assert.equal(a.seen.length, 0)
})

test('a request timeout never injects a 408 into a response already being sent', async () => {
  // The origin answers at once and streams forever; the client never finishes its body.
  const x = await send(port, req('POST /early/x HTTP/1.1', 'Host: a', 'Content-Length: 100') + 'abc', { waitMs: 5000 })
  const text = x.data.toString('latin1')
  assert.match(text, /^HTTP\/1\.1 200 /)
  assert.equal(text.indexOf('HTTP/1.1 408'), -1, `no second status line inside the streamed body: ${JSON.stringify(text)}`)
  assert.ok(x.closed, 'the connection is closed instead')
})

test('an idle keep-alive connection is closed after keepAliveTimeoutMs', async () => {
  const x = await send(port, req('GET /public/idle HTTP/1.1', 'Host: a'), { waitMs: 5000 })
  assert.equal(x.responses.length, 1)
  assert.equal(x.responses[0].status, 200)
  assert.ok(x.closed, 'closed by the gateway, not by the bounded wait')
})

test('maxRequestsPerSocket: the last allowed response says Connection: close and the connection ends', async () => {
  reset()
  const three = [1, 2, 3].map((i) => req(`GET /public/n${i} HTTP/1.1`, 'Host: a')).join('')
  const x = await send(port, three + req('GET /public/n4 HTTP/1.1', 'Host: a'), { waitMs: 3000 })
  assert.ok(x.closed)
  const ok = x.responses.filter((r) => r.status === 200)
  assert.equal(ok.length, 3)
  assert.equal(ok[2].headers.connection?.[0], 'close')
  assert.ok(!a.seen.some((s) => s.url === '/public/n4'), 'the fourth request never reached the origin')
  // A request pipelined past the limit gets Node's own answer, if any: 503 with Connection: close
  // and no body (Node's http server writes it before Sluice could; it never reaches a route).
  for (const r of x.responses.slice(3)) {
    assert.equal(r.status, 503)
    assert.equal(r.headers.connection?.[0], 'close')
    assert.equal(r.body.length, 0)
  }
})

test('method-override headers never reach the origin: it acts on the method Sluice routed, limited and cached', async () => {
  reset()
  const x = await send(port, req('GET /public/override HTTP/1.1', 'Host: a', 'X-HTTP-Method-Override: DELETE', 'X-HTTP-Method: PUT', 'X-Method-Override: PATCH', 'Connection: close'))
  assert.equal(x.responses[0]?.status, 200)
  assert.equal(a.seen.length, 1)
  assert.equal(a.seen[0].method, 'GET')
  const names = a.seen[0].rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  for (const h of ['x-http-method-override', 'x-http-method', 'x-method-override']) assert.ok(!names.includes(h), `${h} reached the origin`)
})

test('paths: dot segments (also encoded) route and forward normalised; `;` parameters are ignored for routing; /..;/, NUL, bad escapes, encoded slashes and backslashes get 400', async () => {
  const forwarded: Array<[string, 'a' | 'b', string]> = [
    ['/public/../private/x', 'b', '/private/x'],
    ['/public/%2e%2e/private/x', 'b', '/private/x'],
    ['/public/%2E%2E/private/x', 'b', '/private/x'],
    ['/public/.%2e/private/x', 'b', '/private/x'],
    ['/public/%2e./private/x', 'b', '/private/x'],
    ['/public/./x/../y', 'a', '/public/y'],
    ['/private/../../../../etc/passwd', 'a', '/etc/passwd'],
    ['/public/%252e%252e/private/x', 'a', '/public/%252e%252e/private/x'],
    ['/public/%7euser?q=/../x', 'a', '/public/~user?q=/../x'],
    // Routes are matched without `;` parameters (a servlet origin drops them), forwarded with them.
    ['/private;a/x', 'b', '/private;a/x'],
    ['/private;jsessionid=1;b=2/x?q=;', 'b', '/private;jsessionid=1;b=2/x?q=;'],
    ['/public;x', 'a', '/public;x'],
    ['/pub;x/private/x', 'a', '/pub;x/private/x'],
    ['/;x/private/x', 'b', '/;x/private/x'],
    ['/;/private/x', 'b', '/;/private/x']
  ]
  for (const [target, where, expected] of forwarded) {
    reset()
    const x = await send(port, req(`GET ${target} HTTP/1.1`, 'Host: a', 'Connection: close'))
    assert.equal(x.responses[0]?.status, 200, target)
    const seen = (where === 'a' ? a : b).seen
    assert.equal(seen.length, 1, `${target} reached origin ${where}`)
    assert.equal(seen[0].url, expected, target)
    assert.equal((where === 'a' ? b : a).seen.length, 0, `${target} reached no other origin`)
  }
  for (const target of ['/public/..;/private/x', '/public/..;jsessionid=1/private/x', '/public/%2e%2e;/private/x', '/public/.;/x', '/public/%2E;x/x', '/public/a%00b', '/public/%zz', '/public/%2', '/public/a%2fb', '/public/a%2Fb', '/public/a%5cb', '/public/a\\b', '/public/..\\private', '/public/%c0%ae%c0%ae/private/x', 'http://evil.example/private/x', 'public/x']) {
    reset()
    const x = await send(port, req(`GET ${target} HTTP/1.1`, 'Host: a', 'Connection: close'))
    assert.equal(x.responses[0]?.status, 400, target)
    assert.match(errorCode(x.responses[0]) ?? '', /^SLUICE_ERR_BAD_(PATH|REQUEST)$/, target)
    assert.equal(a.seen.length + b.seen.length, 0, `${target} reached no origin`)
  }
})

function headerOf (o: Origin, name: string): string | undefined {
  const h = o.seen.at(-1)?.headers[name]
  return Array.isArray(h) ? h.join(', ') : h
}

test('forwarding headers from an untrusted peer are replaced, never appended to; rewrite headers are dropped', async () => {
  reset()
  const x = await send(port, req('GET /public/fwd HTTP/1.1', 'Host: shop.example', 'X-Forwarded-For: 6.6.6.6', 'X-Forwarded-For: 7.7.7.7',
    'X-Forwarded-Host: evil.example', 'X-Forwarded-Proto: https', 'X-Forwarded-Port: 443', 'X-Forwarded-Prefix: /evil', 'Forwarded: for=6.6.6.6;host=evil.example',
    'X-Real-IP: 6.6.6.6', 'X-Original-URL: /private/x', 'X-Rewrite-URL: /private/x', 'Connection: close'))
  assert.equal(x.responses[0]?.status, 200)
  const rawNames = a.seen[0].rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  assert.equal(rawNames.filter((n) => n === 'x-forwarded-for').length, 1)
  assert.equal(headerOf(a, 'x-forwarded-for'), '127.0.0.1')
  assert.equal(headerOf(a, 'x-forwarded-host'), 'shop.example')
  assert.equal(headerOf(a, 'x-forwarded-proto'), 'http')
  for (const h of ['forwarded', 'x-forwarded-port', 'x-forwarded-prefix', 'x-real-ip', 'x-original-url', 'x-rewrite-url']) {
    assert.equal(headerOf(a, h), undefined, `${h} from an untrusted client never reaches the origin`)
  }
  const line = gw.logs.filter((l) => l.msg === 'request' && l.url === '/public/fwd').at(-1)
  assert.equal(line?.ip, '127.0.0.1', 'the logged client is the peer')
})

test('from a trusted proxy the chain is appended to, and the client IP is the right-most untrusted hop', async () => {
  reset()
  const x = await send(tport, req('GET /public/chain HTTP/1.1', 'Host: shop.example', 'X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.2.3', 'X-Forwarded-Proto: https', 'Connection: close'))
  assert.equal(x.responses[0]?.status, 200)
  assert.equal(headerOf(a, 'x-forwarded-for'), '1.1.1.1, 2.2.2.2, 10.1.2.3, 127.0.0.1')
  assert.equal(headerOf(a, 'x-forwarded-proto'), 'https')
  const line = trusted.logs.filter((l) => l.msg === 'request' && l.url === '/public/chain').at(-1)
  assert.equal(line?.ip, '2.2.2.2', 'never the spoofable left-most entry, never a trusted proxy')
})

test('per-client limits key on the client IP from the trusted chain only', async () => {
  const hit = async (p: number, path: string, xff?: string) => {
    const x = await send(p, req(`GET ${path} HTTP/1.1`, 'Host: a', ...(xff === undefined ? [] : [`X-Forwarded-For: ${xff}`]), 'Connection: close'))
    return x.responses[0]?.status
  }
  // Behind a trusted proxy: one bucket per real client; a spoofed left-most entry changes nothing.
  assert.equal(await hit(tport, '/limited/t', '1.1.1.1'), 200)
  assert.equal(await hit(tport, '/limited/t', '1.1.1.1'), 429)
  assert.equal(await hit(tport, '/limited/t', '9.9.9.9, 1.1.1.1'), 429, 'a spoofed left-most address does not get a fresh bucket')
  assert.equal(await hit(tport, '/limited/t', '1.1.1.1, 10.0.0.7'), 429, 'a trusted hop is skipped')
  assert.equal(await hit(tport, '/limited/t', '2.2.2.2'), 200)
  // From an untrusted peer, X-Forwarded-For is ignored: every value lands in the peer's bucket.
  assert.equal(await hit(port, '/limited/u', '3.3.3.3'), 200)
  assert.equal(await hit(port, '/limited/u', '4.4.4.4'), 429)
  assert.equal(await hit(port, '/limited/u'), 429)
})

test('hop-by-hop headers and those named in Connection never cross, in either direction', async () => {
  reset()
  a.on('/public/hop', (_req, res) => {
    res.setHeader('connection', 'keep-alive, x-internal, X-Other')
    res.setHeader('x-internal', 'secret')
    res.setHeader('x-other', 'secret')
    res.setHeader('keep-alive', 'timeout=5')
    res.setHeader('proxy-authenticate', 'Basic')
    res.setHeader('proxy-connection', 'keep-alive')
    res.setHeader('trailer', 'x-t')
    res.setHeader('upgrade', 'h2c')
    res.setHeader('x-kept', '1')
    res.end('hop')
  })
  const x = await send(port, req('GET /public/hop HTTP/1.1', 'Host: a', 'Connection: close, X-Up-Secret, x-up-other', 'X-Up-Secret: 1', 'X-Up-Other: 1',
    'Keep-Alive: 5', 'TE: trailers', 'Trailer: x-t', 'Proxy-Authorization: Basic Zm9v', 'Proxy-Connection: keep-alive', 'Upgrade: h2c', 'HTTP2-Settings: AAA', 'X-Kept-Up: 1'))
  assert.equal(x.responses[0]?.status, 200)
  const down = Object.keys(x.responses[0].headers)
  for (const h of ['x-internal', 'x-other', 'keep-alive', 'proxy-authenticate', 'proxy-connection', 'trailer', 'upgrade']) assert.ok(!down.includes(h), `${h} reached the client`)
  assert.deepEqual(x.responses[0].headers['x-kept'], ['1'])
  const up = a.seen[0].rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  for (const h of ['x-up-secret', 'x-up-other', 'keep-alive', 'te', 'trailer', 'proxy-authorization', 'proxy-connection', 'upgrade', 'http2-settings']) assert.ok(!up.includes(h), `${h} reached the origin`)
  assert.ok(up.includes('x-kept-up'))
})

test('upgrades: only WebSocket, only where the route allows it; another protocol is served as a plain request, its Upgrade never reaching the origin', async () => {
  const wsReq = (path: string, proto = 'websocket', extra: string[] = []) => req(`GET ${path} HTTP/1.1`, 'Host: a', 'Connection: Upgrade', `Upgrade: ${proto}`, 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', ...extra)
  const refusedUpgrade = async (bytes: string, status: number, code: string) => {
    reset()
    const x = await send(port, bytes, { waitMs: 2000 })
    assert.equal(x.responses[0]?.status, status, bytes.split('\r\n')[0])
    assert.equal(errorCode(x.responses[0]), code)
    assert.ok(x.closed)
    assert.equal(Buffer.concat(wsBytes).length + b.seen.length, 0)
  }
  await refusedUpgrade(wsReq('/private/socket'), 400, 'SLUICE_ERR_UPGRADE_REFUSED')
  // A server may ignore Upgrade (RFC 9110 §7.8): h2c (curl --http2) and TLS/1.2 get the plain
  // answer, and the origin gets a plain request: no Upgrade, Connection or HTTP2-Settings, so no
  // h2c smuggling past the gateway.
  for (const proto of ['h2c', 'TLS/1.2']) {
    reset()
    const x = await send(port, wsReq('/private/plain', proto, ['HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA']), { waitMs: 2000 })
    assert.equal(x.responses[0]?.status, 200, proto)
    assert.equal(x.responses[0]?.body.toString(), 'b GET /private/plain', proto)
    assert.ok(x.closed, 'the connection closes after the answer')
    assert.equal(b.seen.length, 1)
    for (const h of ['upgrade', 'http2-settings']) assert.equal(b.seen[0].headers[h], undefined, `${proto}: ${h} reached the origin`)
    assert.doesNotMatch(String(b.seen[0].headers.connection), /upgrade/i, 'Connection is the gateway\'s own')
    assert.equal(Buffer.concat(wsBytes).length, 0)
  }
  await refusedUpgrade(wsReq('/ws/%2e%2e/private/x'), 400, 'SLUICE_ERR_UPGRADE_REFUSED') // normalised to /private/x
  await refusedUpgrade(wsReq('/ws/a%2fb'), 400, 'SLUICE_ERR_BAD_PATH')
})

test('a WebSocket handshake reaches the origin without hop-by-hop or spoofed forwarding headers', async () => {
  reset()
  wsAnswer = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
  const x = await send(port, req('GET /ws/chat HTTP/1.1', 'Host: a', 'Connection: Upgrade, X-Hop', 'X-Hop: secret', 'Upgrade: websocket', 'Proxy-Authorization: Basic Zm9v', 'Keep-Alive: 5',
    'X-Forwarded-For: 6.6.6.6', 'Forwarded: for=6.6.6.6', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='), { responses: 1, waitMs: 2000 })
  assert.equal(x.responses[0]?.status, 101)
  const hs = Buffer.concat(wsBytes).toString('latin1').toLowerCase()
  assert.match(hs, /^get \/ws\/chat http\/1\.1\r\n/)
  assert.match(hs, /\r\nupgrade: websocket\r\n/)
  assert.match(hs, /\r\nx-forwarded-for: 127\.0\.0\.1\r\n/)
  for (const h of ['x-hop', 'proxy-authorization', 'keep-alive', 'forwarded']) assert.doesNotMatch(hs, new RegExp(`\\r\\n${h}:`), `${h} reached the origin`)
})

test('an origin that refuses the WebSocket handshake never gets a raw tunnel: later bytes are not smuggled through', async () => {
  reset()
  wsAnswer = 'HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nno'
  const smuggled = 'GET /private/admin HTTP/1.1\r\nHost: internal\r\n\r\n'
  const x = await send(port, '', {
    waitMs: 1500,
    drive: (s) => {
      s.write(req('GET /ws/chat HTTP/1.1', 'Host: a', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='))
      s.once('data', () => s.write(smuggled))
    }
  })
  assert.equal(x.responses[0]?.status, 403)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const wire = Buffer.concat(wsBytes).toString('latin1')
  assert.equal(wire.indexOf('/private/admin'), -1, `the origin received a request that bypassed the gateway: ${JSON.stringify(wire)}`)
})

export type { RawResponse }
