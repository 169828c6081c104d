// WebSocket pass-through edges found by a review (src/upstream/websocket.ts): the request
// limits every request has, a 101 without a reason phrase, an Upgrade list, a client's
// half-close on a TLS listener, a handshake cut by the end of a drain, hash balancing behind
// trusted proxies, and the request ID on HTTP/1.1 answers.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer as createNetServer, connect as netConnect, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { connect as h2connect } from 'node:http2'
import { once } from 'node:events'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const dir = mkdtempSync(join(tmpdir(), 'sluice-ws-edges-'))
const keyFile = join(dir, 'k.pem')
const certFile = join(dir, 'c.pem')
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })

const originSockets = new Set<Socket>()
const heads = new Map<string, string>()
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
    heads.set(path.slice(0, 40), head)
    const key = /\r\nsec-websocket-key: (.*)/i.exec(head)?.[1] ?? ''
    const accept = createHash('sha1').update(key + WS_GUID).digest('base64')
    if (path.startsWith('/silent')) return
    if (path.startsWith('/noreason')) { sock.write(`HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`); return }
    const ok = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
    // Echoes; on the client's FIN answers with a Close frame and closes.
    sock.write(ok)
    const rest = buf.subarray(end + 4)
    if (rest.length > 0) sock.write(rest)
    sock.on('data', (x: Buffer) => sock.write(x))
    sock.on('end', () => sock.end(Buffer.from([0x88, 0])))
  }
  sock.on('data', onData)
})

let gw: TestGateway
let tlsgw: TestGateway
before(async () => {
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  const routes = `upstreams:\n  api: { url: "http://127.0.0.1:${(origin.address() as AddressInfo).port}", timeoutMs: 2000 }\nroutes:\n  - name: ws\n    match: { pathPrefix: / }\n    upstream: api\n    websocket: true\n`
  gw = await startTestGateway(`server: { maxHeadersCount: 20, maxUrlBytes: 200 }\n${routes}`)
  tlsgw = await startTestGateway(`listen:\n  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }\n${routes}`)
})
after(async () => {
  for (const s of originSockets) s.destroy()
  origin.close()
  await gw.close()
  await tlsgw.close()
  rmSync(dir, { recursive: true, force: true })
})

const handshake = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`

async function h1 (g: TestGateway, raw: string): Promise<Socket> {
  const sock = netConnect(Number(new URL(g.url).port), '127.0.0.1')
  sock.on('error', () => {})
  await once(sock, 'connect')
  sock.write(raw)
  return sock
}
/** Reads until `n` bytes after the head, or the socket closes. */
function readHead (sock: Socket): Promise<string> {
  return new Promise((resolve) => {
    let b = Buffer.alloc(0)
    const on = (d: Buffer): void => { b = Buffer.concat([b, d]); if (b.indexOf('\r\n\r\n') !== -1) { sock.off('data', on); resolve(b.toString('latin1')) } }
    sock.on('data', on)
    sock.once('close', () => resolve(b.toString('latin1')))
  })
}

test('an upgrade with more header lines than server.maxHeadersCount gets 431 (as any request does)', async () => {
  let extra = ''
  for (let i = 0; i < 40; i++) extra += `X-H-${i}: v\r\n`
  const sock = await h1(gw, handshake('/many-headers', extra))
  const got = await readHead(sock)
  sock.destroy()
  assert.match(got, /^HTTP\/1\.1 431 /, `got: ${got.split('\r\n')[0]}; origin got ${heads.get('/many-headers')?.split('\r\n').length ?? 0} lines`)
})

test('an upgrade with a request target longer than server.maxUrlBytes gets 414 (as any request does)', async () => {
  const path = '/long-url-' + 'a'.repeat(400)
  const sock = await h1(gw, handshake(path))
  const got = await readHead(sock)
  sock.destroy()
  assert.match(got, /^HTTP\/1\.1 414 /, `got: ${got.split('\r\n')[0]}`)
})

test('an upstream 101 without a reason phrase ("HTTP/1.1 101") opens the tunnel', async () => {
  const sock = await h1(gw, handshake('/noreason'))
  const got = await readHead(sock)
  sock.destroy()
  assert.match(got, /^HTTP\/1\.1 101/, `got: ${got.split('\r\n')[0]}`)
})

test('Upgrade listing websocket among others (accepted by the websocket check) is tunnelled, not 400', async () => {
  const raw = handshake('/list').replace('Upgrade: websocket', 'Upgrade: websocket, foo/1')
  const sock = await h1(gw, raw)
  const got = await readHead(sock)
  sock.destroy()
  assert.match(got, /^HTTP\/1\.1 101/, `got: ${got.split('\r\n')[0]}`)
})

for (const tls of [true, false]) {
  test(`${tls ? 'TLS (https, HTTP/1.1)' : 'cleartext'} tunnel: after the client half-closes, the upstream's answer (its Close frame) still reaches it`, async () => {
    const g = tls ? tlsgw : gw
    const port = Number(new URL(g.url).port)
    const sock = tls
      ? tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, allowHalfOpen: true } as never)
      : netConnect({ port, host: '127.0.0.1', allowHalfOpen: true })
    sock.on('error', () => {})
    await once(sock, tls ? 'secureConnect' : 'connect')
    sock.write(handshake(tls ? '/tls-echo' : '/plain-echo'))
    const chunks: Buffer[] = []
    sock.on('data', (d: Buffer) => chunks.push(d))
    while (Buffer.concat(chunks).indexOf('\r\n\r\n') === -1) await once(sock, 'data')
    sock.end()
    await once(sock, 'close')
    const all = Buffer.concat(chunks)
    assert.deepEqual([...all.subarray(all.indexOf('\r\n\r\n') + 4)], [0x88, 0], 'the Close frame the upstream sent after the client\'s FIN reaches it')
  })
}

test('an upgrade still waiting for its upstream when shutdownGraceMs ends is logged 503 SLUICE_ERR_SHUTTING_DOWN (README), not 499', async () => {
  const port = (origin.address() as AddressInfo).port
  const g = await startTestGateway(`shutdownGraceMs: 300\nupstreams:\n  api: { url: "http://127.0.0.1:${port}", timeoutMs: 20000 }\nroutes:\n  - name: ws\n    match: { pathPrefix: / }\n    upstream: api\n`)
  const sock = await h1(g, handshake('/silent-shutdown'))
  await until('the origin has the handshake', () => heads.has('/silent-shutdown'))
  const closedP = once(sock, 'close')
  await g.gw.close(300)
  await closedP
  await until('the access line', () => g.logs.some((l) => l.msg === 'request' && l.url === '/silent-shutdown'))
  const line = g.logs.find((l) => l.msg === 'request' && l.url === '/silent-shutdown')
  assert.ok(line !== undefined, 'no access line; logs: ' + JSON.stringify(g.logs.filter((l) => l.msg !== 'sluice started')))
  assert.equal(line.err, 'SLUICE_ERR_SHUTTING_DOWN', JSON.stringify(line))
  assert.equal(line.status, 503)
})

/** An origin that names itself: X-Who on a 101, and as the body of a plain answer. */
function namedOrigin (name: string): ReturnType<typeof createNetServer> {
  return createNetServer((sock) => {
    sock.on('error', () => {})
    let buf = Buffer.alloc(0)
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = buf.toString('latin1', 0, end)
      buf = buf.subarray(end + 4)
      const key = /\r\nsec-websocket-key: (.*)/i.exec(head)?.[1]
      if (key !== undefined) {
        const accept = createHash('sha1').update(key + WS_GUID).digest('base64')
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Who: ${name}\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
      } else sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${name.length}\r\n\r\n${name}`)
    })
  })
}

test('balance: hash (ip) behind a trusted proxy: a client\'s WebSocket lands on the same target as its HTTP requests', async () => {
  const a = namedOrigin('A'); const b = namedOrigin('B')
  a.listen(0, '127.0.0.1'); b.listen(0, '127.0.0.1')
  await Promise.all([once(a, 'listening'), once(b, 'listening')])
  const pa = (a.address() as AddressInfo).port; const pb = (b.address() as AddressInfo).port
  const g = await startTestGateway(`listen: { host: 127.0.0.1, port: 0, trustedProxies: ["127.0.0.1"] }\nupstreams:\n  api:\n    targets: [{ url: "http://127.0.0.1:${pa}" }, { url: "http://127.0.0.1:${pb}" }]\n    balance: hash\nroutes:\n  - name: ws\n    match: { pathPrefix: / }\n    upstream: api\n`)
  try {
    const mismatches: string[] = []
    for (let i = 1; i <= 12; i++) {
      const ip = `203.0.113.${i}`
      const r = await fetch(g.url + '/who', { headers: { 'x-forwarded-for': ip } })
      const http = await r.text()
      const sock = await h1(g, handshake('/who', `X-Forwarded-For: ${ip}\r\n`))
      const got = await readHead(sock)
      sock.destroy()
      const ws = /\r\nX-Who: (\w)/.exec(got)?.[1]
      if (ws !== http) mismatches.push(`${ip}: http->${http} ws->${ws ?? got.split('\r\n')[0]}`)
    }
    assert.deepEqual(mismatches, [])
  } finally { await g.close(); a.close(); b.close() }
})

test('HTTP/1.1 upgrades get the request ID: on Sluice\'s own error answer (header and body) and on the upstream\'s 101', async () => {
  const sock = await h1(gw, handshake('/id-' + 'a'.repeat(300), 'X-Request-Id: review-id-1\r\n'))
  const chunks: Buffer[] = []
  sock.on('data', (d: Buffer) => chunks.push(d))
  await once(sock, 'close')
  const got = Buffer.concat(chunks).toString('latin1')
  assert.match(got, /^HTTP\/1\.1 414 /)
  assert.match(got, /\r\nx-request-id: review-id-1\r\n/i, got)
  assert.match(got, /"requestId":"review-id-1"/, got)
  const ok = await h1(gw, handshake('/id-ok', 'X-Request-Id: review-id-2\r\n'))
  const head = await readHead(ok)
  ok.destroy()
  assert.match(head, /^HTTP\/1\.1 101 /)
  assert.equal(head.match(/\r\nx-request-id: review-id-2\r\n/gi)?.length, 1, head)
})

test('h2 extended CONNECT with a :path longer than server.maxUrlBytes gets 414', async () => {
  const port = (origin.address() as AddressInfo).port
  const g = await startTestGateway(`server: { maxUrlBytes: 200 }\nlisten:\n  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }\n  http2: true\nupstreams:\n  api: { url: "http://127.0.0.1:${port}" }\nroutes:\n  - name: ws\n    match: { pathPrefix: / }\n    upstream: api\n`)
  const s = h2connect(g.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  try {
    await once(s, 'remoteSettings')
    const st = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/h2long-' + 'a'.repeat(400), ':authority': new URL(g.url).host, 'sec-websocket-version': '13' }, { endStream: false })
    st.on('error', () => {})
    const [h] = await once(st, 'response') as [Record<string, unknown>]
    st.close()
    assert.equal(h[':status'], 414)
  } finally { s.destroy(); await g.close() }
})
