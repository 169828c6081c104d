// End to end: two Sluice processes (the real CLI, spawned) share one Redis server and one
// upstream budget of 10 requests/s with a burst of 5. Driven by concurrent load on both for
// about 5 s, the origin sees at most 10 × elapsed + 5 (+ a stated tolerance), both replicas are
// served, and every rejection is 429 SLUICE_ERR_UPSTREAM_BUDGET with Retry-After, RateLimit-Policy
// and RateLimit.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { tempConfig } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { cliCommand, startedUrls } from '../helpers/cli.js'
import { guardProcessHealth } from './helpers.js'
import { metric } from '../helpers/metrics.js'

guardProcessHealth()

const RATE = 10
const BURST = 5
const LOAD_MS = 5000
// Tolerance: the test's clock frames the load, the Redis server's clock (TIME) fills the bucket;
// one token (100 ms at 10/s) covers the gap between the two reads at each end.
const TOLERANCE = 1

const origin = await startOrigin()
const redis = await startRedis()

interface Proc { child: ChildProcess; out: string[]; url: string; adminUrl: string }
const procs: Proc[] = []

after(async () => {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      const exited = once(p.child, 'exit')
      p.child.kill('SIGKILL')
      await exited
    }
  }
  await origin.close()
  await redis.stop()
})

async function startSluice (): Promise<Proc> {
  // Port 0: the OS picks both ports; the "sluice started" line reports them.
  const { file } = tempConfig(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
redis: { url: "${redis.url}", keyPrefix: "${redis.prefix}" }
shutdownGraceMs: 2000
upstreams:
  api:
    url: "${origin.url}"
    timeoutMs: 3000
    rateLimit: { requestsPerSecond: ${RATE}, burst: ${BURST}, maxQueueMs: 0, expectedReplicas: 2 }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: api }
`)
  const [cmd, args] = cliCommand(['--config', file])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const p: Proc = { child, out: [], url: '', adminUrl: '' }
  procs.push(p)
  child.stdout!.on('data', (d) => p.out.push(String(d)))
  child.stderr!.on('data', (d) => p.out.push(String(d)))
  const end = Date.now() + 20000
  let urls = startedUrls(p.out)
  while (urls === null) {
    if (child.exitCode !== null) throw new Error('sluice exited: ' + p.out.join(''))
    if (Date.now() > end) throw new Error('sluice did not start: ' + p.out.join(''))
    await new Promise((resolve) => setTimeout(resolve, 50))
    urls = startedUrls(p.out)
  }
  Object.assign(p, urls)
  // Until its Redis connection is up a replica decides alone (its share): wait for "ready".
  for (let i = 0; ; i++) {
    const r = await request(p.adminUrl + '/readyz')
    const body = await r.body.json() as { degraded?: string[] }
    if (r.statusCode === 200 && (body.degraded ?? []).length === 0) break
    if (i > 200) throw new Error('not ready: ' + JSON.stringify(body))
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  return p
}

test('two Sluice processes on one Redis keep one upstream budget: origin ≤ 10/s × elapsed + burst', async (t) => {
  const [a, b] = await Promise.all([startSluice(), startSluice()])
  assert.equal(origin.seen.length, 0)

  const ok = [0, 0]
  const rejected: Array<{ headers: Record<string, unknown>; code: string }> = []
  const other: string[] = []
  const MAX_PER_WORKER = 600
  const started = Date.now()
  const end = started + LOAD_MS
  // 5 concurrent clients per process, bounded in count and time, each pausing 5 ms between requests.
  await Promise.all([a, b].flatMap((p, pi) => Array.from({ length: 5 }, async (_, w) => {
    for (let i = 0; i < MAX_PER_WORKER && Date.now() < end; i++) {
      try {
        const r = await request(p.url + `/item/${w}/${i}`)
        const text = await r.body.text()
        if (r.statusCode === 200) ok[pi]++
        else if (r.statusCode === 429) rejected.push({ headers: r.headers, code: JSON.parse(text).error })
        else other.push(`${r.statusCode} ${text}`)
      } catch (err) {
        other.push((err as Error).message)
      }
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })))
  const elapsedS = (Date.now() - started) / 1000
  const seen = origin.seen.length
  const bound = RATE * elapsedS + BURST + TOLERANCE
  t.diagnostic(`origin saw ${seen} in ${elapsedS.toFixed(2)} s (bound ${bound.toFixed(1)}); 200s per process ${ok}; 429s ${rejected.length}`)

  assert.deepEqual(other, [], 'only 200 and 429')
  assert.equal(seen, ok[0] + ok[1], 'every 200 is one origin request')
  assert.ok(seen <= bound, `origin saw ${seen}, more than ${RATE}/s × ${elapsedS.toFixed(2)} s + ${BURST} + ${TOLERANCE}`)
  // Not starved either: under saturating load the shared bucket is mostly used (two separate
  // buckets would have let through about twice as many).
  assert.ok(seen >= RATE * elapsedS * 0.7, `the budget was used: ${seen}`)
  assert.ok(ok[0] > 0 && ok[1] > 0, `both processes were served: ${ok}`)
  assert.ok(rejected.length > seen, 'the load exceeded the budget')

  for (const r of rejected) {
    assert.equal(r.code, 'SLUICE_ERR_UPSTREAM_BUDGET')
    const ra = String(r.headers['retry-after'])
    assert.match(ra, /^\d+$/)
    // The next token is at most 1/RATE s away: rounded up, 1 s.
    assert.equal(ra, '1')
    assert.equal(r.headers['ratelimit-policy'], `"upstream";q=${Math.max(BURST, RATE * Math.ceil(BURST / RATE))};w=${Math.ceil(BURST / RATE)}`)
    assert.equal(r.headers.ratelimit, `"upstream";r=0;t=${ra}`)
  }

  // Each process counted its own rejections; together they are the 429s the clients saw.
  const counted = await Promise.all([a, b].map((p) => metric(p.adminUrl, 'sluice_rate_limited_total', { scope: 'upstream', name: 'api' })))
  assert.equal(counted[0] + counted[1], rejected.length)
  for (const p of [a, b]) {
    const up = await (await request(p.adminUrl + '/admin/upstreams')).body.json() as { api: { limiter: { local: boolean } } }
    assert.equal(up.api.limiter.local, false, 'decided in Redis throughout')
    assert.equal(await metric(p.adminUrl, 'sluice_redis_errors_total'), 0, 'no Redis error under load')
  }

  // Both drain and exit 0 on SIGTERM, with no unhandled rejection logged.
  for (const p of [a, b]) {
    const exited = once(p.child, 'exit')
    p.child.kill('SIGTERM')
    const [code] = await exited
    assert.equal(code, 0, p.out.join('').slice(-2000))
    assert.doesNotMatch(p.out.join(''), /unhandled rejection|uncaught/i)
  }
})
