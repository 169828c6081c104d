// Host forwarding review (src/forwarding.ts, src/upstream/headers.ts): host-override headers
// from untrusted clients, the case of the Host the origin is told, and what a client's
// Connection may remove, checked on what real loopback origins receive from raw requests.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createServer as netServer, type AddressInfo } from 'node:net'
import { once } from 'node:events'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, cachedConfig, type TestGateway } from '../helpers/gateway.js'
import { send, req, type RawResponse } from '../hardening/raw.js'

let origin: Origin
/** No trusted proxies: every client is untrusted. */
let open: TestGateway
/** 127.0.0.1 is a trusted proxy (the tests' raw sockets come from it). */
let trusted: TestGateway
/** Untrusted clients, caching, and the upstream keeps the client's Host (preserveHost). */
let cached: TestGateway

const plainListen = 'listen: { host: 127.0.0.1, port: 0 }\n'
const trustListen = 'listen: { host: 127.0.0.1, port: 0, trustedProxies: [127.0.0.1] }\n'

before(async () => {
  origin = await startOrigin()
  origin.on('*', (r, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify(r.headers)) })
  open = await startTestGateway(simpleConfig(origin.url))
  trusted = await startTestGateway(simpleConfig(origin.url).replace(plainListen, trustListen))
  cached = await startTestGateway(cachedConfig(origin.url).replace('    timeoutMs: 2000\n', '    timeoutMs: 2000\n    preserveHost: true\n'))
})
after(async () => { await open.close(); await trusted.close(); await cached.close(); await origin.close() })

async function one (gw: TestGateway, ...lines: string[]): Promise<RawResponse> {
  const ex = await send(Number(new URL(gw.url).port), req(...lines), { responses: 1 })
  const r = ex.responses[0]
  assert.ok(r !== undefined, ex.data.toString('latin1').slice(0, 200))
  return r
}

/** The headers the origin received for one raw request. */
async function seen (gw: TestGateway, ...lines: string[]): Promise<Record<string, string>> {
  const r = await one(gw, ...lines)
  assert.equal(r.status, 200, r.body.toString('latin1').slice(0, 200))
  return JSON.parse(r.body.toString('utf8')) as Record<string, string>
}

const HOST_OVERRIDES = ['X-Host: evil.example', 'X-HTTP-Host-Override: evil.example', 'X-Forwarded-Server: evil.example', 'X-Original-Host: evil.example']
const OVERRIDE_NAMES = ['x-host', 'x-http-host-override', 'x-forwarded-server', 'x-original-host']

test('host-override headers (X-Host, X-HTTP-Host-Override) from an untrusted client never reach the origin; a trusted proxy\'s do', async () => {
  // Frameworks that read X-Host or X-HTTP-Host-Override as the request's host built absolute
  // links to the client's host, stored under the key of the real Host for every client.
  const u = await seen(open, 'GET /o HTTP/1.1', 'Host: shop.example', 'Connection: close', ...HOST_OVERRIDES)
  for (const n of OVERRIDE_NAMES) assert.equal(u[n], undefined, `${n} reached the origin`)
  assert.equal(u['x-forwarded-host'], 'shop.example')

  const t = await seen(trusted, 'GET /o HTTP/1.1', 'Host: shop.example', 'Connection: close', ...HOST_OVERRIDES)
  for (const n of OVERRIDE_NAMES) assert.equal(t[n], 'evil.example', `${n} from a trusted proxy`)

  // Spelt with underscores (which CGI and PHP-FPM read as the dashed name): dropped from both.
  for (const gw of [open, trusted]) {
    const h = await seen(gw, 'GET /o HTTP/1.1', 'Host: shop.example', 'Connection: close', 'X_Host: evil.example', 'X_HTTP_Host_Override: evil.example')
    assert.equal(h.x_host, undefined)
    assert.equal(h.x_http_host_override, undefined)
  }
})

test('a client\'s X-Host cannot poison a cached answer', async () => {
  origin.on('/links', (r, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/html' })
    res.end(`<a href="http://${String(r.headers['x-http-host-override'] ?? r.headers['x-host'] ?? r.headers.host)}/next">next</a>`)
  })
  const attacker = await one(cached, 'GET /links HTTP/1.1', 'Host: cache.example', 'Connection: close', 'X-Host: evil.example', 'X-HTTP-Host-Override: evil.example')
  assert.equal(attacker.body.toString(), '<a href="http://cache.example/next">next</a>')
  const victim = await one(cached, 'GET /links HTTP/1.1', 'Host: cache.example', 'Connection: close')
  assert.match(String(victim.headers['cache-status']), /^sluice; hit/)
  assert.doesNotMatch(victim.body.toString(), /evil/)
})

test('the origin is told the Host in lower case, as the cache keys it: another spelling cannot store a different answer for every client', async () => {
  // A case-sensitive canonical-host redirect (an Express app comparing req.hostname, say): the
  // client's `CANON.example` got a cacheable 301 to `canon.example`, stored under the key the
  // lower-cased Host shares with `canon.example`, whose clients were then sent to themselves.
  for (const [path, field] of [['/canon-host', 'host'], ['/canon-xfh', 'x-forwarded-host']] as const) {
    origin.on(path, (r, res) => {
      if (r.headers[field] !== 'canon.example') {
        res.writeHead(301, { location: 'http://canon.example' + path, 'cache-control': 'max-age=60', 'content-length': '0' })
        res.end()
        return
      }
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' })
      res.end('canonical')
    })
    const attacker = await one(cached, `GET ${path} HTTP/1.1`, 'Host: CANON.Example', 'Connection: close')
    assert.equal(attacker.status, 200, `${field}: the origin saw another host than the key's`)
    const victim = await one(cached, `GET ${path} HTTP/1.1`, 'Host: canon.example', 'Connection: close')
    assert.equal(victim.status, 200)
    assert.equal(victim.body.toString(), 'canonical')
  }

  // Without preserveHost, X-Forwarded-Host is the client's Host in lower case (port kept).
  const h = await seen(open, 'GET /o HTTP/1.1', 'Host: Shop.EXAMPLE:8080', 'Connection: close')
  assert.equal(h['x-forwarded-host'], 'shop.example:8080')
  // A trusted proxy's own X-Forwarded-Host goes on as it sent it; the one Sluice sets is lower case.
  assert.equal((await seen(trusted, 'GET /o HTTP/1.1', 'Host: shop.example', 'Connection: close', 'X-Forwarded-Host: Front.Example'))['x-forwarded-host'], 'Front.Example')
  assert.equal((await seen(trusted, 'GET /o HTTP/1.1', 'Host: Shop.Example', 'Connection: close'))['x-forwarded-host'], 'shop.example')
})

test('a client\'s Connection cannot strip the rewrite and host-override headers a trusted proxy sends', async () => {
  // headers.ts kept its own, shorter list of what Connection may not remove: X-Original-URL,
  // X-Rewrite-URL, X-Original-Host, X-Host and X-HTTP-Host-Override, which forwarding.ts keeps
  // from a trusted proxy, were dropped when the client named them in Connection.
  const h = await seen(trusted, 'GET /c HTTP/1.1', 'Host: shop.example',
    'Connection: close, X-Original-URL, X-Rewrite-URL, X-Original-Host, X-Host, X-HTTP-Host-Override, X-Forwarded-Server, X-Custom',
    'X-Original-URL: /front/c', 'X-Rewrite-URL: /front/c', ...HOST_OVERRIDES, 'X-Custom: gone')
  assert.equal(h['x-original-url'], '/front/c')
  assert.equal(h['x-rewrite-url'], '/front/c')
  for (const n of OVERRIDE_NAMES) assert.equal(h[n], 'evil.example', `${n} was removed by the client's Connection`)
  // Any other field the client's Connection names is still dropped (RFC 9110 §7.6.1).
  assert.equal(h['x-custom'], undefined)
})

test('a WebSocket handshake with preserveHost tells the origin the Host in lower case too', async () => {
  let head = ''
  const ws = netServer((s) => {
    s.on('error', () => {})
    let buf = ''
    s.on('data', (d) => {
      buf += d.toString('latin1')
      if (!buf.includes('\r\n\r\n')) return
      head = buf
      s.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
    })
  })
  ws.listen(0, '127.0.0.1')
  await once(ws, 'listening')
  const gw = await startTestGateway(simpleConfig(`http://127.0.0.1:${(ws.address() as AddressInfo).port}`).replace('    timeoutMs: 2000\n', '    timeoutMs: 2000\n    preserveHost: true\n'))
  try {
    const r = await one(gw, 'GET /ws HTTP/1.1', 'Host: WS.Example', 'Upgrade: websocket', 'Connection: Upgrade',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13')
    assert.equal(r.status, 403)
    assert.match(head, /\r\nhost: ws\.example\r\n/)
    assert.match(head, /\r\nx-forwarded-host: ws\.example\r\n/)
  } finally {
    await gw.close()
    ws.close()
  }
})
