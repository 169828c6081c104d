// Expect: 100-continue (curl sends it for bodies over 1 MiB): the 100 goes out only when the
// body is about to be forwarded, so a request refused by its route, its client limit or its
// size gets the refusal without uploading anything, and its connection closes after it.
// Raw sockets: what matters is which status lines arrive, and in what order.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { once } from 'node:events'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
before(async () => {
  const dead = createServer()
  dead.listen(0, '127.0.0.1')
  await once(dead, 'listening')
  const deadPort = (dead.address() as AddressInfo).port
  await new Promise((resolve) => dead.close(resolve))
  origin = await startOrigin()
  origin.on('/up', (_req, res, body) => { res.end('got ' + body.toString()) })
  origin.on('/limited/x', (_req, res, body) => { res.end('got ' + body.toString()) })
  gw = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
upstreams:
  origin: { url: "${origin.url}" }
  budgeted: { url: "${origin.url}", retry: { attempts: 1 }, rateLimit: { requestsPerSecond: 0.001, burst: 1, maxQueueMs: 0, adaptive: false } }
  broken:
    url: "http://127.0.0.1:${deadPort}"
    retry: { attempts: 1, backoffMs: 1 }
    circuitBreaker: { errorThresholdPercent: 1, volumeThreshold: 1, resetTimeoutMs: 600000 }
routes:
  - { name: small, match: { pathPrefix: /small/ }, upstream: origin, maxBodyBytes: 10 }
  - { name: limited, match: { pathPrefix: /limited/ }, upstream: origin, rateLimit: { perClient: { requestsPerSecond: 0.001, burst: 1, key: ip } } }
  - { name: up, match: { pathPrefix: /up }, upstream: origin }
  - { name: budgeted, match: { pathPrefix: /budgeted/ }, upstream: budgeted }
  - { name: broken, match: { pathPrefix: /broken/ }, upstream: broken }
`)
})
after(async () => { await gw.close(); await origin.close() })

/** Send a head with Expect: 100-continue; collect what comes back until `until` matches or the connection closes. */
async function exchange (head: string, body: string | null, until: RegExp): Promise<{ text: string; closed: boolean; s: Socket }> {
  const s = connect(Number(new URL(gw.url).port), '127.0.0.1')
  await once(s, 'connect')
  let text = ''
  let closed = false
  s.on('data', (d: Buffer) => {
    text += d.toString('latin1')
    // The body is sent only once 100 Continue arrived, as a client waiting for it does.
    if (body !== null && text.startsWith('HTTP/1.1 100 ')) { s.write(body); body = null }
  })
  s.on('close', () => { closed = true })
  s.write(head)
  while (!until.test(text) && !closed) await Promise.race([once(s, 'data'), once(s, 'close')])
  return { text, closed, s }
}

const post = (path: string, length: number) => `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\n\r\n`

test('a body larger than the route allows: 413 with no 100 Continue, then the connection closes', async () => {
  const r = await exchange(post('/small/x', 1000), 'x'.repeat(1000), /\r\n\r\n[\s\S]*\}/)
  assert.match(r.text, /^HTTP\/1\.1 413 /)
  assert.doesNotMatch(r.text, /100 Continue/)
  if (!r.closed) await once(r.s, 'close')
})

test('no route and a client over its limit: 404 and 429 with no 100 Continue', async () => {
  const nf = await exchange(post('/nowhere', 5), 'hello', /\r\n\r\n[\s\S]*\}/)
  assert.match(nf.text, /^HTTP\/1\.1 404 /)
  nf.s.destroy()
  const first = await exchange(post('/limited/x', 5), 'hello', /\r\n\r\n[\s\S]*hello/)
  assert.match(first.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /)
  first.s.destroy()
  const limited = await exchange(post('/limited/x', 5), 'hello', /\r\n\r\n[\s\S]*\}/)
  assert.match(limited.text, /^HTTP\/1\.1 429 /)
  assert.doesNotMatch(limited.text, /100 Continue/)
  limited.s.destroy()
})

test('an accepted request gets 100 Continue, sends its body, and the origin answers with it', async () => {
  const r = await exchange(post('/up', 5), 'hello', /got hello/)
  assert.match(r.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /)
  assert.match(r.text, /got hello$/)
  r.s.destroy()
})

const put = (path: string, length: number) => post(path, length).replace('POST', 'PUT')

test('a body kept for retries is read only once the upstream admits the request: a budget 429 or an open breaker 503 comes with no 100 Continue', async () => {
  const first = await exchange(put('/budgeted/x', 5), 'hello', /got hello/)
  assert.match(first.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /)
  first.s.destroy()
  const over = await exchange(put('/budgeted/x', 5), 'hello', /\r\n\r\n[\s\S]*\}/)
  assert.match(over.text, /^HTTP\/1\.1 429 /)
  assert.match(over.text, /SLUICE_ERR_UPSTREAM_BUDGET/)
  assert.doesNotMatch(over.text, /100 Continue/)
  over.s.destroy()
  // The first request to a dead upstream uploads (100), fails, and opens the breaker.
  const failing = await exchange(put('/broken/x', 5), 'hello', /\r\n\r\n[\s\S]*\}/)
  assert.match(failing.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 50[23] /) // its retry may meet the breaker it opened
  failing.s.destroy()
  const open = await exchange(put('/broken/x', 5), 'hello', /\r\n\r\n[\s\S]*\}/)
  assert.match(open.text, /^HTTP\/1\.1 503 /)
  assert.match(open.text, /SLUICE_ERR_CIRCUIT_OPEN/)
  assert.doesNotMatch(open.text, /100 Continue/)
  open.s.destroy()
})
