// The request path, from the client's bytes to what the origin receives: pipelined answers stay
// in request order (RFC 9112 §9.3.2), interim responses (RFC 9110 §15.2), Host variants and
// X-Forwarded-Host, the request ID against Connection, transfer codings (RFC 9112 §6.1) and
// repeated slashes. A raw origin (node:net) records the exact bytes each request arrived with.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { send, req, errorCode } from './raw.js'

interface Seen { line: string; headers: Record<string, string[]> }

let origin: Server
let originUrl: string
const sockets = new Set<Socket>()
let seen: Seen[] = []
/** Answers to /slow wait here until the test lets them go. */
let held: Array<() => void> = []
let gw: TestGateway
let port: number

function parseHead (head: string): Seen {
  const lines = head.split('\r\n')
  const headers: Record<string, string[]> = {}
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':')
    ;(headers[l.slice(0, i).toLowerCase()] ??= []).push(l.slice(i + 1).trim())
  }
  return { line: lines[0], headers }
}

function answer (s: Socket, r: Seen): void {
  const path = r.line.split(' ')[1]
  const body = 'ok ' + r.line
  const final = `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`
  if (path.startsWith('/slow')) { held.push(() => s.write(final)); return }
  let pre = ''
  if (path.startsWith('/hints')) pre = 'HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\nconnection: x-secret\r\nx-secret: s\r\nx-internal: i\r\n\r\n'
  if (path.startsWith('/proc')) pre = 'HTTP/1.1 102 Processing\r\n\r\n'
  s.write(pre + final)
}

const config = (url: string) => `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
upstreams:
  o: { url: "${url}", timeoutMs: 5000, retry: { attempts: 0 } }
routes:
  - { name: admin, match: { pathPrefix: /admin/, host: admin.example.com }, upstream: o, headers: { request: { set: { x-route: admin } } } }
  - { name: wild, match: { pathPrefix: /, host: "*.example.com" }, upstream: o, headers: { request: { set: { x-route: wild } } } }
  - { name: private, match: { pathPrefix: /private/ }, upstream: o, headers: { request: { set: { x-route: private } } } }
  - { name: hints, match: { pathPrefix: /hints }, upstream: o, headers: { response: { remove: [x-internal], set: { x-edited: "yes" } } } }
  - { name: rest, match: { pathPrefix: / }, upstream: o, headers: { request: { set: { x-route: rest } } } }
`

before(async () => {
  origin = createServer((s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    let buf = ''
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      for (;;) {
        const i = buf.indexOf('\r\n\r\n')
        if (i === -1) return
        const r = parseHead(buf.slice(0, i))
        buf = buf.slice(i + 4)
        const cl = r.headers['content-length']
        if (cl !== undefined) buf = buf.slice(Number(cl[0]))
        if (r.headers['transfer-encoding'] !== undefined) {
          const j = buf.indexOf('0\r\n\r\n')
          if (j === -1) return
          buf = buf.slice(j + 5)
        }
        seen.push(r)
        answer(s, r)
      }
    })
  })
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  originUrl = `http://127.0.0.1:${(origin.address() as { port: number }).port}`
  gw = await startTestGateway(config(originUrl))
  port = Number(new URL(gw.url).port)
})

after(async () => {
  await gw.close()
  for (const s of sockets) s.destroy()
  origin.close()
})

function reset (): void { seen = []; held = [] }

async function until (cond: () => boolean, limit = 200): Promise<boolean> {
  for (let i = 0; i < limit && !cond(); i++) await new Promise((r) => setTimeout(r, 10))
  return cond()
}

test('a malformed request pipelined behind ones in flight is refused after their answers, never as one (RFC 9112 §9.3.2)', async () => {
  const cases: Array<[string, string[]]> = [
    ['POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n', ['ok POST /slow HTTP/1.1']],
    ['POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /p HTTP/1.1\r\nHost: a\r\n\r\n', ['ok POST /slow HTTP/1.1', 'ok GET /p HTTP/1.1']]
  ]
  for (const [first, bodies] of cases) {
    reset()
    const x = await send(port, '', {
      waitMs: 5000,
      drive: (s) => {
        s.write(first + 'GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: zz\r\n\r\n')
        // The origin answers the POST only once it has it: the gateway has parsed every request by then.
        void until(() => held.length > 0).then(() => { for (const h of held) h() })
      }
    })
    const all = x.data.toString('latin1')
    assert.deepEqual(x.responses.slice(0, bodies.length).map((r) => [r.status, r.body.toString()]), bodies.map((b) => [200, b]), all)
    // Then the refusal (as nginx: the next request is read once the previous answer is out), and the close.
    assert.equal(x.responses.length, bodies.length + 1, all)
    assert.equal(x.responses[bodies.length].status, 400)
    assert.equal(errorCode(x.responses[bodies.length]), 'SLUICE_ERR_BAD_REQUEST')
    assert.equal(x.closed, true)
  }
})

test('a request whose own body turns out malformed, pipelined behind one in flight: the earlier answer, then its 400 and the close (no wait for a body that cannot end)', async () => {
  reset()
  const x = await send(port, '', {
    waitMs: 5000,
    drive: (s) => {
      s.write('POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n')
      void until(() => held.length > 0).then(() => { for (const h of held) h() })
    }
  })
  const all = x.data.toString('latin1')
  assert.deepEqual(x.responses.map((r) => r.status), [200, 400], all)
  assert.equal(x.closed, true, 'closed after the 400')
})

test('a malformed request with nothing in flight still gets its 400 at once', async () => {
  reset()
  const x = await send(port, 'GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: zz\r\n\r\n')
  assert.equal(x.responses.length, 1)
  assert.equal(x.responses[0].status, 400)
  assert.equal(x.closed, true)
  assert.equal(seen.length, 0)
})

test('an HTTP/1.0 client gets no 1xx interim response (RFC 9110 §15.2)', async () => {
  for (const path of ['/hints', '/proc']) {
    reset()
    const x = await send(port, `GET ${path} HTTP/1.0\r\nHost: a\r\n\r\n`)
    assert.equal(x.responses[0]?.status, 200, path + ': ' + x.data.toString('latin1'))
    assert.doesNotMatch(x.data.toString('latin1'), / 10[23] /, path)
  }
})

test('103 Early Hints get the route response edits and lose fields their own Connection names', async () => {
  reset()
  const x = await send(port, req('GET /hints HTTP/1.1', 'Host: a', 'Connection: close'))
  assert.equal(x.responses[0]?.status, 103, x.data.toString('latin1'))
  const h = x.responses[0].headers
  assert.deepEqual(h.link, ['</s.css>; rel=preload'])
  assert.equal(h['x-secret'], undefined)
  assert.equal(h['x-internal'], undefined)
  assert.deepEqual(h['x-edited'], ['yes'])
  assert.equal(x.responses[1]?.status, 200)
})

test('a Host with a trailing dot matches the same routes as without it', async () => {
  for (const [host, path, route] of [['admin.example.com.', '/admin/x', 'admin'], ['ADMIN.example.com.:80', '/admin/x', 'admin'], ['x.example.com.', '/p', 'wild'], ['admin.example.com', '/admin/x', 'admin']]) {
    reset()
    const x = await send(port, req(`GET ${path} HTTP/1.1`, `Host: ${host}`, 'Connection: close'))
    assert.equal(x.responses[0]?.status, 200, host)
    assert.deepEqual(seen[0]?.headers['x-route'], [route], host)
  }
})

test('a Host with a comma is refused with 400, never matched or forwarded as a list', async () => {
  for (const host of ['evil.test,x.example.com', 'x.example.com,evil.test', 'a,b']) {
    reset()
    const x = await send(port, req('GET /p HTTP/1.1', `Host: ${host}`, 'Connection: close'))
    assert.equal(x.responses[0]?.status, 400, host)
    assert.equal(errorCode(x.responses[0]), 'SLUICE_ERR_BAD_REQUEST', host)
    assert.equal(seen.length, 0, host)
  }
})

test('X-Forwarded-Host is never the upstream address when the client sent no Host', async () => {
  const upstreamHost = new URL(originUrl).host
  for (const bytes of ['GET /p HTTP/1.0\r\n\r\n', 'GET /p HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n', 'GET /p HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n']) {
    reset()
    const x = await send(port, bytes)
    assert.equal(x.responses[0]?.status, 200, JSON.stringify(bytes))
    assert.equal(seen[0]?.headers.host?.[0], upstreamHost)
    assert.equal(seen[0]?.headers['x-forwarded-host'], undefined, JSON.stringify(bytes))
  }
  reset()
  await send(port, req('GET /p HTTP/1.1', 'Host: client.test', 'Connection: close'))
  assert.deepEqual(seen[0]?.headers['x-forwarded-host'], ['client.test'])
})

test('Connection: x-request-id does not strip the request ID from the upstream request', async () => {
  reset()
  let x = await send(port, req('GET /p HTTP/1.1', 'Host: a', 'X-Request-Id: abc123', 'Connection: close, x-request-id'))
  assert.equal(x.responses[0]?.status, 200)
  assert.deepEqual(seen[0]?.headers['x-request-id'], ['abc123'])
  assert.deepEqual(x.responses[0].headers['x-request-id'], ['abc123'])
  reset()
  x = await send(port, req('GET /p HTTP/1.1', 'Host: a', 'Connection: close, X-Request-Id'))
  const id = x.responses[0]?.headers['x-request-id']?.[0]
  assert.ok(id !== undefined && id.length > 0)
  assert.deepEqual(seen[0]?.headers['x-request-id'], [id])
})

test('a transfer coding other than chunked is refused with 501, the body never forwarded (RFC 9112 §6.1)', async () => {
  for (const te of ['Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked', 'Transfer-Encoding: deflate,chunked']) {
    reset()
    const x = await send(port, `POST /p HTTP/1.1\r\nHost: a\r\n${te}\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n`)
    assert.equal(x.responses[0]?.status, 501, te + ': ' + x.data.toString('latin1'))
    assert.equal(errorCode(x.responses[0]), 'SLUICE_ERR_NOT_IMPLEMENTED')
    assert.equal(x.responses.length, 1, te)
    assert.equal(x.closed, true)
    assert.equal(seen.length, 0, te)
  }
  reset()
  const ok = await send(port, req('POST /p HTTP/1.1', 'Host: a', 'Transfer-Encoding: chunked', 'Connection: close') + '5\r\nhello\r\n0\r\n\r\n')
  assert.equal(ok.responses[0]?.status, 200)
  assert.equal(seen.length, 1)
})

test('repeated slashes are merged for routing and forwarding', async () => {
  for (const [path, fwd] of [['//private/x', '/private/x'], ['/private//x', '/private/x'], ['///private///x//', '/private/x/'], ['//private/x?a=//b', '/private/x?a=//b']]) {
    reset()
    const x = await send(port, req(`GET ${path} HTTP/1.1`, 'Host: a', 'Connection: close'))
    assert.equal(x.responses[0]?.status, 200, path)
    assert.equal(seen[0]?.line, `GET ${fwd} HTTP/1.1`, path)
    assert.deepEqual(seen[0]?.headers['x-route'], ['private'], path)
  }
})

test('server.mergeSlashes: false forwards repeated slashes as sent, and routes see them as sent', async () => {
  const kept = await startTestGateway(config(originUrl).replace('log: {', 'server: { mergeSlashes: false }\nlog: {'))
  try {
    const p = Number(new URL(kept.url).port)
    for (const [path, fwd, route] of [['/private//x', '/private//x', 'private'], ['/private/http://o/x?a=//b', '/private/http://o/x?a=//b', 'private'],
      ['//private/x', '//private/x', 'rest'], ['/private//../x', '/private/x', 'private']]) {
      reset()
      const x = await send(p, req(`GET ${path} HTTP/1.1`, 'Host: a', 'Connection: close'))
      assert.equal(x.responses[0]?.status, 200, path)
      assert.equal(seen[0]?.line, `GET ${fwd} HTTP/1.1`, path)
      assert.deepEqual(seen[0]?.headers['x-route'], [route], path)
    }
  } finally {
    await kept.close()
  }
})
