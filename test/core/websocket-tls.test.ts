// A WebSocket upgrade to an https upstream whose certificate is signed by a private CA: the
// tunnel (src/upstream/websocket.ts) connects with the upstream's compiled TLS options, so
// `tls.caFile` must reach it (an earlier copy of those options dropped the CA). With the CA the
// handshake and the echoed bytes come through; without it the client gets a prompt 502, not a hang,
// and the origin never sees the upgrade.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type Server } from 'node:https'
import { connect, type AddressInfo, type Socket } from 'node:net'
import type { IncomingMessage } from 'node:http'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { haveOpenssl, makePrivateCa, type PrivateCa } from './private-ca.js'

const skip = haveOpenssl ? false : 'openssl is not on the PATH: cannot make a private CA'
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=' // RFC 6455 §1.3, for KEY above

let ca: PrivateCa | undefined
let server: Server | undefined
let originUrl = ''
const originSockets = new Set<Socket>()
const clientSockets = new Set<Socket>()
const gateways: TestGateway[] = []
const upgradesSeen: string[] = []

before(async () => {
  if (!haveOpenssl) return
  ca = makePrivateCa()
  server = createServer({ key: ca.key, cert: ca.cert }, (_req, res) => { res.writeHead(426); res.end() })
  server.on('secureConnection', (s: Socket) => { originSockets.add(s); s.once('close', () => originSockets.delete(s)) })
  server.on('tlsClientError', () => {}) // the gateway without the CA aborts the handshake
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    originSockets.add(socket)
    socket.once('close', () => originSockets.delete(socket))
    socket.on('error', () => {})
    upgradesSeen.push(req.url ?? '')
    const key = String(req.headers['sec-websocket-key'] ?? '')
    const accept = createHash('sha1').update(key + WS_GUID).digest('base64')
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\nX-Origin-Path: ${req.url}\r\nX-Origin-Host: ${req.headers.host}\r\n\r\n`)
    if (head.length) socket.write(head)
    socket.on('data', (d: Buffer) => socket.write(d)) // echo
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  originUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
})

after(async () => {
  for (const s of clientSockets) s.destroy()
  await Promise.all(gateways.map(async (g) => await g.close()))
  for (const s of originSockets) s.destroy()
  if (server !== undefined) {
    server.closeAllConnections()
    const closed = once(server, 'close')
    server.close()
    await closed
  }
  ca?.remove()
})

function config (tlsBlock: string): string {
  return `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
upstreams:
  secure:
    url: ${originUrl}
    timeoutMs: 2000
    connectTimeoutMs: 1500
${tlsBlock}
routes:
  - name: ws
    match: { pathPrefix: / }
    upstream: secure
    websocket: true
`
}

async function gateway (tlsBlock: string): Promise<TestGateway> {
  const gw = await startTestGateway(config(tlsBlock))
  gateways.push(gw)
  return gw
}

/** Open a raw connection to the gateway and send a WebSocket upgrade request. */
async function upgrade (gw: TestGateway, path: string): Promise<{ s: Socket; read: (until: (buf: string) => boolean, what: string) => Promise<string> }> {
  const s = connect(Number(new URL(gw.url).port), '127.0.0.1')
  clientSockets.add(s)
  s.once('close', () => clientSockets.delete(s))
  s.on('error', () => {})
  await once(s, 'connect')
  let buf = ''
  let closed = false
  s.on('data', (d: Buffer) => { buf += d.toString('latin1') })
  s.once('close', () => { closed = true })
  s.write(`GET ${path} HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`)
  /** Wait (at most 5 s, so a hang fails instead of stalling) until `until(everything read so far)`. */
  const read = async (until: (b: string) => boolean, what: string): Promise<string> => {
    const deadline = Date.now() + 5000
    while (!until(buf)) {
      if (closed) throw new Error(`connection closed before ${what}; got ${JSON.stringify(buf)}`)
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(buf)}`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return buf
  }
  return { s, read }
}

test('with tls.caFile, a WebSocket upgrade to the private-CA https upstream switches and echoes both ways', { skip }, async () => {
  const gw = await gateway(`    tls:\n      caFile: "${ca!.caFile}"`)
  const { s, read } = await upgrade(gw, '/chat?room=1')
  try {
    const head = await read((b) => b.includes('\r\n\r\n'), 'the handshake answer')
    assert.match(head, /^HTTP\/1\.1 101 /)
    assert.match(head, new RegExp(`\r\nSec-WebSocket-Accept: ${ACCEPT.replace(/[+/]/g, '\\$&')}\r\n`, 'i'))
    assert.match(head, /\r\nX-Origin-Path: \/chat\?room=1\r\n/)
    const headLen = head.indexOf('\r\n\r\n') + 4
    // Arbitrary bytes (a masked text frame "hello" plus raw binary) go through untouched.
    const frame = Buffer.from([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])
    s.write(frame)
    const got = await read((b) => b.length >= headLen + frame.length, 'the echoed frame')
    assert.deepEqual(Buffer.from(got.slice(headLen), 'latin1'), frame)
    assert.ok(upgradesSeen.includes('/chat?room=1'), 'the origin saw the upgrade')
  } finally {
    s.destroy()
  }
})

test('with tls.caFile and tls.servername (a DNS name on the certificate), the upgrade also works', { skip }, async () => {
  const gw = await gateway(`    tls:\n      caFile: "${ca!.caFile}"\n      servername: localhost`)
  const { s, read } = await upgrade(gw, '/sni')
  try {
    const head = await read((b) => b.includes('\r\n\r\n'), 'the handshake answer')
    assert.match(head, /^HTTP\/1\.1 101 /)
    const headLen = head.indexOf('\r\n\r\n') + 4
    s.write('ping')
    const got = await read((b) => b.slice(headLen) === 'ping', 'the echoed ping')
    assert.equal(got.slice(headLen), 'ping')
  } finally {
    s.destroy()
  }
})

test('without tls.caFile, the upgrade fails cleanly with a 502 and the origin never sees it', { skip }, async () => {
  const gw = await gateway('')
  const before = upgradesSeen.length
  const started = Date.now()
  const { s, read } = await upgrade(gw, '/no-ca')
  try {
    // The gateway closes the connection after its error answer: read until then (bounded).
    const deadline = Date.now() + 5000
    while (!s.closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
    const text = await read((b) => b.includes('\r\n\r\n'), 'the error answer')
    assert.ok(s.closed, `the gateway closes the connection after the error; got ${JSON.stringify(text)}`)
    assert.ok(Date.now() - started < 3000, 'answered promptly, not after a timeout')
    assert.match(text, /^HTTP\/1\.1 502 /)
    assert.doesNotMatch(text, /101 Switching/)
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>
    assert.match(JSON.stringify(body), /SLUICE_ERR_UPSTREAM_TLS/)
    assert.equal(upgradesSeen.length, before, 'the origin never received the upgrade')
    const warn = gw.logs.find((l) => l.msg === 'websocket upstream error')
    assert.ok(warn !== undefined, 'the failure is logged')
    assert.match(String(warn.err), /certificate|self.signed|issuer/i)
  } finally {
    s.destroy()
  }
})
