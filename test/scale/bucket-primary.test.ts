// The primary-held bucket store (workers without Redis) passes the same conformance suite as the
// memory and Redis stores. The "primary" is a real forked process answering over its IPC channel.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { IpcBucketStore } from '../../src/cluster/ipc-buckets.js'
import { bucketConformance } from '../resilience/bucket-conformance.js'

const here = dirname(fileURLToPath(import.meta.url))
const compiled = import.meta.url.endsWith('.js')
const child = fork(join(here, 'fixtures', compiled ? 'bucket-primary.js' : 'bucket-primary.ts'), [], {
  execArgv: compiled ? [] : ['--import', 'tsx'],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc']
})
const [hello] = await once(child, 'message')
assert.equal(hello, 'ready')
after(() => { if (child.exitCode === null) child.kill('SIGKILL') })

// A generous timeout: the suite asserts decisions, and a slow CI box must not turn them into fallbacks.
const store = new IpcBucketStore(child, 2000)
bucketConformance('primary', () => store)

test('primary: two stores (two workers) on one primary share its bucket; another primary keeps its own', async () => {
  const second = fork(join(here, 'fixtures', compiled ? 'bucket-primary.js' : 'bucket-primary.ts'), [], {
    execArgv: compiled ? [] : ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  try {
    await once(second, 'message')
    // Each child holds its own store, so the same key on two children is two buckets: this is
    // the control. Two IpcBucketStores on one channel are two workers on one primary.
    const a = new IpcBucketStore(child, 2000)
    const b = new IpcBucketStore(child, 2000)
    const other = new IpcBucketStore(second, 2000)
    const k = `shared-${Math.random()}`
    const got = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).take(k, 0.01, 6, 0)))
    assert.equal(got.filter((r) => r >= 0).length, 6, 'one bucket for both')
    assert.equal(await other.take(k, 0.01, 6, 0), 0, 'another primary has its own bucket')
    a.close(); b.close(); other.close()
  } finally {
    second.kill('SIGKILL')
    await once(second, 'exit').catch(() => {})
  }
})

test('primary: when the primary is gone a take rejects at once (the limiter then uses its local bucket)', async () => {
  const s = new IpcBucketStore(child, 2000)
  child.kill('SIGKILL')
  await once(child, 'exit')
  assert.equal(s.lost, true)
  await assert.rejects(s.take('after-exit', 1, 1, 0), /primary/)
  s.close()
  store.close()
})
