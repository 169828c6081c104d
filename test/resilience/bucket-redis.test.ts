import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { RedisBucketStore } from '../../src/resilience/bucket-redis.js'
import { startRedis } from '../helpers/redis.js'
import { bucketConformance } from './bucket-conformance.js'
import { guardProcessHealth } from './helpers.js'
import { until } from '../helpers/wait.js'

guardProcessHealth()
const redis = await startRedis()
const client = redis.client()
after(() => redis.stop())
const store = new RedisBucketStore(client, redis.prefix, 2000)
bucketConformance('redis', () => store)

test('redis: a bucket is one hash key with its name in a {hash tag}, and it expires', async () => {
  assert.equal(await store.take('tag-check', 10, 5, 0), 0)
  const key = `${redis.prefix}{tag-check}`
  assert.equal(await client.exists(key), 1)
  const ttl = await client.pttl(key)
  assert.ok(ttl > 0 && ttl <= 2000, `ttl ${ttl}`)
})

test('redis: a script flushed from the server is loaded again (EVALSHA falls back to EVAL)', async () => {
  await client.script('FLUSH')
  assert.equal(await store.take('after-flush', 10, 5, 0), 0)
})

test('redis: a bucket whose stored time is ahead of Redis\'s clock (a failover, an NTP step) refills from now instead of refusing until the clock catches up', async () => {
  const [s, us] = (await client.time()) as unknown as [string, string]
  const now = Number(s) * 1000 + Number(us) / 1000
  const key = `${redis.prefix}{ahead}`
  await client.hset(key, 'tk', '0', 'ts', String(now + 60_000)) // written by a server 60 s ahead
  await client.pexpire(key, 120_000)
  assert.ok(await store.take('ahead', 1000, 5, 0) < 0, 'empty: refused once')
  const ts = Number(await client.hget(key, 'ts'))
  assert.ok(ts < now + 60_000, 'the refusal moved the stored time back to Redis\'s clock')
  await until('a token refilled at 1000/s', async () => await store.take('ahead', 1000, 5, 0) >= 0, { tries: 40, intervalMs: 25 })
})
