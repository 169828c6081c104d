// The cache through a real gateway, in front of a scripted origin.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
// The cache's clock: real time plus an offset that a test moves forward instead of sleeping.
// (The origin's Date header stays on real time, as a slow clock upstream would be.)
let skew = 0
const clock = () => Date.now() + skew
const advance = (ms: number) => { skew += ms }

const cacheRoute = (extra = '') => simpleConfig('ORIGIN').replace(`  - name: all
    match: { pathPrefix: / }
    upstream: origin`, `  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache:
      enabled: true
      staleWhileRevalidateSeconds: 0
      staleIfErrorSeconds: 60
${extra}`)

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(cacheRoute().replace('ORIGIN', origin.url), { now: clock })
})
after(async () => { await gw.close(); await origin.close() })

async function get (path: string, headers: Record<string, string> = {}, base = gw.url) {
  const r = await request(base + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

test('a cacheable response is stored, then served from the cache with Age and Cache-Status', async () => {
  origin.on('/a', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' }); res.end('A') })
  const one = await get('/a')
  assert.equal(one.headers['cache-status'], 'sluice; fwd=miss')
  const two = await get('/a')
  assert.equal(two.body, 'A')
  // Date has 1 s resolution, so the apparent age at arrival may be up to a second.
  assert.match(String(two.headers['cache-status']), /^sluice; hit; ttl=(58|59|60)$/)
  // The same second of resolution: a response stored just before a second boundary is 1 s old.
  assert.match(String(two.headers.age), /^[01]$/)
  assert.equal(origin.count('/a'), 1)
})

test('100 concurrent misses send exactly one request upstream', async () => {
  origin.on('/herd', async (_req, res) => { await sleep(100); res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('herd') })
  const all = await Promise.all(Array.from({ length: 100 }, () => get('/herd')))
  assert.equal(origin.count('/herd'), 1)
  assert.ok(all.every((r) => r.status === 200 && r.body === 'herd'))
  const statuses = all.map((r) => String(r.headers['cache-status']))
  assert.equal(statuses.filter((s) => s === 'sluice; fwd=miss').length, 1) // chunked: stored or not is known only at its end
  // The rest waited for the leader (collapsed) or, on a busy machine, arrived after the store (hit).
  assert.equal(statuses.filter((s) => s.includes('collapsed') || s.startsWith('sluice; hit')).length, 99)
})

test('an uncacheable leader releases the waiters to fetch in parallel, then hit-for-miss skips coalescing', async () => {
  let n = 0
  origin.on('/private', async (_req, res) => { n++; await sleep(50); res.writeHead(200, { 'cache-control': 'private' }); res.end('p' + n) })
  const all = await Promise.all(Array.from({ length: 5 }, () => get('/private')))
  assert.ok(all.every((r) => r.status === 200))
  assert.equal(origin.count('/private'), 5, 'each waiter went upstream itself')
  const later = await get('/private')
  assert.equal(later.headers['cache-status'], 'sluice; fwd=bypass; detail=HIT-FOR-MISS')
})

test('a Set-Cookie or Authorization response is never served to a second client', async () => {
  origin.on('/cookie', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'set-cookie': 'session=alice' }); res.end('alice data') })
  const a = await get('/cookie')
  assert.equal(a.headers['cache-status'], 'sluice; fwd=bypass; detail=SET-COOKIE')
  const b = await get('/cookie')
  assert.notEqual(String(b.headers['cache-status']).startsWith('sluice; hit'), true)
  assert.equal(origin.count('/cookie'), 2)

  origin.on('/me', (req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('user ' + req.headers.authorization) })
  const alice = await get('/me', { authorization: 'Bearer alice' })
  const bob = await get('/me', { authorization: 'Bearer bob' })
  assert.equal(alice.body, 'user Bearer alice')
  assert.equal(bob.body, 'user Bearer bob')
  assert.equal(alice.headers['cache-status'], 'sluice; fwd=bypass; detail=AUTHORIZATION')
  const anon = await get('/me')
  assert.doesNotMatch(anon.body, /alice|bob/)
})

test('Vary keys the variants by the named request header, normalised', async () => {
  origin.on('/vary', (req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Language' }); res.end('lang=' + req.headers['accept-language']) })
  assert.equal((await get('/vary', { 'accept-language': 'fr' })).body, 'lang=fr')
  assert.equal((await get('/vary', { 'accept-language': 'de' })).body, 'lang=de')
  const fr = await get('/vary', { 'accept-language': '  FR ' })
  assert.equal(fr.body, 'lang=fr')
  assert.match(String(fr.headers['cache-status']), /hit/)
  assert.equal(origin.count('/vary'), 2)
})

test('HEAD is answered from a GET entry', async () => {
  origin.on('/head', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' }); res.end('body!') })
  await get('/head')
  const r = await request(gw.url + '/head', { method: 'HEAD' })
  await r.body.dump()
  assert.equal(r.statusCode, 200)
  assert.equal(r.headers['content-length'], '5')
  assert.match(String(r.headers['cache-status']), /hit/)
  assert.equal(origin.count('/head'), 1)
})

test('a client conditional request is answered 304 from the cache', async () => {
  origin.on('/etag', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v1"' }); res.end('tagged') })
  await get('/etag')
  const r = await get('/etag', { 'if-none-match': '"v1"' })
  assert.equal(r.status, 304)
  assert.equal(r.body, '')
  assert.equal(r.headers.etag, '"v1"')
  assert.equal(origin.count('/etag'), 1)
})

test('a stale entry is revalidated with its validator; a 304 refreshes it', async () => {
  let seenInm: string | undefined
  origin.on('/reval', (req, res) => {
    seenInm = req.headers['if-none-match'] as string | undefined
    if (seenInm === '"r1"') { res.writeHead(304, { 'cache-control': 'max-age=60', etag: '"r1"', 'x-new': 'yes' }); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=0', etag: '"r1"' }); res.end('reval body')
  })
  await get('/reval')
  const second = await get('/reval')
  assert.equal(seenInm, '"r1"')
  assert.equal(second.body, 'reval body')
  assert.equal(second.headers['cache-status'], 'sluice; fwd=stale; fwd-status=304; stored')
  assert.equal(second.headers['x-new'], 'yes')
  const third = await get('/reval')
  assert.match(String(third.headers['cache-status']), /^sluice; hit/)
})

test('no-store, only-if-cached and the client max-age directive are honoured', async () => {
  origin.on('/nostore', (_req, res) => { res.writeHead(200, { 'cache-control': 'no-store' }); res.end('x') })
  assert.equal((await get('/nostore')).headers['cache-status'], 'sluice; fwd=bypass; detail=NO-STORE')
  const oic = await get('/never-fetched', { 'cache-control': 'only-if-cached' })
  assert.equal(oic.status, 504)
  assert.equal(JSON.parse(oic.body).error, 'SLUICE_ERR_ONLY_IF_CACHED')
  origin.on('/maxage', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('m') })
  await get('/maxage')
  advance(1100)
  await get('/maxage', { 'cache-control': 'max-age=0' })
  assert.equal(origin.count('/maxage'), 2, 'max-age=0 from the client forces a trip to the origin')
})

test('a successful unsafe request invalidates the target URI', async () => {
  const g2 = await startTestGateway(cacheRoute().replace('ORIGIN', origin.url), { now: clock })
  try {
    origin.on('/item', (req, res) => { res.writeHead(req.method === 'POST' ? 201 : 200, { 'cache-control': 'max-age=60' }); res.end(req.method) })
    await get('/item', {}, g2.url)
    assert.match(String((await get('/item', {}, g2.url)).headers['cache-status']), /hit/)
    const p = await request(g2.url + '/item', { method: 'POST', body: 'x' })
    await p.body.dump()
    assert.equal(p.statusCode, 201)
    assert.equal((await get('/item', {}, g2.url)).headers['cache-status'], 'sluice; fwd=miss')
  } finally { await g2.close() }
})

test('stale-while-revalidate answers at once and refreshes in the background', async () => {
  const g2 = await startTestGateway(cacheRoute().replace('ORIGIN', origin.url), { now: clock })
  try {
    let version = 1
    let releaseRefresh!: () => void
    const refreshHeld = new Promise<void>((resolve) => { releaseRefresh = resolve })
    origin.on('/swr', async (_req, res) => {
      const v = version++
      if (v === 2) await refreshHeld // the background refresh hangs until the test lets it go
      res.writeHead(200, { 'cache-control': 'max-age=1, stale-while-revalidate=60' }); res.end('v' + v)
    })
    assert.equal((await get('/swr', {}, g2.url)).body, 'v1')
    advance(1100)
    const stale = await get('/swr', {}, g2.url)
    // The refresh has not been allowed to finish, yet the client already has its answer.
    assert.equal(stale.body, 'v1')
    assert.match(String(stale.headers['cache-status']), /fwd=stale; ttl=-\d+; detail=STALE-WHILE-REVALIDATE/)
    releaseRefresh()
    for (let i = 0; i < 50 && origin.count('/swr') < 2; i++) await sleep(20)
    await sleep(50)
    assert.equal((await get('/swr', {}, g2.url)).body, 'v2')
  } finally { await g2.close() }
})

test('stale-if-error serves the stored response when the origin is down, and says so', async () => {
  const o2 = await startOrigin()
  const g2 = await startTestGateway(cacheRoute().replace('ORIGIN', o2.url), { now: clock })
  try {
    o2.on('/sie', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=1' }); res.end('kept') })
    await get('/sie', {}, g2.url)
    await o2.kill()
    advance(1100)
    const r = await get('/sie', {}, g2.url)
    assert.equal(r.status, 200)
    assert.equal(r.body, 'kept')
    assert.match(String(r.headers['cache-status']), /^sluice; fwd=stale; fwd-status=502; ttl=-\d+; detail=SLUICE_ERR_UPSTREAM_CONNECT$/)
  } finally { await g2.close(); await o2.close() }
})

test('a body reset mid-way reaches the client as an aborted response and is not stored', async () => {
  origin.on('/reset', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '100000' })
    res.write(Buffer.alloc(1000, 'x'))
    setTimeout(() => res.socket?.destroy(), 20)
  })
  const r = await request(gw.url + '/reset')
  await assert.rejects(r.body.text())
  origin.on('/reset', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('whole') })
  const again = await get('/reset')
  assert.equal(again.body, 'whole')
  assert.equal(again.headers['cache-status'], 'sluice; fwd=miss')
})

test('responses larger than maxEntryBytes stream through uncached', async () => {
  const g2 = await startTestGateway(cacheRoute().replace('ORIGIN', origin.url).replace('log: {', 'cache: { memory: { maxBytes: 1000000, maxEntryBytes: 1000 } }\nlog: {'))
  try {
    origin.on('/big', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '5000' }); res.end(Buffer.alloc(5000, 'b')) })
    const r = await get('/big', {}, g2.url)
    assert.equal(r.body.length, 5000)
    assert.equal(r.headers['cache-status'], 'sluice; fwd=bypass; detail=TOO-LARGE')
  } finally { await g2.close() }
})

test('purge by key, prefix and tag empties the cache', async () => {
  origin.on('/p/1', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'cache-tag': 'products p1' }); res.end('1') })
  origin.on('/p/2', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'surrogate-key': 'products' }); res.end('2') })
  origin.on('/q/1', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('q') })
  for (const p of ['/p/1', '/p/2', '/q/1']) await get(p)
  const purge = async (body: object) => (await (await request(gw.adminUrl + '/admin/purge', { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })).body.json()) as { purged: number }
  assert.equal((await purge({ tag: 'products' })).purged, 2)
  assert.equal((await get('/p/1')).headers['cache-status'], 'sluice; fwd=miss')
  assert.equal((await purge({ key: '/q/1' })).purged, 1)
  assert.equal((await purge({ prefix: '/p/' })).purged, 1)
})

test('cache metrics: events by result and memory gauges', async () => {
  const text = await (await request(gw.adminUrl + '/metrics')).body.text()
  assert.match(text, /sluice_cache_events_total\{route="cached",result="hit",layer="l1"\} \d+/)
  assert.match(text, /sluice_cache_events_total\{route="cached",result="coalesced"\} \d+/)
  assert.match(text, /sluice_cache_bytes\{tier="memory"\} \d+/)
  assert.match(text, /sluice_http_requests_total\{route="cached",method="GET",status_class="2xx",cache="hit"\}/)
})

test('requests coalesced before the Vary is known get only their own variant', async () => {
  origin.on('/vary-herd', async (req, res) => { await sleep(80); res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Language' }); res.end('lang=' + req.headers['accept-language']) })
  const langs = ['fr', 'de', 'fr', 'de', 'it']
  const all = await Promise.all(langs.map((l) => get('/vary-herd', { 'accept-language': l })))
  all.forEach((r, i) => assert.equal(r.body, 'lang=' + langs[i]))
})

test('cache.warmup fetches the listed paths after start and after a purge', async () => {
  origin.on('/warm/a', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('warm') })
  const g2 = await startTestGateway(cacheRoute().replace('ORIGIN', origin.url).replace('log: {', 'cache: { warmup: { paths: [/warm/a], host: warm.example } }\nlog: {'))
  try {
    for (let i = 0; i < 100 && origin.count('/warm/a') < 1; i++) await sleep(20)
    const r = await request(g2.url + '/warm/a', { headers: { host: 'warm.example' } })
    assert.equal(await r.body.text(), 'warm')
    assert.match(String(r.headers['cache-status']), /^sluice; hit/, 'already warm')
    const p = await request(g2.adminUrl + '/admin/purge', { method: 'POST', body: '{"prefix":"/warm/"}', headers: { 'content-type': 'application/json' } })
    await p.body.dump()
    for (let i = 0; i < 100 && origin.count('/warm/a') < 2; i++) await sleep(20)
    assert.equal(origin.count('/warm/a'), 2, 'warmed again after the purge')
  } finally { await g2.close() }
})

test('a route may cache POST queries: the key includes a hash of the body', async () => {
  const g2 = await startTestGateway(cacheRoute('      queryPost: { enabled: true, maxBodyBytes: 1000 }\n').replace('ORIGIN', origin.url))
  try {
    origin.on('/graphql', (_req, res, body) => { res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' }); res.end(JSON.stringify({ echo: body.toString() })) })
    const post = async (q: string) => {
      const r = await request(g2.url + '/graphql', { method: 'POST', body: q, headers: { 'content-type': 'application/json' } })
      return { status: r.headers['cache-status'], body: await r.body.text() }
    }
    assert.equal((await post('{"query":"{ a }"}')).status, 'sluice; fwd=miss')
    const again = await post('{"query":"{ a }"}')
    assert.match(String(again.status), /^sluice; hit/)
    assert.equal(again.body, JSON.stringify({ echo: '{"query":"{ a }"}' }))
    const other = await post('{"query":"{ b }"}')
    assert.equal(other.status, 'sluice; fwd=miss')
    assert.equal(other.body, JSON.stringify({ echo: '{"query":"{ b }"}' }))
    assert.equal(origin.count('/graphql'), 2)
    const big = await post('x'.repeat(2000))
    assert.equal(big.status, 'sluice; fwd=bypass; detail=METHOD', 'over maxBodyBytes: passed through')
  } finally { await g2.close() }
})
