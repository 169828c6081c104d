// Edge listener review fixes: each test reproduces one reviewed bug against a real gateway
// (TLS + HTTP/2 by ALPN, or cleartext), real loopback origins and real node:http2 clients.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as h2connect, constants as h2c, type ClientHttp2Stream, type ClientHttp2Session } from 'node:http2'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { once } from 'node:events'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const dir = mkdtempSync(join(tmpdir(), 'sluice-edge-review-'))
const certFile = join(dir, 'c.pem')
const keyFile = join(dir, 'c.key')
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=t', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })

const closers: (() => Promise<unknown>)[] = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}); rmSync(dir, { recursive: true, force: true }) })

/** Buffered origin (reads each body before its handler). */
let origin: Origin
/** Streaming origin: handlers see the request at its head and read the body themselves. */
let streaming: Origin
/** TLS + h2, the body-rate guard off. */
let g: TestGateway
/** TLS + h2, the body-rate guard on (maxIdleMs 500). */
let gRate: TestGateway

const routes = (o: Origin): string => `upstreams:
  api: { url: "${o.url}" }
routes:
  - name: pass
    match: { pathPrefix: / }
    upstream: api
`
const tlsListen = `listen:
  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }
  http2: true
`

before(async () => {
  origin = await startOrigin()
  closers.push(() => origin.close())
  streaming = await startOrigin()
  streaming.streamBodies = true
  closers.push(() => streaming.close())
  g = await startTestGateway(`${tlsListen}server:
  headersTimeoutMs: 1000
  maxHeaderBytes: 4096
  requestBodyRate: { minBytesPerSecond: 0, maxIdleMs: 0 }
  http2: { maxResetsPerSecond: 20 }
${routes(origin)}`)
  closers.push(() => g.close())
  gRate = await startTestGateway(`${tlsListen}server:
  requestBodyRate: { minBytesPerSecond: 0, graceMs: 0, maxIdleMs: 500 }
${routes(streaming)}`)
  closers.push(() => gRate.close())
})

/** What the origin saw of one streamed upload: 'complete' (the body ended) or 'aborted'. */
function uploadOutcome (o: Origin, path: string): { result: string | null, body: string } {
  const out = { result: null as string | null, body: '' }
  o.on(path, (req, res) => {
    req.on('data', (c: Buffer) => { out.body += String(c) })
    req.on('end', () => { out.result ??= 'complete'; res.end('ok') })
    req.on('aborted', () => { out.result ??= 'aborted' })
    req.on('error', () => { out.result ??= 'aborted' })
  })
  return out
}

test('bug 1: an HTTP/2 upload the client resets mid-body aborts the upstream request, guard off and on', async () => {
  // g's origin is the buffered one: a gateway of its own (guard off) points at the streaming origin.
  const gw = await startTestGateway(`${tlsListen}server:
  requestBodyRate: { minBytesPerSecond: 0, maxIdleMs: 0 }
${routes(streaming)}`)
  closers.push(() => gw.close())
  // How the client gives up: RST_STREAM (NO_ERROR, then INTERNAL_ERROR) with no END_STREAM, and
  // a Content-Length of 100 cut short by close(CANCEL) (node's close() sends END_STREAM first,
  // then RST_STREAM CANCEL: without a Content-Length that body is complete as far as the
  // protocol goes, so that case is not here).
  const cancels = {
    rst: { headers: {}, stop: (r: ClientHttp2Stream) => r.destroy() },
    'rst-internal': { headers: {}, stop: (r: ClientHttp2Stream) => r.destroy(new Error('client gives up')) },
    'short-cl': { headers: { 'content-length': '100' }, stop: (r: ClientHttp2Stream) => r.close(h2c.NGHTTP2_CANCEL) }
  }
  for (const [name, gateway] of [['guard-off', gw], ['guard-on', gRate]] as const) {
    for (const [how, { headers, stop }] of Object.entries(cancels)) {
      const path = `/cancel-${name}-${how}`
      const seen = uploadOutcome(streaming, path)
      const c = h2connect(gateway.url, { rejectUnauthorized: false })
      c.on('error', () => {})
      const r = c.request({ ':path': path, ':method': 'POST', ...headers })
      r.on('error', () => {})
      r.write('partial-')
      await until(`${name} ${how}: the origin reads the first bytes`, () => seen.body === 'partial-')
      stop(r)
      await until(`${name} ${how}: the origin sees the upload end one way or the other`, () => seen.result !== null)
      assert.equal(seen.result, 'aborted', `${name} ${how}: the origin must see an aborted request, not a complete one`)
      c.destroy()
    }
  }
})

/** One GET over an h2 session: status and body, or how the stream ended. */
function h2get (c: ClientHttp2Session, path: string, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve) => {
    const r = c.request({ ':path': path, ...headers })
    let d = ''
    let st: unknown
    r.on('response', (h) => { st = h[':status'] })
    r.on('data', (x: Buffer) => { d += String(x) })
    r.on('end', () => resolve(`${String(st)} ${d}`))
    r.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`))
    r.on('close', () => resolve(`closed rst=${r.rstCode} ${String(st)}`))
    r.end()
  })
}

test('bug 2: streams the gateway resets itself (upstream died mid-body) do not count as client rapid resets', async () => {
  origin.on('/die', (_q, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('partial')
    setTimeout(() => res.socket?.destroy(), 20)
  })
  let release = (): void => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/held', async (_q, res) => { await held; res.end('held done') })
  const c = h2connect(g.url, { rejectUnauthorized: false })
  let goaway: number | null = null
  c.on('goaway', (code) => { goaway = code })
  c.on('error', () => {})
  try {
    const innocent = h2get(c, '/held')
    // 25 streams the upstream cuts mid-body: the gateway resets each (maxResetsPerSecond is 20).
    await Promise.all(Array.from({ length: 25 }, () => h2get(c, '/die')))
    release()
    assert.equal(await innocent, '200 held done', 'the innocent request on the same connection completes')
    assert.equal(goaway, null, 'no GOAWAY (ENHANCE_YOUR_CALM) for resets the gateway sent itself')
    assert.ok(!g.logs.some((l) => /rapid reset/.test(String(l.msg))), 'no rapid-reset warning')
  } finally {
    release()
    c.destroy()
  }
})

/** An HTTP/1.1 client on the TLS + h2 port (ALPN http/1.1). */
function h1OverTls (gateway: TestGateway): TLSSocket {
  const s = tlsConnect({ port: Number(new URL(gateway.url).port), host: '127.0.0.1', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
  s.on('error', () => {})
  return s
}

test('bug 3: HTTP/1.1 clients on the TLS + h2 port are held to maxHeaderBytes and headersTimeoutMs', async () => {
  origin.on('/big', (_q, r) => { r.end('ok') })
  // 8 KB of headers against maxHeaderBytes 4096: 431, as on the cleartext port.
  const big = await new Promise<string>((resolve) => {
    const s = h1OverTls(g)
    let d = ''
    s.on('data', (c: Buffer) => { d += String(c) })
    s.on('close', () => resolve(d.split('\r\n')[0]))
    s.write(`GET /big HTTP/1.1\r\nHost: a\r\nX-Big: ${'x'.repeat(8000)}\r\nConnection: close\r\n\r\n`)
  })
  assert.match(big, /^HTTP\/1\.1 431 /)
  // Slowloris: a header line every 100 ms never finishes the head. headersTimeoutMs is 1000;
  // Node's default check interval (30 s) would keep it open far longer than the bound below.
  const s = h1OverTls(g)
  let got = ''
  let closed = false
  s.on('data', (c: Buffer) => { got += String(c) })
  s.on('close', () => { closed = true })
  await once(s, 'secureConnect')
  s.write('GET /x HTTP/1.1\r\nHost: a\r\n')
  const iv = setInterval(() => { if (!s.destroyed) s.write('X-A: b\r\n') }, 100)
  try {
    await until('the slowloris connection is answered and closed', () => closed, { tries: 100, intervalMs: 100 })
    assert.match(got.split('\r\n')[0], /^HTTP\/1\.1 408 /)
  } finally {
    clearInterval(iv)
    s.destroy()
  }
})

test('bug 4: an HTTP/2 request whose header list exceeds maxHeaderBytes gets 431 SLUICE_ERR_HEADERS_TOO_LARGE', async () => {
  origin.on('/h2big', (_q, r) => { r.end('ok') })
  const before = origin.count('/h2big')
  const c = h2connect(g.url, { rejectUnauthorized: false })
  c.on('error', () => {})
  try {
    // maxHeaderBytes is 4096: 3000 bytes of header pass, 8000 do not.
    assert.equal(await h2get(c, '/h2big', { 'x-big': 'x'.repeat(3000) }), '200 ok')
    const big = await h2get(c, '/h2big', { 'x-big': 'x'.repeat(8000) })
    assert.match(big, /^431 /)
    assert.equal(JSON.parse(big.slice(4)).error, 'SLUICE_ERR_HEADERS_TOO_LARGE')
    assert.equal(origin.count('/h2big'), before + 1, 'the origin never sees the oversized request')
    // The connection stays usable.
    assert.equal(await h2get(c, '/h2big'), '200 ok')
    assert.ok(g.logs.some((l) => l.msg === 'rejected malformed request' && l.code === 'SLUICE_ERR_HEADERS_TOO_LARGE'), 'logged as HTTP/1\'s 431 is')
  } finally {
    c.destroy()
  }
})

test('bug 5: time the upstream spends not reading the body does not count against the client (no 408)', async () => {
  // gRate: maxIdleMs 500. The client sends 8 MB at once; the origin reads nothing for three
  // times maxIdleMs, then everything.
  streaming.on('/slowread', (req, res) => {
    req.pause()
    setTimeout(() => {
      let n = 0
      req.on('data', (c: Buffer) => { n += c.length })
      req.on('end', () => { res.end(`got ${n}`) })
      req.resume()
    }, 1500)
  })
  const body = Buffer.alloc(8 * 1024 * 1024, 97)
  const c = h2connect(gRate.url, { rejectUnauthorized: false })
  c.on('error', () => {})
  try {
    const out = await new Promise<string>((resolve) => {
      const r = c.request({ ':path': '/slowread', ':method': 'POST', 'content-length': String(body.length) })
      let d = ''
      let st: unknown
      r.on('response', (h) => { st = h[':status'] })
      r.on('data', (x: Buffer) => { d += String(x) })
      r.on('end', () => resolve(`${String(st)} ${d}`))
      r.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`))
      r.end(body)
    })
    assert.equal(out, `200 got ${body.length}`)
  } finally {
    c.destroy()
  }
})

test('bug 6: an HTTP/2 request whose Host differs from :authority is malformed (400 SLUICE_ERR_BAD_REQUEST)', async () => {
  origin.on('/who', (q, r) => { r.end(String(q.headers['x-forwarded-host'])) })
  const before = origin.count('/who')
  const c = h2connect(g.url, { rejectUnauthorized: false })
  c.on('error', () => {})
  try {
    const bad = await h2get(c, '/who', { ':authority': 'good.example', host: 'evil.example' })
    assert.match(bad, /^400 /)
    assert.equal(JSON.parse(bad.slice(4)).error, 'SLUICE_ERR_BAD_REQUEST')
    assert.equal(origin.count('/who'), before, 'the origin never sees it')
    // The same name in both (any case) is fine, and so is :authority alone.
    // (X-Forwarded-Host is the Host in lower case, as the cache keys it.)
    assert.equal(await h2get(c, '/who', { ':authority': 'good.example', host: 'GOOD.example' }), '200 good.example')
    assert.equal(await h2get(c, '/who', { ':authority': 'good.example' }), '200 good.example')
  } finally {
    c.destroy()
  }
})
