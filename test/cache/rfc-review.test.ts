// Cache fixes from an RFC review, each tested through a real gateway in front of a scripted
// loopback origin (and, where it helps, on the function behind it). One section per fix, with
// the RFC section it follows. The cache's clock is real time plus an offset a test moves forward.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { varyValue } from '../../src/httpcache/key.js'
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
