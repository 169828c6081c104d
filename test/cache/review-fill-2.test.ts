// Fills and coalescing, second review: a 304 updates only the stored response it selects
// (same Vary, and a validator when the stored one has one; another is served as stored,
// unchanged), the followers of a failed fill get the stale
// answer the leader could have had, with the origin's own status, and the hit-for-miss marks
// are bounded. Real gateways and a real loopback origin.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, cachedConfig } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => {
  origin = await startOrigin()
  origin.on('/fill2-probe', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end('probe') })
})
after(async () => { await origin.close() })

const HOST = 'fill2.example'

async function get (base: string, path: string, headers: Record<string, string> = {}) {
  const r = await request(base + path, { headers: { host: HOST, ...headers } })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

/** The requests the origin saw for `url`. */
const seen = (url: string) => origin.seen.filter((s) => s.url === url)

/**
 * A few round trips through the gateway on another path: requests sent before them have been
 * read and have reached the cache by the time these are answered.
 */
async function settle (base: string): Promise<void> {
  for (let i = 0; i < 3; i++) await get(base, '/fill2-probe')
}


test('a 304 carrying another strong ETag than the stored one freshens the entry but keeps its ETag: the stored body is never served under the 304\'s tag', async () => {
  let skew = 0
  const g = await startTestGateway(cachedConfig(origin.url), { now: () => Date.now() + skew })
  origin.on('/etag-moved', (req, res) => {
    // An origin that judges If-Modified-Since and names a tag of its own (balanced servers).
    if (req.headers['if-none-match'] !== undefined) { res.writeHead(304, { 'cache-control': 'max-age=600', etag: '"b"' }); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=1', etag: '"a"' })
    res.end('v1')
  })
  try {
    assert.equal((await get(g.url, '/etag-moved')).body, 'v1')
    skew += 5000
    const r = await get(g.url, '/etag-moved')
    assert.equal(r.body, 'v1')
    assert.equal(r.headers.etag, '"a"', 'the stored ETag, with the stored body')
    assert.match(String(r.headers['cache-status']), /fwd-status=304; stored/)
    const again = await get(g.url, '/etag-moved')
    assert.match(String(again.headers['cache-status']), /^sluice; hit/)
    assert.equal(again.headers.etag, '"a"')
    assert.equal(seen('/etag-moved').length, 2)
  } finally { await g.close() }
})

test('a 304 with the stored ETag still freshens the entry (weak tag, weak comparison)', async () => {
  let skew = 0
  const g = await startTestGateway(cachedConfig(origin.url), { now: () => Date.now() + skew })
  origin.on('/etag-same', (req, res) => {
    if (req.headers['if-none-match'] === '"s1"') { res.writeHead(304, { 'cache-control': 'max-age=600', etag: 'W/"s1"' }); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=1', etag: '"s1"' })
    res.end('same')
  })
  try {
    await get(g.url, '/etag-same')
    skew += 5000
    const r = await get(g.url, '/etag-same')
    assert.equal(r.body, 'same')
    assert.match(String(r.headers['cache-status']), /fwd-status=304; stored/)
    assert.equal(origin.count('/etag-same'), 2)
  } finally { await g.close() }
})

test('a bare 304 (no ETag, no Last-Modified) does not freshen a stored response that has a validator (RFC 9111 §4.3.4): the client gets the stored 200 whole, its Age keeps growing, and the next request revalidates again', async () => {
  let skew = 0
  const g = await startTestGateway(cachedConfig(origin.url), { now: () => Date.now() + skew })
  origin.on('/bare-304', (req, res) => {
    // It would make the entry fresh for 10 minutes, were it used to update it.
    if (req.headers['if-none-match'] !== undefined) { res.writeHead(304, { 'cache-control': 'max-age=600' }); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=1', etag: '"bare1"', 'content-type': 'text/plain' })
    res.end('version one')
  })
  try {
    assert.equal((await get(g.url, '/bare-304')).body, 'version one')
    skew += 5000
    const r = await get(g.url, '/bare-304')
    assert.equal(r.status, 200)
    assert.equal(r.body, 'version one')
    assert.equal(r.headers.etag, '"bare1"')
    assert.equal(r.headers['cache-control'], 'max-age=1', 'the stored fields, not the 304\'s')
    assert.equal(seen('/bare-304')[1].headers['if-none-match'], '"bare1"', 'it was a revalidation')
    assert.match(String(r.headers['cache-status']), /fwd=stale; fwd-status=304; detail=NOT-SELECTED/)
    const age1 = Number(r.headers.age)
    assert.ok(age1 >= 5, `the old response's age: ${age1}`)
    skew += 3000
    const again = await get(g.url, '/bare-304')
    assert.equal(again.status, 200)
    assert.equal(again.body, 'version one')
    assert.doesNotMatch(String(again.headers['cache-status']), /^sluice; hit/, 'not freshened: revalidated again')
    assert.ok(Number(again.headers.age) >= age1 + 3, `its Age keeps growing: ${again.headers.age}`)
    assert.equal(origin.count('/bare-304'), 3)
    // A client's own matching conditional still gets its 304 from the stored response.
    skew += 3000
    const cond = await get(g.url, '/bare-304', { 'if-none-match': '"bare1"' })
    assert.equal(cond.status, 304)
    assert.equal(cond.headers.etag, '"bare1"')
  } finally { await g.close() }
})

test('a 304 that changes Vary does not update the entry keyed by the old Vary: it is served as stored, unchanged, and asked about again next time', async () => {
  let skew = 0
  const g = await startTestGateway(cachedConfig(origin.url), { now: () => Date.now() + skew })
  origin.on('/vary-moved', (req, res) => {
    if (req.headers['if-none-match'] !== undefined) {
      res.writeHead(304, { 'cache-control': 'max-age=600', etag: '"p"', vary: 'Accept-Language' }); res.end(); return
    }
    res.writeHead(200, { 'cache-control': 'max-age=1', etag: '"p"' })
    res.end('plain')
  })
  try {
    assert.equal((await get(g.url, '/vary-moved', { 'accept-language': 'en' })).body, 'plain')
    skew += 5000
    const en = await get(g.url, '/vary-moved', { 'accept-language': 'en' })
    assert.equal(en.body, 'plain')
    // Merged, the entry said Vary: Accept-Language while keyed without it.
    assert.equal(en.headers.vary, undefined)
    assert.match(String(en.headers['cache-status']), /detail=NOT-SELECTED/)
    const fr = await get(g.url, '/vary-moved', { 'accept-language': 'fr' })
    assert.doesNotMatch(String(fr.headers['cache-status']), /^sluice; hit/)
    assert.equal(origin.count('/vary-moved'), 3)
  } finally { await g.close() }
})

test('followers of a fill whose body failed mid-stream get the stale entry under stale-if-error, not the origin', async () => {
  let skew = 0
  const g = await startTestGateway(cachedConfig(origin.url), { now: () => Date.now() + skew })
  let n = 0
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/body-cut', (_req, res) => {
    n++
    if (n === 1) { res.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600' }); res.end('v1'); return }
    if (n === 2) {
      // The revalidation: a head, part of the body, then the connection goes.
      res.writeHead(200, { 'cache-control': 'max-age=600', 'content-length': '100' })
      res.write('partial')
      void held.then(() => res.destroy())
      return
    }
    res.writeHead(503); res.end('down')
  })
  try {
    assert.equal((await get(g.url, '/body-cut')).body, 'v1')
    skew += 5000
    const leader = get(g.url, '/body-cut').catch((err: Error) => err)
    await until('the leader\'s fill to reach the origin', () => n === 2)
    const followers = [1, 2, 3].map(() => get(g.url, '/body-cut'))
    await settle(g.url)
    release()
    assert.ok(await leader instanceof Error, 'the leader\'s body was cut short')
    for (const f of await Promise.all(followers)) {
      assert.equal(f.status, 200)
      assert.equal(f.body, 'v1')
      assert.match(String(f.headers['cache-status']), /fwd=stale/)
    }
  } finally { await g.close() }
})

test('followers of a fill that got a 503 say fwd-status=503 in Cache-Status, as the leader does, not 502', async () => {
  let skew = 0
  const g = await startTestGateway(cachedConfig(origin.url), { now: () => Date.now() + skew })
  let n = 0
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/sick', (_req, res) => {
    n++
    if (n === 1) { res.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600' }); res.end('v1'); return }
    const fail = () => { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('overloaded') }
    if (n === 2) void held.then(fail); else fail()
  })
  try {
    assert.equal((await get(g.url, '/sick')).body, 'v1')
    skew += 5000
    const leader = get(g.url, '/sick')
    await until('the leader\'s fill to reach the origin', () => n === 2)
    const followers = [1, 2, 3].map(() => get(g.url, '/sick'))
    await settle(g.url)
    release()
    const l = await leader
    assert.equal(l.body, 'v1')
    assert.match(String(l.headers['cache-status']), /fwd=stale; fwd-status=503/)
    for (const f of await Promise.all(followers)) {
      assert.equal(f.body, 'v1')
      assert.match(String(f.headers['cache-status']), /fwd=stale; fwd-status=503/)
    }
  } finally { await g.close() }
})

test('hit-for-miss marks are bounded by cache.hitForMissMaxKeys: unique uncacheable URLs evict the oldest mark', async () => {
  const g = await startTestGateway(cachedConfig(origin.url) + '\ncache:\n  hitForMissMaxKeys: 3\n')
  origin.on('/hfm', (_req, res) => { res.writeHead(200, { 'cache-control': 'private' }); res.end('mine') })
  try {
    for (let i = 1; i <= 5; i++) assert.doesNotMatch(String((await get(g.url, `/hfm?id=${i}`)).headers['cache-status']), /HIT-FOR-MISS/)
    assert.equal(g.gw.cache.stats().hitForMiss, 3)
    // The newest marks stay; the oldest went.
    assert.match(String((await get(g.url, '/hfm?id=5')).headers['cache-status']), /detail=HIT-FOR-MISS/)
    assert.match(String((await get(g.url, '/hfm?id=3')).headers['cache-status']), /detail=HIT-FOR-MISS/)
    assert.doesNotMatch(String((await get(g.url, '/hfm?id=1')).headers['cache-status']), /HIT-FOR-MISS/)
    assert.equal(g.gw.cache.stats().hitForMiss, 3)
  } finally { await g.close() }
})
