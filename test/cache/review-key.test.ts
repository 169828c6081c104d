// Cache key and reuse policy, reviewed as a shared cache's poisoning and private-data surface:
// each fix tested through a real gateway in front of a scripted loopback origin. The rule: the
// key is computed from exactly what the origin sees, so one client can never make the cache
// serve others an answer the origin gave to a request they did not send.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { get as httpGet } from 'node:http'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: true }
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 2000, retry: { attempts: 0 } }
routes:
  - name: query
    match: { pathPrefix: /rk/q/ }
    upstream: origin
    cache: { enabled: true, hitForMissSeconds: 0, key: { sortQuery: true, ignoreParams: [utm_*, fbclid] } }
  - name: ttl
    match: { pathPrefix: /rk/ttl/ }
    upstream: origin
    cache: { enabled: true, hitForMissSeconds: 0, defaultTtlSeconds: 60 }
  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true, hitForMissSeconds: 0 }
`)
})
after(async () => { await gw.close(); await origin.close() })

async function get (path: string, headers: Record<string, string> = {}) {
  const r = await request(gw.url + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

/** A GET from another loopback address (undici's connect options do not bind one). */
async function getFrom (localAddress: string, path: string): Promise<{ headers: Record<string, unknown>; body: string }> {
  const u = new URL(gw.url + path)
  return await new Promise((resolve, reject) => {
    httpGet({ host: u.hostname, port: u.port, path: u.pathname, localAddress, agent: false }, (r) => {
      let body = ''
      r.setEncoding('utf8')
      r.on('data', (c: string) => { body += c })
      r.on('end', () => resolve({ headers: r.headers, body }))
    }).on('error', reject)
  })
}

// ---- 1. Query parameters left out of the key (or sorted in it) are forwarded as keyed ----

test('an ignored query parameter the origin reflects cannot poison the entry of the URL without it', async () => {
  origin.on('/rk/q/page', (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x')
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/html' })
    res.end(`<a href="/next?utm_source=${u.searchParams.get('utm_source') ?? ''}">next</a>`)
  })
  const attacker = await get('/rk/q/page?utm_source="><script>alert(1)</script>')
  assert.equal(attacker.status, 200)
  const victim = await get('/rk/q/page')
  assert.doesNotMatch(victim.body, /script/, 'the victim never gets what the attacker\'s unkeyed parameter produced')
  assert.equal(victim.body, '<a href="/next?utm_source=">next</a>')
  for (const s of origin.seen.filter((r) => r.url.startsWith('/rk/q/page'))) {
    assert.doesNotMatch(s.url, /utm_/, 'an unkeyed parameter never reaches the origin')
  }
})

test('a repeated query parameter in another order is not served the answer to the first order', async () => {
  // The origin takes the first value of a repeated parameter, as most frameworks do.
  origin.on('/rk/q/item', (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x')
    res.writeHead(200, { 'cache-control': 'max-age=60' })
    res.end('id=' + u.searchParams.get('id'))
  })
  // The attacker's order first: its answer is stored under the sorted key both orders share.
  const attacker = await get('/rk/q/item?id=zzz&id=aaa')
  const victim = await get('/rk/q/item?id=aaa&id=zzz')
  assert.equal(victim.body, 'id=aaa', 'the victim gets what the origin answers to its own URL')
  assert.equal(attacker.body, victim.body, 'one key, one URL the origin answered')
  assert.ok(origin.seen.filter((r) => r.url.startsWith('/rk/q/item')).every((r) => r.url === '/rk/q/item?id=aaa&id=zzz'), 'the origin sees the query as keyed (sorted)')
})

// ---- 2. An invalid max-age or s-maxage makes the response stale, not the route's default ----

test('max-age=-1, max-age=1.5 or an invalid s-maxage is stale at once, never the route default TTL', async () => {
  for (const cc of ['max-age=-1', 'max-age=1.5', 'max-age', 's-maxage=abc, max-age=60']) {
    const path = '/rk/ttl/' + encodeURIComponent(cc)
    origin.on(path, (_req, res) => {
      res.writeHead(200, { 'cache-control': cc })
      res.end('per-request ' + Math.random())
    })
  }
  for (const cc of ['max-age=-1', 'max-age=1.5', 'max-age', 's-maxage=abc, max-age=60']) {
    const path = '/rk/ttl/' + encodeURIComponent(cc)
    const a = await get(path)
    const b = await get(path)
    assert.notEqual(b.body, a.body, `${cc}: the second request is answered by the origin, not stored for defaultTtlSeconds`)
    assert.equal(origin.seen.filter((r) => r.url === path).length, 2, cc)
  }
})

// ---- 3. Vary on X-Forwarded-For, which Sluice sets per client ----

test('a response that varies on X-Forwarded-For is never served to another client', async () => {
  origin.on('/rk/geo', (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'X-Forwarded-For' })
    res.end('for ' + String(req.headers['x-forwarded-for']))
  })
  const a = await getFrom('127.0.0.1', '/rk/geo')
  assert.equal(a.body, 'for 127.0.0.1')
  const b = await getFrom('127.0.0.2', '/rk/geo')
  assert.equal(b.body, 'for 127.0.0.2', 'the second client gets its own answer, not the first client\'s')
  assert.match(String(b.headers['cache-status']), /detail=VARY-FORWARDED/)
})

// ---- 4. Vary: a field the client omits is not the same as one it sends empty ----

test('Vary: a request without the field is not served the answer to one that sent it empty', async () => {
  origin.on('/rk/empty', (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'X-Mode' })
    res.end(req.headers['x-mode'] === undefined ? 'mode absent' : `mode "${req.headers['x-mode']}"`)
  })
  assert.equal((await get('/rk/empty', { 'x-mode': '' })).body, 'mode ""')
  assert.equal((await get('/rk/empty')).body, 'mode absent', 'absent matches only absent (RFC 9111 §4.1)')
  const again = await get('/rk/empty')
  assert.equal(again.body, 'mode absent')
  assert.match(String(again.headers['cache-status']), /hit/, 'absent still shares with absent')
  assert.equal((await get('/rk/empty', { 'x-mode': '' })).body, 'mode ""')
  assert.equal(origin.count('/rk/empty'), 2)
})
