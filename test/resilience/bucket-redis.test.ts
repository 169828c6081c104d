import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { RedisBucketStore } from '../../src/resilience/bucket-redis.js'
import { startRedis } from '../helpers/redis.js'
import { bucketConformance } from './bucket-conformance.js'
import { guardProcessHealth } from './helpers.js'

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
