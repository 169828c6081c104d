// A purge that names many L2 entries against a real redis-server, through a client with the
// gateway's short command timeout: its deletes are bounded in flight, so none of them waits
// behind thousands of others past the timeout.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'

let redis: RedisHandle
before(async () => { redis = await startRedis() })
after(async () => { await redis.stop() })

const esc = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&')

for (const sel of [{ prefix: '/bulk/' }, { tag: 'bulk' }]) {
  test(`a purge by ${Object.keys(sel)[0]} of many entries completes within the command timeout of each command`, async () => {
    const prefix = `${redis.prefix}many-${Object.keys(sel)[0]}:`
    const c = redis.client()
    // As the gateway's client: short command timeout, no offline queue.
    const gw = new Redis(redis.url, { commandTimeout: 250, maxRetriesPerRequest: 0, enableOfflineQueue: false })
    gw.on('error', () => {})
    const errors: string[] = []
    const store = new RedisStore(gw, prefix, (op, err) => { errors.push(`${op}: ${err.message}`) })
    const n = sel.tag !== undefined ? 10_000 : 20_000 // a tag set holds at most 10,000 keys
    try {
      // The records (their content is never read for these paths) and the tag set, written directly.
      const keys: string[] = []
      for (let i = 0; i < n; i++) keys.push(`${prefix}{s${i % 997}}c:G|example.com|/bulk/${i}`)
      for (let i = 0; i < n; i += 5000) {
        const p = c.pipeline()
        for (const k of keys.slice(i, i + 5000)) p.set(k, 'x', 'PX', 600_000)
        if (sel.tag !== undefined) p.sadd(`${prefix}t:{bulk}`, ...keys.slice(i, i + 5000))
        await p.exec()
      }
      assert.equal(await store.purge(sel), n)
      assert.deepEqual(errors, [])
      assert.equal((await c.keys(esc(prefix) + '*')).filter((k) => !k.endsWith('purges')).length, 0)
    } finally {
      gw.disconnect()
      const left = await c.keys(esc(prefix) + '*')
      for (let i = 0; i < left.length; i += 5000) await c.del(...left.slice(i, i + 5000))
    }
  })
}
