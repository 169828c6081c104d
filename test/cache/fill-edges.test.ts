// Fills at their edges: a leader client that reads nothing does not hold the fill back; an
// answer uncacheable because of one request's credentials does not make the key hit-for-miss;
// a no-cache entry is never served stale on an error; a 304 that makes the response private
// answers its own client only.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, getText, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
let skew = 0
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace(`  - name: all
    match: { pathPrefix: / }
    upstream: origin`, `  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true, staleIfErrorSeconds: 60, coalesceTimeoutMs: 500 }`) + 'cache:\n  memory: { maxBytes: 268435456, maxEntryBytes: 67108864 }\n', { now: () => Date.now() + skew })
})
after(async () => { await gw.close(); await origin.close() })
const get = (path: string, headers: Record<string, string> = {}) => getText(gw.url, path, headers)

test('a leader client that reads nothing does not hold the fill back: the next client gets the stored entry', async () => {
  const big = Buffer.alloc(16 * 1024 * 1024, 97)
  origin.on('/big', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-length': String(big.length) }); res.end(big) })
  const u = new URL(gw.url)
  const a = connect(Number(u.port), u.hostname)
  await once(a, 'connect')
  a.write(`GET /big HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`)
  a.pause() // never reads
  await sleep(1500)
  const b = await get('/big')
  a.destroy()
  assert.equal(b.body.length, big.length)
  assert.match(String(b.headers['cache-status']), /^sluice; hit|collapsed/, `got ${String(b.headers['cache-status'])}`)
  assert.equal(origin.count('/big'), 1)
})

test('an answer that could not be stored because of one request\'s Authorization does not make the key hit-for-miss', async () => {
  origin.on('/auth', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('shared') })
  assert.equal((await get('/auth', { authorization: 'Bearer alice' })).headers['cache-status'], 'sluice; fwd=bypass; detail=AUTHORIZATION')
  assert.equal((await get('/auth')).headers['cache-status'], 'sluice; fwd=miss')
  assert.match(String((await get('/auth')).headers['cache-status']), /^sluice; hit/)
})

test('a no-cache entry is never served stale when its revalidation fails: the error is passed on', async () => {
  let n = 0
  origin.on('/nc', (_req, res) => {
    if (n++ === 0) { res.writeHead(200, { 'cache-control': 'no-cache, max-age=60', etag: '"v1"' }); res.end('v1'); return }
    res.writeHead(500)
    res.end('boom')
  })
  await get('/nc')
  const r = await get('/nc')
  assert.equal(r.status, 500)
  assert.equal(r.body, 'boom')
})

test('a 304 that makes the response private answers its own client only: the next client does not get the entry as a hit', async () => {
  origin.on('/p304', (req, res) => {
    if (req.headers['if-none-match'] === '"a"') { res.writeHead(304, { 'cache-control': 'private, max-age=600', etag: '"a"' }); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=1', etag: '"a"' })
    res.end('body-a')
  })
  await get('/p304')
  skew += 5000
  const mine = await get('/p304', { cookie: 'user=alice' })
  assert.equal(mine.body, 'body-a')
  assert.equal(mine.headers['cache-status'], 'sluice; fwd=stale; fwd-status=304; detail=PRIVATE')
  // The stored entry was not updated: the next client revalidates for itself (the origin says
  // private to it too), instead of getting alice's answer as a hit.
  const next = await get('/p304')
  assert.equal(next.headers['cache-status'], 'sluice; fwd=stale; fwd-status=304; detail=PRIVATE')
  assert.equal(origin.count('/p304'), 3)
})
