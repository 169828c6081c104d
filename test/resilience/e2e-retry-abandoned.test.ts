// A client that leaves while a retry waits out its backoff gets no further attempt: the origin
// sees one request, GET or (opted-in) POST, instead of a retried write that nobody receives.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { setTimeout as delay } from 'node:timers/promises'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway } from '../helpers/gateway.js'

const origin = await startOrigin()
const g = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  main:
    url: ${origin.url}
    timeoutMs: 5000
    circuitBreaker: { enabled: false }
    retry: { attempts: 2, backoffMs: 10, maxBackoffMs: 2000, budgetMinRetries: 100 }
routes:
  - name: optin
    match: { pathPrefix: /optin/ }
    upstream: main
    retry: { nonIdempotent: true }
  - name: main
    match: { pathPrefix: / }
    upstream: main
`, { level: 'warn' })
after(async () => { await g.close(); await origin.close() })

/** The first answer is 503 with Retry-After: 1; the client leaves 300 ms into the backoff. Returns how many requests the origin saw. */
async function leaveDuringBackoff (path: string, method: 'GET' | 'POST', body?: string): Promise<number> {
  let n = 0
  origin.on(path, (_req, res) => {
    n++
    if (n === 1) { res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' }); res.end('busy'); return }
    res.writeHead(200)
    res.end('ok')
  })
  const ac = new AbortController()
  const p = request(g.url + path, { method, body, signal: ac.signal, headers: body !== undefined ? { 'content-type': 'text/plain' } : {} }).catch((e: Error) => e)
  await delay(300)
  assert.equal(n, 1, 'the first attempt was answered; the gateway waits out Retry-After')
  ac.abort()
  await p
  await delay(1500)
  return n
}

test('a client that leaves during a retry backoff gets no further attempt: GET', async () => {
  assert.equal(await leaveDuringBackoff('/gone-get', 'GET'), 1)
})

test('a client that leaves during a retry backoff gets no further attempt: an opted-in POST is not written again for nobody', async () => {
  assert.equal(await leaveDuringBackoff('/optin/gone-post', 'POST', 'payload'), 1)
})
