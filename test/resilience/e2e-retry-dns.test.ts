// End to end: a DNS failure happens before any byte reaches the upstream, so an idempotent
// request is retried on it (retry.attempts times), and a POST is not.
// The upstream's host name never resolves and no query leaves the machine: it ends in .invalid
// (RFC 6761: never resolves) and its first label is longer than DNS allows (63 bytes), so the
// system resolver refuses it before building a query. A plain "nope.invalid" would still be
// sent to the configured name server, which need not be on loopback.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startTestGateway } from '../helpers/gateway.js'
import { guardProcessHealth } from './helpers.js'

guardProcessHealth()

const LABEL = 'nope-' + 'x'.repeat(70)
const HOST = `${LABEL}.invalid`
assert.ok(LABEL.length > 63, 'a label over 63 bytes: refused by the resolver without a query')

const g = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  ghost:
    url: http://${HOST}:1
    timeoutMs: 3000
    connectTimeoutMs: 1000
    circuitBreaker: { enabled: false }
    retry: { attempts: 2, backoffMs: 1, maxBackoffMs: 5 }
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: ghost
`, { level: 'warn' })

after(async () => { await g.close() })

async function metric (name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await request(g.adminUrl + '/metrics')).body.text()
  let sum = 0
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const ls = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) sum += Number(m[3])
  }
  return sum
}

const retries = () => metric('sluice_upstream_retries_total', { upstream: 'ghost' })

async function send (path: string, method: 'GET' | 'POST', body?: string) {
  const r = await request(g.url + path, { method, body, headers: body === undefined ? {} : { 'content-type': 'text/plain' } })
  const text = await r.body.text()
  return { status: r.statusCode, code: (JSON.parse(text) as { error: string }).error }
}

test('a GET to an upstream whose name does not resolve is retried attempts times, then 502 SLUICE_ERR_UPSTREAM_DNS', async () => {
  const before = await retries()
  const r = await send('/a', 'GET')
  assert.equal(r.status, 502)
  assert.equal(r.code, 'SLUICE_ERR_UPSTREAM_DNS')
  assert.equal(await retries() - before, 2, 'retry.attempts (2) retries counted')
})

test('a POST to that upstream is not retried', async () => {
  const before = await retries()
  const r = await send('/b', 'POST', 'payload')
  assert.equal(r.status, 502)
  assert.equal(r.code, 'SLUICE_ERR_UPSTREAM_DNS')
  assert.equal(await retries() - before, 0, 'no retry for a non-idempotent method')
})
