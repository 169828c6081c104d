// A purge by tag of a tag with more L2 entries than its tag set holds: the set keeps at most
// maxTagMembers keys (10,000; lowered here through the store's option so a few entries overflow
// it), and the entries it no longer lists must not stay servable from L2 after the purge, by
// any replica: the purger, one that hears the purge on the bus, or one started after it.
// Real gateways, a real origin on loopback and a real redis-server.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import { baseKey } from '../../src/httpcache/key.js'
import { entry } from './store-suite.js'

let origin: Origin
let redis: RedisHandle
before(async () => { origin = await startOrigin(); redis = await startRedis() })
after(async () => { await origin.close(); await redis.stop() })

const KEY = { sortQuery: false, ignoreParams: [], headers: [] }
const fail = (op: string, err: Error) => { throw new Error(`${op}: ${err.message}`) }

async function get (base: string, path: string) {
  const r = await request(base + path, { headers: { host: 'shop.example' } })
  return { status: r.statusCode, body: await r.body.text() }
}
async function purge (adminUrl: string, sel: object): Promise<void> {
  const r = await request(`${adminUrl}/admin/purge`, { method: 'POST', body: JSON.stringify(sel), headers: { 'content-type': 'application/json' } })
  assert.equal(r.statusCode, 200, await r.body.text())
}

/** `n` entries of `/<dir>/<i>` tagged `tag`, stored in L2 by a replica whose tag sets hold `cap` keys. */
async function overflow (prefix: string, dir: string, tag: string, n: number, cap: number): Promise<void> {
  const c = redis.client()
  const writer = new RedisStore(c, prefix, fail, () => true, { maxTagMembers: cap })
  for (let i = 0; i < n; i++) {
    const path = `/${dir}/${i}`
    const base = baseKey('GET', 'shop.example', path, {}, KEY)
    await writer.set(entry(path, { key: base, base, body: Buffer.from('old'), headers: { 'content-type': 'text/plain' }, lifetimeMs: 600_000, tags: [tag] }), 600_000)
  }
  assert.equal(await c.scard(`${prefix}t:{${tag}}`), cap, 'the tag set is full: it lists only some of the entries')
}

test('a purge by a tag with more entries than its tag set holds leaves none servable from L2, on any replica', async () => {
  const prefix = `${redis.prefix}cap:`
  let version = 'old'
  origin.on('*', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain', 'cache-tag': 'product-list' }); res.end(version) })
  const a = await startTestGateway(redisCacheYaml(origin.url, redis.url, prefix))
  const b = await startTestGateway(redisCacheYaml(origin.url, redis.url, prefix))
  let d: Awaited<ReturnType<typeof startTestGateway>> | null = null
  try {
    const n = 30
    await overflow(prefix, 'pl', 'product-list', n, 4)
    // B's L1 holds one entry with the tag (its fill is listed in the set): once it is gone, B has
    // heard the purge. B's L1 holds none of the /pl/ entries.
    assert.equal((await get(b.url, '/marker')).body, 'old')
    const s = await startTestGateway(redisCacheYaml(origin.url, redis.url, prefix))
    try {
      assert.equal((await get(s.url, '/pl/0')).body, 'old', 'before the purge, the entries are served from L2')
    } finally { await s.close() }

    version = 'new'
    await purge(a.adminUrl, { tag: 'product-list' })
    await until('B to hear the purge', async () => (await get(b.url, '/marker')).body === 'new')
    d = await startTestGateway(redisCacheYaml(origin.url, redis.url, prefix))

    // The purger, a replica that heard it on the bus, and one started after it: each reads its
    // own third of the entries (none in its L1), so each finds the unlisted ones in L2.
    const old: string[] = []
    for (let i = 0; i < n; i++) {
      const gw = [a, b, d][i % 3]
      if ((await get(gw.url, `/pl/${i}`)).body !== 'new') old.push(`/pl/${i} via ${['A', 'B', 'D'][i % 3]}`)
    }
    assert.deepEqual(old, [], 'no entry the purge named is served')
  } finally {
    await a.close(); await b.close(); await d?.close()
  }
})

test('after a purge by tag, an entry with that tag whose fill began later is still served from L2', async () => {
  const prefix = `${redis.prefix}later:`
  const c = redis.client()
  const store = new RedisStore(c, prefix, fail, () => true, { maxTagMembers: 2 })
  const other = new RedisStore(c, prefix, fail)
  const e = (path: string, over = {}) => entry(path, { body: Buffer.from(path), tags: ['t'], lifetimeMs: 600_000, ...over })
  for (let i = 0; i < 5; i++) await store.set(e(`/x/${i}`), 600_000)
  await store.purge({ tag: 't' })
  for (let i = 0; i < 5; i++) {
    assert.equal(await store.get(`G|example.com|/x/${i}`), undefined, `/x/${i}, via the purger`)
    assert.equal(await other.get(`G|example.com|/x/${i}`), undefined, `/x/${i}, via a store made after the purge`)
  }
  assert.equal((await c.keys(`${prefix}{*}c:*`)).length, 0, 'the records the tag set no longer listed are deleted when read')
  // A fill that began more than the clock-skew margin after the purge is not taken for purged.
  await store.set(e('/x/new', { requestTime: Date.now() + 5000 }), 600_000)
  assert.equal((await other.get('G|example.com|/x/new'))?.body.toString(), '/x/new')
  assert.equal((await store.get('G|example.com|/x/new'))?.body.toString(), '/x/new')
})
