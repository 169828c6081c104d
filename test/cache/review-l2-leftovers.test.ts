// Leftovers of the L2 and purge-bus review, against real redis-servers: a tag purge that fails
// partway can be retried; the purge-log catch-up after a resubscribe retries a failed read (and
// drops L1 when the loss outlasted the log); purge messages do not cross Redis databases.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { request } from 'undici'
import { Redis } from 'ioredis'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const esc = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&')

async function get (base: string, path: string) {
  const r = await request(base + path)
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

async function purge (adminUrl: string, sel: object): Promise<void> {
  const r = await request(`${adminUrl}/admin/purge`, { method: 'POST', body: JSON.stringify(sel), headers: { 'content-type': 'application/json' } })
  assert.equal(r.statusCode, 200)
  await r.body.dump()
}

test('a purge by tag that fails partway through its deletes deletes the rest when it is retried', async () => {
  const redis = await startRedis({ own: true })
  const c = redis.client()
  const prefix = redis.prefix
  // A user that may DEL the tag set and the /part/a* entries, but not the /part/b* ones: the
  // purge fails after some of its deletes, as one whose connection drops or times out would.
  await c.call('ACL', 'SETUSER', 'purger', 'on', '>pw', '~*', '&*', '+@all', '-del', `(+del ~${prefix}t:* ~${prefix}*|/part/a*)`)
  const gw = new Redis(redis.url, { username: 'purger', password: 'pw', maxRetriesPerRequest: 0, commandTimeout: 2000 })
  gw.on('error', () => {})
  const errors: string[] = []
  const store = new RedisStore(gw, prefix, (op, err) => { errors.push(`${op}: ${err.message}`) })
  try {
    const keys: string[] = []
    for (let i = 0; i < 300; i++) keys.push(`${prefix}{s${i}}c:G|example.com|/part/${i % 2 === 0 ? 'a' : 'b'}${i}`)
    const p = c.pipeline()
    for (const k of keys) p.set(k, 'x', 'PX', 600_000)
    p.sadd(`${prefix}t:{part}`, ...keys)
    await p.exec()
    await assert.rejects(store.purge({ tag: 'part' }), /NOPERM|permission/i)
    assert.ok(errors.length > 0, 'the failure is reported')
    assert.ok((await c.exists(...keys)) > 0, 'precondition: some entries survived the failed purge')
    // The cause goes away (Redis is reachable again); the operator retries.
    await c.call('ACL', 'SETUSER', 'purger', '+del')
    await store.purge({ tag: 'part' })
    assert.equal(await c.exists(...keys), 0, 'the retry deleted every entry the tag names')
    assert.equal(await c.exists(`${prefix}t:{part}`), 0, 'and the tag set, now empty')
  } finally {
    gw.disconnect()
    await redis.stop()
  }
})

test('gateways on different databases of one Redis server do not purge each other\'s L1 (channels are per database)', async () => {
  const redis = await startRedis({ own: true })
  const db2 = new Redis(redis.url + '/2')
  db2.on('error', () => {})
  const cfg = (db: number) => redisCacheYaml(origin.url, `${redis.url}/${db}`, redis.prefix)
  const a = await startTestGateway(cfg(1))
  const b = await startTestGateway(cfg(2))
  const c = await startTestGateway(cfg(2))
  try {
    const version: Record<string, string> = { '/db-iso': 'v1', '/db-marker': 'm1' }
    for (const path of Object.keys(version)) {
      origin.on(path, (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end(version[path]) })
      assert.equal((await get(b.url, path)).body, version[path])
    }
    assert.equal((await get(a.url, '/db-iso')).body, 'v1')
    // B's L2 copy of /db-iso goes (only its L1 holds it now), once its background write landed.
    await until('B\'s L2 write', async () => (await db2.keys(`${esc(redis.prefix)}*c:*|/db-iso*`)).length > 0)
    await db2.del(...await db2.keys(`${esc(redis.prefix)}*c:*|/db-iso*`))
    version['/db-iso'] = 'v2'
    version['/db-marker'] = 'm2'
    // A purges on database 1; then C on database 2, whose message B must get (and after A's).
    await purge(a.adminUrl, { key: '/db-iso' })
    await purge(c.adminUrl, { key: '/db-marker' })
    await until('B to hear C\'s purge', async () => (await get(b.url, '/db-marker')).body === 'm2', { tries: 200, intervalMs: 25 })
    assert.equal((await get(b.url, '/db-iso')).body, 'v1', 'A\'s purge on another database left B\'s L1 alone')
    assert.equal((await get(a.url, '/db-iso')).body, 'v2', 'and purged A\'s own')
  } finally {
    await c.close(); await b.close(); await a.close(); db2.disconnect(); await redis.stop()
  }
})
