// How WebSocket tunnels and refused handshakes end (src/upstream/websocket.ts), on HTTP/1.1 and
// on HTTP/2 (RFC 8441), against a raw origin that answers each path its own way: everything a
// side sent reaches the other before both close; a tunnel the upstream closes is not counted
// as the client's reset; a handshake has a deadline and a bounded head; a refusal's body is
// relayed whole, with back-pressure, by its length or its chunked framing; and a request that
// asks to upgrade to another protocol (h2c) is served as the plain request it also is.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import { createServer as createNetServer, connect as netConnect, type AddressInfo, type Socket } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const BULK = 8 * 1024 * 1024
const dir = mkdtempSync(join(tmpdir(), 'sluice-ws-close-'))
const keyFile = join(dir, 'k.pem')
const certFile = join(dir, 'c.pem')
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })

const originSockets = new Set<Socket>()
/** What the origin received after each handshake, by path. */
const upstreamGot = new Map<string, Buffer[]>()
/** A raw origin: reads the request head itself and answers per path. */
const origin = createNetServer((sock) => {
  originSockets.add(sock)
  sock.once('close', () => originSockets.delete(sock))
  sock.on('error', () => {})
  let buf = Buffer.alloc(0)
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d])
    const end = buf.indexOf('\r\n\r\n')
    if (end === -1) return
    sock.off('data', onData)
    const head = buf.toString('latin1', 0, end)
    const path = head.split(' ')[1]
    const key = /\r\nsec-websocket-key: (.*)/i.exec(head)?.[1] ?? ''
    const accept = createHash('sha1').update(key + WS_GUID).digest('base64')
    const ok = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
    const got: Buffer[] = [buf.subarray(end + 4)]
    upstreamGot.set(path, got)
    sock.on('data', (x: Buffer) => got.push(x))
    if (path.startsWith('/silent')) return
    if (path.startsWith('/bighead')) { sock.write('HTTP/1.1 101 Switching Protocols\r\nX-Big: ' + 'a'.repeat(70000)); return }
    if (path.startsWith('/bulk')) { sock.write(ok); sock.end(Buffer.alloc(BULK, 0x61)); return }
    if (path.startsWith('/closeframe')) { sock.write(ok); sock.end(Buffer.from([0x88, 0])); return }
    // Echoes each frame; on the client's FIN, answers with a Close frame and closes.
    if (path.startsWith('/echo')) { sock.write(ok); sock.on('data', (x: Buffer) => sock.write(x)); sock.on('end', () => sock.end(Buffer.from([0x88, 0]))); return }
    // Refusals that keep the connection open after their body.
    if (path.startsWith('/chunked-refuse')) { sock.write('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n'); return }
    if (path.startsWith('/big-refuse')) { sock.write(`HTTP/1.1 403 Forbidden\r\nContent-Length: ${BULK}\r\n\r\n`); sock.end(Buffer.alloc(BULK, 0x62)); return }
    // A plain request (Upgrade: h2c): echoes its method and body.
    if (path.startsWith('/plain')) {
      const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0)
      const answer = (): void => { const body = `${head.split(' ')[0]} ${Buffer.concat(got).toString()}`; sock.end(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`) }
      if (Buffer.concat(got).length >= len) answer(); else sock.on('data', () => { if (Buffer.concat(got).length >= len) answer() })
      return
    }
    sock.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n')
  }
  sock.on('data', onData)
})

let h1gw: TestGateway
let h2gw: TestGateway
before(async () => {
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  const routes = `upstreams:\n  api: { url: "http://127.0.0.1:${(origin.address() as AddressInfo).port}", timeoutMs: 500 }\nroutes:\n  - name: ws\n    match: { pathPrefix: / }\n    upstream: api\n    websocket: true\n`
  h1gw = await startTestGateway(routes)
  h2gw = await startTestGateway(`server: { http2: { maxResetsPerSecond: 5 } }\nlisten:\n  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }\n  http2: true\n${routes}`)
})
after(async () => {
  for (const s of originSockets) s.destroy()
  origin.close()
  await h1gw.close()
  await h2gw.close()
  rmSync(dir, { recursive: true, force: true })
})

async function h1 (path: string, extra: Buffer = Buffer.alloc(0)): Promise<Socket> {
  const sock = netConnect(Number(new URL(h1gw.url).port), '127.0.0.1')
  sock.on('error', () => {})
  await once(sock, 'connect')
  sock.write(Buffer.concat([Buffer.from(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`), extra]))
  return sock
}
/** Everything a socket receives until it closes (or `ms` pass), and whether it closed. */
function untilClose (sock: Socket, ms: number): Promise<{ buf: Buffer, closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    sock.on('data', (d: Buffer) => chunks.push(d))
    const t = setTimeout(() => resolve({ buf: Buffer.concat(chunks), closed: false }), ms)
    sock.once('close', () => { clearTimeout(t); resolve({ buf: Buffer.concat(chunks), closed: true }) })
  })
}
const bodyOf = (buf: Buffer): Buffer => buf.subarray(buf.indexOf('\r\n\r\n') + 4)
async function h2session (): Promise<ClientHttp2Session> {
  const s = h2connect(h2gw.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  await once(s, 'remoteSettings')
  return s
}
function h2open (s: ClientHttp2Session, path: string): ClientHttp2Stream {
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': path, ':authority': new URL(h2gw.url).host, 'sec-websocket-version': '13' }, { endStream: false })
  stream.on('error', () => {})
  return stream
}
interface H2Result { status: number | undefined, buf: Buffer, ended: boolean, closed: boolean, rst: number }
function h2collect (stream: ClientHttp2Stream, ms: number): Promise<H2Result> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let status: number | undefined
    let ended = false
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.on('data', (d: Buffer) => chunks.push(d))
    stream.on('end', () => { ended = true })
    const t = setTimeout(() => resolve({ status, buf: Buffer.concat(chunks), ended, closed: false, rst: stream.rstCode ?? 0 }), ms)
    stream.once('close', () => { clearTimeout(t); resolve({ status, buf: Buffer.concat(chunks), ended, closed: true, rst: stream.rstCode ?? 0 }) })
  })
}
/** A client that reads nothing for 300 ms, then everything until the end: HTTP/1.1 and HTTP/2. */
async function slowH1 (path: string): Promise<{ buf: Buffer, closed: boolean }> {
  const sock = await h1(path)
  sock.pause()
  await sleep(300)
  sock.resume()
  return await untilClose(sock, 10_000)
}
async function slowH2 (s: ClientHttp2Session, path: string): Promise<H2Result> {
  const st = h2open(s, path)
  const p = h2collect(st, 10_000)
  st.pause()
  await sleep(300)
  st.resume()
  return await p
}
const accessFor = (g: TestGateway, url: string) => g.logs.filter((l) => l.msg === 'request' && l.url === url)

test('everything the upstream sent before closing reaches a slow client, on HTTP/1.1 and HTTP/2, and the client then sees a clean end', async () => {
  const r = await slowH1('/bulk-1')
  assert.ok(r.closed)
  assert.equal(bodyOf(r.buf).length, BULK)
  const s = await h2session()
  const r2 = await slowH2(s, '/bulk-2')
  assert.equal(r2.status, 200)
  assert.equal(r2.buf.length, BULK, 'not one byte lost (8 MiB less 128 bytes arrived before)')
  assert.equal(r2.ended, true)
  s.destroy()
})

test('an h2 client that ends its stream after a Close frame gets the upstream\'s Close frame before the tunnel closes', async () => {
  const s = await h2session()
  const st = h2open(s, '/echo-end')
  await once(st, 'response')
  const p = h2collect(st, 3000)
  st.end(Buffer.from([0x88, 0x80, 0, 0, 0, 0]))
  const r = await p
  assert.equal(r.buf.toString('hex').endsWith('8800'), true, `the client got ${r.buf.toString('hex')}`)
  assert.equal(r.ended, true)
  s.destroy()
})

test('h2 tunnels the upstream closes are not counted as the client\'s rapid resets: the connection and its other tunnels live on', async () => {
  const s = await h2session()
  let goaway: number | null = null
  s.on('goaway', (code: number) => { goaway = code })
  const long = h2open(s, '/echo-long')
  await once(long, 'response')
  for (let i = 0; i < 8; i++) {
    const r = await h2collect(h2open(s, `/closeframe-${i}`), 2000)
    assert.equal(r.status, 200)
    assert.equal(r.ended, true, `tunnel ${i} ended cleanly`)
  }
  await sleep(200)
  assert.equal(goaway, null, 'no GOAWAY (maxResetsPerSecond is 5 here, 8 tunnels closed)')
  assert.equal(s.destroyed, false)
  assert.equal(long.closed, false, 'the open tunnel was not cut')
  assert.equal(h2gw.logs.some((l) => String(l.msg).includes('rapid reset')), false)
  s.destroy()
})

test('an upstream that never answers the handshake gets 504 after its timeoutMs; a handshake head over 64 KiB gets 502', async () => {
  const sock = await h1('/silent-1')
  const r = await untilClose(sock, 5000)
  assert.match(r.buf.toString('latin1'), /^HTTP\/1\.1 504 /)
  assert.ok(r.closed)
  const s = await h2session()
  const r2 = await h2collect(h2open(s, '/silent-2'), 5000)
  assert.equal(r2.status, 504)
  s.destroy()
  const big = await untilClose(await h1('/bighead-1'), 5000)
  assert.match(big.buf.toString('latin1'), /^HTTP\/1\.1 502 /)
  await until('the access line', () => accessFor(h1gw, '/bighead-1').length === 1)
  assert.deepEqual(accessFor(h1gw, '/bighead-1').map((l) => [l.status, l.err]), [[502, 'SLUICE_ERR_UPSTREAM_PROTOCOL']])
  assert.deepEqual(accessFor(h1gw, '/silent-1').map((l) => [l.status, l.err]), [[504, 'SLUICE_ERR_UPSTREAM_TIMEOUT']])
})

test('a refusal\'s body is relayed whole and then the tunnel closes: chunked (decoded for h2) from an upstream that keeps its connection, and 8 MiB by Content-Length to a slow client', async () => {
  const r = await untilClose(await h1('/chunked-refuse-1'), 3000)
  assert.ok(r.closed, 'closed after the last chunk, though the upstream keeps its connection')
  assert.equal(bodyOf(r.buf).toString(), '5\r\nnope!\r\n0\r\n\r\n', 'HTTP/1.1: the chunked framing as sent')
  const s = await h2session()
  const r2 = await h2collect(h2open(s, '/chunked-refuse-2'), 3000)
  assert.equal(r2.status, 403)
  assert.equal(r2.buf.toString(), 'nope!', 'HTTP/2: the decoded body')
  assert.equal(r2.ended, true)
  const big = await slowH1('/big-refuse-1')
  assert.match(big.buf.toString('latin1', 0, 20), /^HTTP\/1\.1 403 /)
  assert.equal(bodyOf(big.buf).length, BULK)
  const big2 = await slowH2(s, '/big-refuse-2')
  assert.equal(big2.status, 403)
  assert.equal(big2.buf.length, BULK)
  assert.equal(big2.ended, true)
  s.destroy()
})

test('a request asking to upgrade to h2c (curl --http2) is served as a plain request, with its body, and the connection closes', async () => {
  for (const [method, body] of [['GET', ''], ['POST', 'hello body']]) {
    const sock = netConnect(Number(new URL(h1gw.url).port), '127.0.0.1')
    sock.on('error', () => {})
    await once(sock, 'connect')
    sock.write(`${method} /plain-${method} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n${body ? `Content-Length: ${body.length}\r\n` : ''}\r\n${body}`)
    const r = await untilClose(sock, 3000)
    assert.match(r.buf.toString('latin1'), /^HTTP\/1\.1 200 /, method)
    assert.equal(bodyOf(r.buf).toString(), `${method} ${body}`, method)
    assert.ok(r.closed, method)
  }
  // A chunked body cannot be read back from a socket Node's parser has let go of: refused, as before.
  const sock = netConnect(Number(new URL(h1gw.url).port), '127.0.0.1')
  sock.on('error', () => {})
  await once(sock, 'connect')
  sock.write('POST /plain-chunked HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n')
  const r = await untilClose(sock, 3000)
  assert.match(r.buf.toString('latin1'), /^HTTP\/1\.1 400 /)
})
