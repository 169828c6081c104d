// A Redis that answers PING but fails the limiters' take script (out of memory with
// noeviction): the limiters stay on their local buckets until a take works again, with one
// warning, instead of being declared back (by a PING) and down again every probe interval.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { RedisBucketStore } from '../../src/resilience/bucket-redis.js'
import { MemoryBucketStore } from '../../src/resilience/bucket-memory.js'
import { Limiter } from '../../src/resilience/limiter.js'
import { RedisHealth } from '../../src/resilience/redis-health.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'
import { captureLog, sleep } from './helpers.js'

const redis = await startRedis({ own: true }) // CONFIG SET below: never a shared server
const admin = redis.client()
after(() => redis.stop())

test('out of memory (noeviction): every take still answers, one "unavailable" warning, no flapping; back once Redis has memory again', async () => {
  const { log, lines } = captureLog()
  const c = redis.client()
  await c.ping()
  const store = new RedisBucketStore(c, redis.prefix + 'oom:', 250)
  const health = new RedisHealth(log, () => store.ping(), () => {}, 50)
  const lim = new Limiter('cl:r:', new MemoryBucketStore(), { store, health }, { requestsPerSecond: 1000, burst: 1000, expectedReplicas: 2 })
  try {
    await admin.config('SET', 'maxmemory-policy', 'noeviction')
    await admin.config('SET', 'maxmemory', '1')
    for (let i = 0; i < 30; i++) {
      const r = lim.take('k' + i, 0)
      assert.ok((typeof r === 'number' ? r : (await r).r) >= 0, 'answered from the local bucket')
      await sleep(20) // several probe intervals
    }
    assert.equal(health.status().ok, false, 'still down: the take script fails')
    assert.equal(lines.filter((l) => /unavailable/.test(String(l.msg))).length, 1, 'one warning, no flapping')
    assert.equal(lines.filter((l) => /answers again/.test(String(l.msg))).length, 0)
    await admin.config('SET', 'maxmemory', '0')
    await until('the limiters share Redis again', () => health.status().ok)
  } finally {
    await admin.config('SET', 'maxmemory', '0')
    health.close()
    c.disconnect()
  }
})
