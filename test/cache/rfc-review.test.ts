// Cache fixes from an RFC review, each tested through a real gateway in front of a scripted
// loopback origin (and, where it helps, on the function behind it). One section per fix, with
// the RFC section it follows. The cache's clock is real time plus an offset a test moves forward.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { varyValue } from '../../src/httpcache/key.js'
import { parseDirectives, seconds } from '../../src/httpcache/directives.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
let skew = 0
const clock = (): number => Date.now() + skew
const advance = (ms: number): void => { skew += ms }
/** A Date header on the cache's clock (the origin's own would be on real time). */
const dateNow = (): string => new Date(clock()).toUTCString()

const config = (originUrl: string): string => simpleConfig(originUrl).replace(`  - name: all
    match: { pathPrefix: / }
    upstream: origin`, `  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache:
      enabled: true
      staleWhileRevalidateSeconds: 0
      staleIfErrorSeconds: 0
      queryPost: { enabled: true }`)

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(config(origin.url), { now: clock })
})
after(async () => { await gw.close(); await origin.close() })

async function send (path: string, headers: Record<string, string | string[]> = {}, method = 'GET', body?: string) {
  const r = await request(gw.url + path, { method: method as 'GET', headers, body })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}
const get = (path: string, headers: Record<string, string | string[]> = {}) => send(path, headers)

// ---- 1. Vary: values compared as sent, except fields known to be case-insensitive ----

test('Vary: header values that differ only in case are different variants (no cross-user reuse)', async () => {
  origin.on('/rr/me', (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'X-Api-Key, Cookie', date: dateNow() })
    res.end(`key=${req.headers['x-api-key']} cookie=${req.headers.cookie}`)
  })
  const alice = await get('/rr/me', { 'x-api-key': 'AbC123', cookie: 'sid=AbC' })
  assert.equal(alice.body, 'key=AbC123 cookie=sid=AbC')
  const again = await get('/rr/me', { 'x-api-key': 'AbC123', cookie: 'sid=AbC' })
  assert.equal(again.body, alice.body)
  assert.match(String(again.headers['cache-status']), /hit/, 'the same values still share the entry')
  const mallory = await get('/rr/me', { 'x-api-key': 'abc123', cookie: 'sid=AbC' })
  assert.equal(mallory.body, 'key=abc123 cookie=sid=AbC', 'another key, in another case, is not served Alice\'s entry')
  const eve = await get('/rr/me', { 'x-api-key': 'AbC123', cookie: 'sid=abc' })
  assert.equal(eve.body, 'key=AbC123 cookie=sid=abc', 'another cookie, in another case, is not served Alice\'s entry')
  assert.equal(origin.count('/rr/me'), 3)
})

test('Vary: Accept-Language still ignores case, spacing and order; other fields keep case and inner spacing', async () => {
  origin.on('/rr/lang', (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Language', date: dateNow() })
    res.end('lang ' + req.headers['accept-language'])
  })
  await get('/rr/lang', { 'accept-language': 'en-US, de;q=0.5' })
  const same = await get('/rr/lang', { 'accept-language': 'DE;q=0.5 ,en-us' })
  assert.match(String(same.headers['cache-status']), /hit/)
  assert.equal(origin.count('/rr/lang'), 1)
  // Unit: the key value of each kind of field.
  assert.equal(varyValue('accept', { accept: 'Text/HTML, application/json' }), varyValue('accept', { accept: 'text/html,application/json' }))
  assert.equal(varyValue('accept-charset', { 'accept-charset': 'UTF-8' }), varyValue('accept-charset', { 'accept-charset': 'utf-8' }))
  assert.notEqual(varyValue('x-api-key', { 'x-api-key': 'AbC' }), varyValue('x-api-key', { 'x-api-key': 'abc' }))
  assert.notEqual(varyValue('cookie', { cookie: 'sid=AbC' }), varyValue('cookie', { cookie: 'sid=abc' }))
  assert.notEqual(varyValue('x-token', { 'x-token': 'a  b' }), varyValue('x-token', { 'x-token': 'a b' }), 'inner whitespace is part of the value')
  assert.notEqual(varyValue('x-q', { 'x-q': '"a, b"' }), varyValue('x-q', { 'x-q': '"a,b"' }), 'a comma inside a quoted string is no list separator')
  assert.notEqual(varyValue('accept', { accept: 'text/plain;x="A"' }), varyValue('accept', { accept: 'text/plain;x="a"' }), 'quoted parameter values keep their case')
  assert.equal(varyValue('x-list', { 'x-list': ' a ,  b ' }), varyValue('x-list', { 'x-list': 'a,b' }), 'whitespace around list items')
})

// ---- 2. Conflicting directives: the most restrictive wins ----

test('directives: an unqualified private or no-cache wins over the qualified form; a duplicated max-age takes the lowest', () => {
  assert.equal(parseDirectives(['private="x-a"', 'private, max-age=60']).get('private'), true)
  assert.equal(parseDirectives('private, private="x-a"').get('private'), true)
  assert.equal(parseDirectives('no-cache="x-a", no-cache').get('no-cache'), true)
  assert.equal(parseDirectives('no-cache="x-a", no-cache="x-b"').get('no-cache'), 'x-a, x-b', 'two field lists: both withheld')
  assert.equal(seconds(parseDirectives('max-age=600, max-age=1'), 'max-age'), 1)
  assert.equal(seconds(parseDirectives(['s-maxage=1', 's-maxage=600']), 's-maxage'), 1)
  assert.equal(seconds(parseDirectives('max-age=600, max-age=abc'), 'max-age'), 0, 'a duplicate that is invalid makes it stale')
  assert.equal(seconds(parseDirectives('max-age=60'), 'max-age'), 60)
})

test('private="x-a" plus private (two lines or one) is never stored', async () => {
  origin.on('/rr/priv2', (req, res) => {
    res.setHeader('cache-control', ['private="x-a"', 'private, max-age=60'])
    res.setHeader('date', dateNow())
    res.end('for ' + req.headers['x-user'])
  })
  origin.on('/rr/priv1', (req, res) => {
    res.writeHead(200, { 'cache-control': 'private="x-a", private, max-age=60', date: dateNow() })
    res.end('for ' + req.headers['x-user'])
  })
  for (const p of ['/rr/priv2', '/rr/priv1']) {
    assert.equal((await get(p, { 'x-user': 'alice' })).body, 'for alice')
    const bob = await get(p, { 'x-user': 'bob' })
    assert.equal(bob.body, 'for bob', p)
    assert.equal(origin.count(p), 2, p)
  }
})

test('no-cache="x-a" plus no-cache is revalidated before every reuse', async () => {
  origin.on('/rr/nc', (req, res) => {
    if (req.headers['if-none-match'] === '"n1"') { res.writeHead(304, { etag: '"n1"', date: dateNow() }); res.end(); return }
    res.setHeader('cache-control', ['no-cache="x-a"', 'no-cache, max-age=60'])
    res.setHeader('etag', '"n1"')
    res.setHeader('date', dateNow())
    res.end('nc')
  })
  assert.equal((await get('/rr/nc')).body, 'nc')
  assert.equal((await get('/rr/nc')).body, 'nc')
  assert.equal(origin.count('/rr/nc'), 2, 'the second request went to the origin')
  assert.equal(origin.seen.filter((s) => s.url === '/rr/nc')[1].headers['if-none-match'], '"n1"')
})

test('a duplicated max-age uses the lowest value', async () => {
  origin.on('/rr/dup', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600, max-age=5', date: dateNow() }); res.end('dup') })
  await get('/rr/dup')
  advance(10_000)
  await get('/rr/dup')
  assert.equal(origin.count('/rr/dup'), 2, 'stale after 10 s: max-age=5 applied, not 600')
})

// ---- 3. A 304 restarts the Age ----

test('after a 304 without Age, the Age counts from the validation, not from the old response\'s Age', async () => {
  origin.on('/rr/age', (req, res) => {
    if (req.headers['if-none-match'] === '"v1"') { res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=60', date: dateNow() }); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v1"', age: '50', date: dateNow() }); res.end('age body')
  })
  await get('/rr/age')
  advance(11_000) // age 61: stale
  const reval = await get('/rr/age')
  assert.equal(origin.count('/rr/age'), 2)
  assert.ok(Number(reval.headers.age) < 5, `Age right after the 304: ${reval.headers.age}`)
  advance(11_000)
  const later = await get('/rr/age')
  assert.equal(origin.count('/rr/age'), 2, 'fresh 11 s after the validation')
  assert.ok(Number(later.headers.age) >= 11 && Number(later.headers.age) < 20, `Age: ${later.headers.age}`)
})

test('a 304 with Age sets the Age; a 304 without Date dates the entry at the validation', async () => {
  let t0 = 0
  origin.on('/rr/age2', (req, res) => {
    if (req.headers['if-none-match'] === '"v2"') {
      res.sendDate = false
      res.writeHead(304, { etag: '"v2"', age: '7' }); res.end(); return
    }
    t0 = clock()
    res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v2"', date: new Date(t0).toUTCString() }); res.end('age2')
  })
  await get('/rr/age2')
  advance(100_000)
  const reval = await get('/rr/age2')
  assert.equal(origin.count('/rr/age2'), 2)
  assert.ok(Number(reval.headers.age) >= 7 && Number(reval.headers.age) < 12, `Age after a 304 with Age: 7: ${reval.headers.age}`)
  const date = Date.parse(String(reval.headers.date))
  assert.ok(date >= t0 + 99_000, 'Date is the validation time, not the first response\'s')
})

// ---- 4. If-Modified-Since must be a valid HTTP-date ----

test('an If-Modified-Since that is not a valid HTTP-date is ignored (200, not 304)', async () => {
  origin.on('/rr/ims', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'last-modified': 'Mon, 01 Jan 1990 00:00:00 GMT', date: dateNow() }); res.end('ims body')
  })
  await get('/rr/ims')
  for (const ims of ['1', 'Sun, 06 Nov 1994 08:49:37', '2020-01-01T00:00:00Z', 'sun, 06 nov 1994 08:49:37 gmt']) {
    const r = await get('/rr/ims', { 'if-modified-since': ims })
    assert.equal(r.status, 200, ims)
    assert.equal(r.body, 'ims body', ims)
  }
  const valid = await get('/rr/ims', { 'if-modified-since': 'Sun, 06 Nov 1994 08:49:37 GMT' })
  assert.equal(valid.status, 304, 'a valid date later than Last-Modified')
  assert.equal(origin.count('/rr/ims'), 1)
})

// ---- 5. only-if-cached with Range ----

test('only-if-cached with Range never goes to the origin: 504 when nothing suitable is stored', async () => {
  // max-age=60: a loaded machine must not let the entry go stale between the store and the reads.
  origin.on('/rr/oic', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', date: dateNow() }); res.end('0123456789') })
  const oic = { 'cache-control': 'only-if-cached', range: 'bytes=0-3' }
  const none = await get('/rr/oic', oic)
  assert.equal(none.status, 504)
  assert.equal(JSON.parse(none.body).error, 'SLUICE_ERR_ONLY_IF_CACHED')
  const head = await send('/rr/oic', oic, 'HEAD')
  assert.equal(head.status, 504, 'HEAD with Range')
  const multi = await get('/rr/oic', { 'cache-control': 'only-if-cached', range: 'bytes=0-1,3-4' })
  assert.equal(multi.status, 504, 'a range Sluice does not cut')
  assert.equal(origin.count('/rr/oic'), 0)
  await get('/rr/oic')
  const cut = await get('/rr/oic', oic)
  assert.equal(cut.status, 206, 'fresh and stored: cut from the cache')
  assert.equal(cut.body, '0123')
  const headStored = await send('/rr/oic', oic, 'HEAD')
  assert.equal(headStored.status, 200, 'HEAD: Range means nothing, the stored response answers')
  advance(120_000)
  const stale = await get('/rr/oic', oic)
  assert.equal(stale.status, 504, 'stored but stale')
  assert.equal(origin.count('/rr/oic'), 1)
})

// ---- 6. Conditionals on a cached POST query ----

test('a cached POST query answers a matching If-None-Match with 412, never 304; If-Modified-Since is ignored', async () => {
  origin.on('/rr/q', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"q1"', 'last-modified': 'Mon, 01 Jan 1990 00:00:00 GMT', 'content-type': 'application/json', date: dateNow() })
    res.end('{"r":1}')
  })
  const post = (h: Record<string, string> = {}) => send('/rr/q', { 'content-type': 'application/json', ...h }, 'POST', '{"query":"x"}')
  const fill = await post()
  assert.equal(fill.status, 200)
  const hit = await post()
  assert.match(String(hit.headers['cache-status']), /hit/)
  const inm = await post({ 'if-none-match': '"q1"' })
  assert.equal(inm.status, 412, 'If-None-Match matches: the condition is false, and the method is not GET or HEAD')
  const other = await post({ 'if-none-match': '"q2"' })
  assert.equal(other.status, 200)
  assert.equal(other.body, '{"r":1}')
  const ims = await post({ 'if-modified-since': 'Sun, 06 Nov 1994 08:49:37 GMT' })
  assert.equal(ims.status, 200, 'If-Modified-Since applies to GET and HEAD only')
  assert.equal(ims.body, '{"r":1}')
  assert.equal(origin.count('/rr/q'), 1)
})

// ---- 7. If-Range with a date: a valid HTTP-date equal to a strong Last-Modified ----

test('If-Range: only a valid HTTP-date equal to a strong Last-Modified lets the range apply; anything else gets all of it (RFC 9110 §13.1.5)', async () => {
  const lm = 'Mon, 01 Jan 1990 00:00:00 GMT'
  origin.on('/rr/ifr', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'last-modified': lm, date: dateNow() }); res.end('0123456789') })
  // Date equal to Last-Modified: a weak validator (RFC 9110 §8.8.2.2), never matched by If-Range.
  const weakLm = dateNow()
  origin.on('/rr/ifr-weak', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'last-modified': weakLm, date: weakLm }); res.end('0123456789') })
  await get('/rr/ifr')
  await get('/rr/ifr-weak')
  for (const d of [lm, 'Monday, 01-Jan-90 00:00:00 GMT', 'Mon Jan  1 00:00:00 1990']) {
    const r = await get('/rr/ifr', { range: 'bytes=0-3', 'if-range': d })
    assert.equal(r.status, 206, d)
    assert.equal(r.body, '0123', d)
  }
  for (const d of ['1990-01-01', '1990-01-01T00:00:00Z', 'Mon, 01 Jan 1990 00:00:00 UTC', '1 Jan 1990 00:00:00 GMT', 'mon, 01 jan 1990 00:00:00 gmt', 'Mon, 01 Jan 1990 00:00:00', 'January 1, 1990']) {
    const r = await get('/rr/ifr', { range: 'bytes=0-3', 'if-range': d })
    assert.equal(r.status, 200, d)
    assert.equal(r.body, '0123456789', d)
  }
  const weak = await get('/rr/ifr-weak', { range: 'bytes=0-3', 'if-range': weakLm })
  assert.equal(weak.status, 200, 'a Last-Modified that is not at least one second before Date is weak')
  assert.equal(weak.body, '0123456789')
  assert.equal(origin.count('/rr/ifr'), 1)
  assert.equal(origin.count('/rr/ifr-weak'), 1)
})
