// Cache safety through a real gateway: the client-facing host is always in the key, untrusted
// forwarding and rewrite headers never reach the origin (so they cannot poison an entry), private
// answers are never shared, a path suffix changes nothing (web cache deception), and bad upstream
// responses (truncated, reset, wrong length, broken framing) are never stored.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { once } from 'node:events'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { send, req } from './raw.js'

let origin: Origin
let bad: NetServer // a raw origin that answers each path with scripted bytes
const badHits = new Map<string, number>()
const badSockets = new Set<Socket>()
let gw: TestGateway

/** Raw answers by path: bytes to write, then 'end' (FIN), 'destroy' (RST-like) or 'keep'. */
const SCRIPTS: Record<string, [string, 'end' | 'destroy' | 'keep']> = {
  '/bad/truncated': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n' + 'x'.repeat(50), 'end'],
  '/bad/reset': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', 'destroy'],
  '/bad/no-last-chunk': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', 'end'],
  '/bad/cl-te': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 'end'],
  '/bad/two-cl': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello', 'end'],
  '/bad/bad-cl': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5x\r\n\r\nhello', 'end'],
  '/bad/status': ['HTTP/1.1 2000 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello', 'end'],
  '/bad/header': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-Bad Name: 1\r\nContent-Length: 5\r\n\r\nhello', 'end'],
  '/bad/obs-fold': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-A: 1\r\n folded\r\nContent-Length: 5\r\n\r\nhello', 'end'],
  '/bad/gzip-lie': ['HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\nnot gzip!!!!', 'end']
}
/** Complete, well-framed answers whose body is not what it claims: stored as sent, byte for byte. */
const AS_SENT = new Set(['/bad/gzip-lie'])

before(async () => {
  origin = await startOrigin()
  bad = createNetServer((s) => {
    badSockets.add(s)
    s.on('close', () => badSockets.delete(s))
    s.on('error', () => {})
    let buf = ''
    s.on('data', (d) => {
      buf += d.toString('latin1')
      if (!buf.includes('\r\n\r\n')) return
      const path = buf.split(' ')[1].split('?')[0]
      buf = ''
      badHits.set(path, (badHits.get(path) ?? 0) + 1)
      const [bytes, then] = SCRIPTS[path] ?? ['HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n', 'keep']
      s.write(bytes, 'latin1', () => { if (then === 'end') s.end(); else if (then === 'destroy') s.resetAndDestroy() })
    })
  })
  bad.listen(0, '127.0.0.1')
  await once(bad, 'listening')
  gw = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: true }
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 2000, retry: { attempts: 0 } }
  bad: { url: "http://127.0.0.1:${(bad.address() as { port: number }).port}", timeoutMs: 2000, retry: { attempts: 0 }, circuitBreaker: { volumeThreshold: 1000 } }
routes:
  - name: bad
    match: { pathPrefix: /bad/ }
    upstream: bad
    cache: { enabled: true, defaultTtlSeconds: 60 }
    compression: { enabled: true }
  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true, defaultTtlSeconds: 60, hitForMissSeconds: 0 }
`)
})
after(async () => {
  await gw.close()
  for (const s of badSockets) s.destroy()
  bad.close()
  await origin.close()
})

async function get (path: string, headers: Record<string, string> = {}) {
  const r = await request(gw.url + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}
const isHit = (r: { headers: Record<string, unknown> }) => String(r.headers['cache-status']).startsWith('sluice; hit')

test('the client-facing Host is always in the key', async () => {
  origin.on('/h', (req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end(`for ${req.headers['x-forwarded-host']}`) })
  const a1 = await get('/h', { host: 'a.example' })
  const b1 = await get('/h', { host: 'b.example' })
  const a2 = await get('/h', { host: 'a.example' })
  assert.deepEqual([a1.body, b1.body, a2.body], ['for a.example', 'for b.example', 'for a.example'])
  assert.ok(isHit(a2))
  assert.equal(origin.count('/h'), 2, 'one entry per host')
  // Another spelling of a host (case, port) never gets a different host's entry.
  const b2 = await get('/h', { host: 'B.EXAMPLE:80' })
  assert.doesNotMatch(b2.body, /a\.example/)
})

test('unkeyed forwarding and rewrite headers from a client never reach the origin, so they cannot poison an entry', async () => {
  origin.on('/poison', (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' })
    res.end(JSON.stringify(['x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-scheme', 'forwarded', 'x-original-url', 'x-rewrite-url', 'x-real-ip'].map((h) => req.headers[h] ?? null)))
  })
  const attacker = await get('/poison', {
    host: 'shop.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', 'x-forwarded-port': '1337', 'x-forwarded-prefix': '/evil',
    'x-forwarded-scheme': 'nothttps', forwarded: 'host=evil.example', 'x-original-url': '/admin', 'x-rewrite-url': '/admin', 'x-real-ip': '6.6.6.6'
  })
  assert.equal(attacker.body, JSON.stringify(['shop.example', 'http', null, null, null, null, null, null, null]))
  const victim = await get('/poison', { host: 'shop.example' })
  assert.ok(isHit(victim))
  assert.doesNotMatch(victim.body, /evil|1337|admin|6\.6\.6\.6|nothttps/)
})

test('answers to credentials, private answers and Set-Cookie are never served to another client', async () => {
  origin.on('/me', (req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end(`me=${req.headers.authorization ?? 'anon'}`) })
  origin.on('/private', (req, res) => { res.writeHead(200, { 'cache-control': 'private, max-age=60' }); res.end(`private=${req.headers.cookie ?? 'anon'}`) })
  origin.on('/login', (req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'set-cookie': `session=${req.headers['x-user']}` }); res.end(`hello ${req.headers['x-user']}`) })
  const alice = await get('/me', { authorization: 'Bearer alice' })
  const bob = await get('/me', { authorization: 'Bearer bob' })
  const anon = await get('/me')
  assert.deepEqual([alice.body, bob.body, anon.body], ['me=Bearer alice', 'me=Bearer bob', 'me=anon'])
  const p1 = await get('/private', { cookie: 's=alice' })
  const p2 = await get('/private', { cookie: 's=bob' })
  const p3 = await get('/private')
  assert.deepEqual([p1.body, p2.body, p3.body], ['private=s=alice', 'private=s=bob', 'private=anon'])
  const l1 = await get('/login', { 'x-user': 'alice' })
  const l2 = await get('/login', { 'x-user': 'bob' })
  assert.equal(l2.body, 'hello bob')
  assert.equal(String(l2.headers['set-cookie']), 'session=bob', 'never alice\'s cookie')
  assert.equal(l1.headers['cache-status'], 'sluice; fwd=bypass; detail=SET-COOKIE')
  for (const r of [alice, bob, anon, p1, p2, p3, l1, l2]) assert.ok(!isHit(r))
})

test('web cache deception: a static-looking suffix never makes a private answer cacheable', async () => {
  // The origin ignores the suffix (as many frameworks do) and serves the account page.
  origin.on('*', (req, res) => {
    if (!req.url?.startsWith('/account')) { res.writeHead(404); res.end(); return }
    res.writeHead(200, { 'cache-control': 'private', 'content-type': 'text/html' })
    res.end(`account of ${req.headers.cookie ?? 'nobody'}`)
  })
  for (const path of ['/account', '/account.css', '/account/x.css', '/account/..%2fx.js', '/account;x.png', '/account%3B.css', '/account.css?v=1', '/account/.jpg']) {
    const victim = await get(path, { cookie: 'session=victim' })
    const attacker = await get(path)
    if (victim.status === 400) continue // an encoded slash is refused before the cache
    assert.equal(victim.body, 'account of session=victim', path)
    assert.doesNotMatch(attacker.body, /victim/, `${path} served the victim's page to another client`)
    assert.ok(!isHit(attacker), path)
  }
})

test('bad upstream responses are never stored, and the client never gets a complete-looking answer for them', async () => {
  const failures: string[] = []
  for (const path of Object.keys(SCRIPTS).filter((p) => !AS_SENT.has(p))) {
    const results: string[] = []
    for (let i = 0; i < 2; i++) {
      const x = await send(Number(new URL(gw.url).port), req(`GET ${path} HTTP/1.1`, 'Host: a', 'Accept-Encoding: identity', 'Connection: close'), { waitMs: 3000 })
      const r = x.responses[0]
      if (r === undefined) { results.push('aborted'); continue }
      const framing = Object.keys(r.headers).filter((h) => h === 'content-length' || h === 'transfer-encoding')
      if (framing.length > 1 || (r.headers['content-length']?.length ?? 0) > 1) failures.push(`${path}: two framings toward the client`)
      if (r.status === 200 && r.body.toString() === 'hello' && path === '/bad/two-cl') failures.push(`${path}: an ambiguous length was accepted`)
      if (String(r.headers['cache-status']).startsWith('sluice; hit')) failures.push(`${path}: served from the cache`)
      results.push(`${r.status} ${String(r.headers['cache-status'] ?? '')}`)
    }
    if ((badHits.get(path) ?? 0) < 2 && !results.every((s) => s.startsWith('502'))) failures.push(`${path}: the second request did not reach the origin (${results.join(' | ')})`)
    for (const s of results) if (!/^(aborted|502|200 sluice; fwd=(miss|bypass))/.test(s)) failures.push(`${path}: ${s}`)
    if (path === '/bad/truncated' || path === '/bad/reset' || path === '/bad/no-last-chunk') {
      if (!results.every((s) => s === 'aborted' || s.startsWith('502'))) failures.push(`${path}: the client saw a complete answer (${results.join(' | ')})`)
    }
  }
  assert.deepEqual(failures, [])
})

test('a well-framed body that does not decode as its Content-Encoding is replayed exactly as the origin sent it', async () => {
  const port = Number(new URL(gw.url).port)
  const one = await send(port, req('GET /bad/gzip-lie HTTP/1.1', 'Host: a', 'Accept-Encoding: gzip', 'Connection: close'))
  const two = await send(port, req('GET /bad/gzip-lie HTTP/1.1', 'Host: a', 'Accept-Encoding: gzip', 'Connection: close'))
  for (const r of [one.responses[0], two.responses[0]]) {
    assert.equal(r?.status, 200)
    assert.equal(r.body.toString('latin1'), 'not gzip!!!!')
    assert.deepEqual(r.headers['content-encoding'], ['gzip'])
  }
})

// A route's defaultTtlSeconds (or heuristic freshness) is never applied to an answer to a
// request with a Cookie: a per-user page without Cache-Control is not shared (Varnish's
// built-in policy does the same). Explicit freshness or `public` from the origin still counts.
test('a default TTL is not applied to an answer to a request that carried a Cookie', async () => {
  origin.on('/acct.css', (req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end(`account of ${req.headers.cookie ?? 'nobody'}`) })
  const victim = await get('/acct.css', { cookie: 'session=victim' })
  assert.equal(victim.body, 'account of session=victim')
  const attacker = await get('/acct.css')
  assert.doesNotMatch(attacker.body, /victim/)
})
