// WebSocket over HTTP/2 (RFC 8441): a real h2 client (node:http2) opens an extended CONNECT
// stream (`:method: CONNECT`, `:protocol: websocket`) on Sluice's TLS + h2 listener; Sluice
// replays it to a real HTTP/1.1 WebSocket origin as an Upgrade with a key of its own, answers
// 200 with the chosen subprotocol, and relays frames both ways. Refusals keep their status and
// body; a wrong Sec-WebSocket-Accept, a route without `websocket`, another :protocol and a dead
// upstream get Sluice's error codes. Last, headless Chromium (when installed: .ci/run installs
// it) opens a WebSocket on a page it loaded over h2 from Sluice, and uses RFC 8441 to do it.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer, type Server, type IncomingMessage, type IncomingHttpHeaders } from 'node:http'
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import { createServer as createNetServer, connect as netConnect, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { once } from 'node:events'
import { startTestGateway, getText, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

// A page that opens a WebSocket to its own origin, sends "hi", and shows the answer in its title.
const PAGE = `<!doctype html><title>waiting</title><script>
const ws = new WebSocket('wss://' + location.host + '/ws/frames')
ws.onopen = () => ws.send('hi')
ws.onmessage = (e) => { document.title = 'got:' + e.data; ws.close() }
ws.onerror = () => { document.title = 'error' }
</script>`

/** A real RFC 6455 server for one exchange: unmask the client's text frames, answer each with "echo:" and its text. */
function frameEcho (socket: Socket, key: string, head: Buffer): void {
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64')
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
  let buf = head
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d])
    while (buf.length >= 6) {
      const op = buf[0] & 0x0f
      const len = buf[1] & 0x7f // the page sends short frames only
      if (buf.length < 6 + len) return
      const mask = buf.subarray(2, 6)
      const payload = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]))
      buf = buf.subarray(6 + len)
      if (op === 0x8) { socket.end(Buffer.from([0x88, 0])); return }
      if (op === 0x1) {
        const out = Buffer.from('echo:' + payload.toString())
        socket.write(Buffer.concat([Buffer.from([0x81, out.length]), out]))
      }
    }
  }
  socket.on('data', onData)
  socket.on('end', () => socket.end())
}
const dir = mkdtempSync(join(tmpdir(), 'sluice-wsh2-'))
const closers: Array<() => Promise<unknown>> = []
after(async () => { for (const c of closers.reverse()) await c().catch(() => {}); rmSync(dir, { recursive: true, force: true }) })

let origin: Server
let originUrl = ''
let deadUrl = ''
const originSockets = new Set<Socket>()
const seen: Array<{ method: string, url: string, headers: IncomingHttpHeaders }> = []
let g: TestGateway
const keyFile = join(dir, 'k.pem')
const certFile = join(dir, 'c.pem')

before(async () => {
  const key = keyFile
  const cert = certFile
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-days', '2'], { stdio: 'ignore' })

  origin = createServer((req, res) => {
    if (req.url === '/page') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
      res.end(PAGE)
      return
    }
    res.writeHead(426); res.end()
  })
  origin.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    originSockets.add(socket)
    socket.once('close', () => originSockets.delete(socket))
    socket.on('error', () => {})
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers })
    const k = String(req.headers['sec-websocket-key'] ?? '')
    if (req.url === '/ws/refuse-badfield') {
      socket.end('HTTP/1.1 403 Forbidden\r\nBad Name: x\r\ncontent-length: 0\r\n\r\n')
      return
    }
    if (req.url === '/ws/refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nx-why: no-ticket\r\n\r\nnope!\n')
      return
    }
    if (req.url === '/ws/frames') { frameEcho(socket, k, head); return }
    const accept = req.url === '/ws/badaccept' ? 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' : createHash('sha1').update(k + WS_GUID).digest('base64')
    const proto = (req.url ?? '').startsWith('/ws/proto') ? 'Sec-WebSocket-Protocol: chat\r\n' : req.url === '/ws/badfield' ? 'Bad Name: x\r\n' : ''
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${proto}\r\n`)
    if (head.length) socket.write(head)
    socket.on('data', (d: Buffer) => socket.write(d)) // echo the frames' bytes
    socket.on('end', () => socket.end()) // a WebSocket server closes when its peer does
  })
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`
  closers.push(async () => { for (const s of originSockets) s.destroy(); origin.closeAllConnections(); origin.close() })

  // A port nothing listens on: the dead upstream.
  const probe = createNetServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  deadUrl = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`
  probe.close()

  g = await startTestGateway(`log: { accessLog: true }
listen:
  tls: { certFile: "${cert}", keyFile: "${key}" }
  http2: true
upstreams:
  api: { url: "${originUrl}" }
  dead: { url: "${deadUrl}", connectTimeoutMs: 2000 }
routes:
  - name: nows
    match: { pathPrefix: /nows/ }
    upstream: api
    websocket: false
  - name: down
    match: { pathPrefix: /down/ }
    upstream: dead
  - name: limited
    match: { pathPrefix: /limited/ }
    upstream: api
    rateLimit: { perClient: { requestsPerSecond: 0.01, burst: 1 } }
  - name: ws
    match: { pathPrefix: / }
    upstream: api
`, { level: 'debug' })
  closers.push(() => g.close())
})

async function session (): Promise<ClientHttp2Session> {
  const s = h2connect(g.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  closers.push(async () => { s.destroy() })
  if (s.remoteSettings?.enableConnectProtocol === undefined) await once(s, 'remoteSettings')
  return s
}

function connect (s: ClientHttp2Session, path: string, extra: Record<string, string> = {}): { stream: ClientHttp2Stream, response: Promise<Record<string, string | string[] | number | undefined>> } {
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': path, ':authority': new URL(g.url).host, 'sec-websocket-version': '13', ...extra }, { endStream: false })
  stream.on('error', () => {})
  const response = new Promise<Record<string, string | string[] | number | undefined>>((resolve, reject) => {
    stream.once('response', (h) => resolve(h as Record<string, string>))
    stream.once('close', () => reject(new Error(`stream closed before a response (code ${stream.rstCode})`)))
  })
  return { stream, response }
}

async function bodyOf (stream: ClientHttp2Stream): Promise<string> {
  let out = ''
  stream.setEncoding('utf8')
  stream.on('data', (d: string) => { out += d })
  await once(stream, 'end')
  return out
}

/** An HTTP/1.1 WebSocket handshake for `path` (RFC 6455 §1.3's sample key). */
function upgradeRequest (path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`
}

/** A connected HTTP/1.1 client socket: cleartext, or TLS offering only http/1.1. */
async function h1Connect (url: string): Promise<Socket> {
  const u = new URL(url)
  const tls = u.protocol === 'https:'
  const sock = tls
    ? tlsConnect({ host: '127.0.0.1', port: Number(u.port), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
    : netConnect(Number(u.port), '127.0.0.1')
  sock.on('error', () => {})
  await once(sock, tls ? 'secureConnect' : 'connect')
  return sock
}

/** Opens an HTTP/1.1 WebSocket tunnel; resolves with the socket and the answer's head (what came before the tunnel's bytes). */
async function h1Upgrade (url: string, path = '/ws/echo'): Promise<{ sock: Socket, head: string }> {
  const sock = await h1Connect(url)
  sock.write(upgradeRequest(path))
  let got = Buffer.alloc(0)
  const collect = (d: Buffer): void => { got = Buffer.concat([got, d]) }
  sock.on('data', collect)
  await until('the handshake answer', () => got.includes('\r\n\r\n'))
  sock.off('data', collect)
  return { sock, head: got.toString('latin1') }
}

/** Everything a socket receives until it closes, as Latin-1. */
async function readToClose (sock: Socket): Promise<string> {
  let got = ''
  sock.setEncoding('latin1')
  sock.on('data', (d: string) => { got += d })
  await once(sock, 'close')
  return got
}

/** The access lines the gateway logged so far. */
function accessLines (): Array<Record<string, unknown>> {
  return g.logs.filter((l) => l.msg === 'request')
}

/** One sample's value from the admin port's /metrics (0 when absent). */
async function metric (series: string): Promise<number> {
  const r = await getText(g.adminUrl, '/metrics')
  const line = r.body.split('\n').find((l) => l.startsWith(series + ' '))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

/** A masked client text frame (RFC 6455 §5.2) with a short payload. */
function textFrame (text: string): Buffer {
  const payload = Buffer.from(text)
  const mask = Buffer.from([1, 2, 3, 4])
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]))
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked])
}

test('the h2 listener advertises extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)', async () => {
  const s = await session()
  assert.equal(s.remoteSettings.enableConnectProtocol, true)
})

test('an extended CONNECT becomes an HTTP/1.1 Upgrade upstream; 200 comes back and frames pass both ways', async () => {
  const s = await session()
  const before = seen.length
  const { stream, response } = connect(s, '/ws/proto?room=1', { 'sec-websocket-protocol': 'chat, superchat', origin: 'https://app.example' })
  const h = await response
  assert.equal(h[':status'], 200)
  assert.equal(h['sec-websocket-protocol'], 'chat')
  assert.equal(h['sec-websocket-accept'], undefined, 'an h2 answer carries no Sec-WebSocket-Accept (RFC 8441 §5)')
  assert.match(String(h['x-request-id']), /^\S+$/)

  const up = seen[before]
  assert.equal(up.method, 'GET')
  assert.equal(up.url, '/ws/proto?room=1')
  assert.equal(up.headers.upgrade, 'websocket')
  assert.equal(up.headers['sec-websocket-version'], '13')
  assert.equal(up.headers['sec-websocket-protocol'], 'chat, superchat')
  assert.equal(up.headers.origin, 'https://app.example')
  assert.equal(Buffer.from(String(up.headers['sec-websocket-key']), 'base64').length, 16, 'Sluice makes a 16-byte key for the upstream')
  assert.equal(up.headers['x-forwarded-proto'], 'https')
  assert.equal(up.headers['x-request-id'], h['x-request-id'])
  assert.equal(Object.keys(up.headers).some((k) => k.startsWith(':')), false, 'no pseudo-header goes upstream')

  // Frames, both ways: the origin echoes what it gets.
  const chunks: Buffer[] = []
  stream.on('data', (d: Buffer) => chunks.push(d))
  const frame = Buffer.concat([textFrame('hello'), textFrame('over h2')])
  stream.write(frame)
  await until('the echoed frames', () => Buffer.concat(chunks).length >= frame.length)
  assert.deepEqual(Buffer.concat(chunks), frame)

  assert.equal(await metric('sluice_websocket_tunnels_open{protocol="h2"}'), 1)

  // Closing the stream closes the upstream connection.
  const open = originSockets.size
  assert.ok(open >= 1)
  stream.close()
  await until('the upstream connection to close', () => originSockets.size < open)

  // One access line when the tunnel is over, and the metrics.
  await until('the access line', () => accessLines().some((l) => l.reqId === h['x-request-id']))
  const line = accessLines().find((l) => l.reqId === h['x-request-id'])
  assert.equal(line?.status, 200)
  assert.equal(line?.method, 'CONNECT')
  assert.equal(line?.proto, 'h2')
  assert.equal(line?.route, 'ws')
  assert.equal(line?.url, '/ws/proto?room=1')
  assert.equal(line?.bytes, frame.length, 'bytes: what the upstream sent after its handshake')
  await until('the open gauge back at 0', async () => await metric('sluice_websocket_tunnels_open{protocol="h2"}') === 0)
  assert.ok(await metric('sluice_websocket_tunnels_total{route="ws",protocol="h2",result="opened"}') >= 1)
})

test('an HTTP/1.1 Upgrade on the same TLS listener: 101, counted and logged as http/1.1', async () => {
  const { sock, head } = await h1Upgrade(g.url)
  assert.match(head, /^HTTP\/1\.1 101 /)
  assert.equal(await metric('sluice_websocket_tunnels_open{protocol="http/1.1"}'), 1)
  sock.destroy()
  await until('the h1 access line', () => accessLines().some((l) => l.status === 101 && l.proto === undefined && l.method === 'GET' && l.url === '/ws/echo'))
  await until('the h1 gauge back at 0', async () => await metric('sluice_websocket_tunnels_open{protocol="http/1.1"}') === 0)
  assert.ok(await metric('sluice_websocket_tunnels_total{route="ws",protocol="http/1.1",result="opened"}') >= 1)
})

test('an upstream that refuses the handshake: its status, fields and body reach the h2 client', async () => {
  const s = await session()
  const { stream, response } = connect(s, '/ws/refuse')
  const h = await response
  assert.equal(h[':status'], 403)
  assert.equal(h['x-why'], 'no-ticket')
  assert.equal(await bodyOf(stream), 'nope!\n')
  await until('the refusal counted', async () => await metric('sluice_websocket_tunnels_total{route="ws",protocol="h2",result="refused"}') >= 1)
  const line = accessLines().find((l) => l.reqId === h['x-request-id'])
  assert.equal(line?.status, 403)
  assert.equal(line?.bytes, 6)
})

test('a 101 without the right Sec-WebSocket-Accept is 502 SLUICE_ERR_UPSTREAM_PROTOCOL', async () => {
  const s = await session()
  const { stream, response } = connect(s, '/ws/badaccept')
  const h = await response
  assert.equal(h[':status'], 502)
  assert.equal(JSON.parse(await bodyOf(stream)).error, 'SLUICE_ERR_UPSTREAM_PROTOCOL')
})

test('an upstream answer HTTP/2 cannot carry (a field name with a space) is 502, and the gateway carries on', async () => {
  const s = await session()
  for (const path of ['/ws/badfield', '/ws/refuse-badfield']) {
    const { stream, response } = connect(s, path)
    const h = await response
    assert.equal(h[':status'], 502, path)
    assert.equal(JSON.parse(await bodyOf(stream)).error, 'SLUICE_ERR_UPSTREAM_PROTOCOL', path)
  }
  const again = connect(s, '/ws/echo')
  assert.equal((await again.response)[':status'], 200)
  again.stream.close()
})

test('refusals: a route without websocket, another :protocol, a dead upstream', async () => {
  const s = await session()
  const cases: Array<[string, Record<string, string>, number, string]> = [
    ['/nows/x', {}, 400, 'SLUICE_ERR_UPGRADE_REFUSED'],
    ['/ws/echo', { ':protocol': 'connect-udp' }, 400, 'SLUICE_ERR_UPGRADE_REFUSED'],
    ['/down/x', {}, 502, 'SLUICE_ERR_UPSTREAM_CONNECT']
  ]
  for (const [path, extra, status, code] of cases) {
    const { stream, response } = connect(s, path, extra)
    const h = await response
    assert.equal(h[':status'], status, path)
    const body = JSON.parse(await bodyOf(stream))
    assert.equal(body.error, code, path)
    assert.equal(body.requestId, h['x-request-id'])
    const line = accessLines().find((l) => l.reqId === h['x-request-id'])
    assert.equal(line?.status, status, path)
    assert.equal(line?.err, code, path)
  }
  assert.ok(await metric('sluice_websocket_tunnels_total{route="nows",protocol="h2",result="failed"}') >= 1)
  assert.ok(await metric('sluice_websocket_tunnels_total{route="down",protocol="h2",result="failed"}') >= 1)
  // Plain HTTP/2 requests on the same connection are unaffected.
  const plain = s.request({ ':path': '/nows/plain' })
  const ph = await new Promise<Record<string, unknown>>((resolve) => plain.once('response', resolve))
  assert.equal(ph[':status'], 426) // the origin's answer to a plain GET
  plain.resume()
})

const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p): p is string => !!p && existsSync(p))
const noBrowser = CHROMIUM === undefined ? 'no Chromium found: install Debian\'s chromium (apt-get install chromium; .ci/run does) to run the browser check' : false

test('Chromium opens a WebSocket over the h2 connection it loaded the page on (RFC 8441)', { skip: noBrowser, timeout: 30000 }, async () => {
  const { chromium } = await import('playwright-core')
  const profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'))
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreHTTPSErrors: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--ignore-certificate-errors']
  })
  try {
    const page = await browser.newPage()
    const response = await page.goto(g.url + '/page')
    assert.equal(response?.status(), 200)
    await page.waitForFunction(() => document.title !== 'waiting', undefined, { timeout: 10000 })
    assert.equal(await page.title(), 'got:echo:hi')
    const opened = g.logs.filter((l) => l.msg === 'websocket tunnel open' && String(l.route) === 'ws')
    assert.ok(opened.length >= 1, 'the tunnel was opened')
    assert.equal(opened[opened.length - 1].proto, 'h2', 'Chromium used RFC 8441 on the h2 connection, not a new HTTP/1.1 one')
  } finally {
    await browser.close()
    rmSync(profile, { recursive: true, force: true })
  }
})

test('a route\'s per-client limit applies to upgrade requests too: 429 with Retry-After, on h2 and HTTP/1.1', async () => {
  const s = await session()
  const first = connect(s, '/limited/a')
  assert.equal((await first.response)[':status'], 200, 'the first handshake takes the one token')
  first.stream.close()
  const second = connect(s, '/limited/b')
  const h = await second.response
  assert.equal(h[':status'], 429)
  assert.ok(Number(h['retry-after']) >= 1)
  assert.equal(JSON.parse(await bodyOf(second.stream)).error, 'SLUICE_ERR_RATE_LIMITED')
  // The same client over HTTP/1.1: the same bucket, the same answer, as raw bytes with its fields.
  const sock = await h1Connect(g.url)
  sock.write(upgradeRequest('/limited/c'))
  const got = await readToClose(sock)
  assert.match(got, /^HTTP\/1\.1 429 /)
  assert.match(got, /\r\nretry-after: \d+\r\n/i)
  assert.match(got, /SLUICE_ERR_RATE_LIMITED/)
  assert.ok(await metric('sluice_websocket_tunnels_total{route="limited",protocol="h2",result="failed"}') >= 1)
})

test('a shutdown closes open tunnels, h1 and h2, when its grace period is over (an upgraded socket is not the HTTP server\'s)', { timeout: 20000 }, async () => {
  const routes = `upstreams:
  api: { url: "${originUrl}" }
routes:
  - name: ws
    match: { pathPrefix: / }
    upstream: api
`
  // An HTTP/1.1 tunnel on a cleartext listener: before, close() never resolved there, because
  // the HTTP server waited for the upgraded socket and closing its connections skipped it.
  // The same on a TLS listener without h2 (it closes its connections the same way).
  for (const listen of ['', `listen:\n  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }\n`]) {
    const gw = await startTestGateway(`shutdownGraceMs: 300\n${listen}${routes}`)
    closers.push(() => gw.close().catch(() => {}))
    const { sock, head } = await h1Upgrade(gw.url)
    assert.match(head, /^HTTP\/1\.1 101 /)
    const sockClosed = once(sock, 'close')
    await gw.gw.close(300)
    await sockClosed
  }

  // An h2 tunnel on a TLS + h2 listener.
  const tls = await startTestGateway(`shutdownGraceMs: 300
listen:
  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }
  http2: true
${routes}`)
  closers.push(() => tls.close().catch(() => {}))
  const s = h2connect(tls.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  await once(s, 'remoteSettings')
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/ws/echo', ':authority': new URL(tls.url).host, 'sec-websocket-version': '13' }, { endStream: false })
  stream.on('error', () => {})
  assert.equal((await once(stream, 'response') as [Record<string, unknown>])[0][':status'], 200)
  const streamClosed = once(stream, 'close')
  await tls.gw.close(300)
  await streamClosed
  s.destroy()
})

test('while the gateway drains, a new upgrade gets 503 SLUICE_ERR_SHUTTING_DOWN (its tunnel would be cut at the end of the grace period)', { timeout: 20000 }, async () => {
  const gw = await startTestGateway(`shutdownGraceMs: 2000
upstreams:
  api: { url: "${originUrl}" }
routes:
  - name: ws
    match: { pathPrefix: / }
    upstream: api
`)
  closers.push(() => gw.close().catch(() => {}))
  // One tunnel keeps the drain going; a second upgrade arrives during it, on a connection opened before.
  const first = await h1Upgrade(gw.url)
  assert.match(first.head, /^HTTP\/1\.1 101 /)
  const early = await h1Connect(gw.url)
  const closing = gw.gw.close(2000)
  await new Promise((resolve) => setTimeout(resolve, 100))
  early.write(upgradeRequest('/ws/echo'))
  const got = await readToClose(early)
  assert.match(got, /^HTTP\/1\.1 503 /)
  assert.match(got, /SLUICE_ERR_SHUTTING_DOWN/)
  first.sock.destroy()
  await closing
})
