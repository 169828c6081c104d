// A drain whose grace period ends while answers are still coming, and a client that leaves
// before its answer is ready: every request gets exactly one access line that says what
// happened (503 SLUICE_ERR_SHUTTING_DOWN when the drain cut it, SLUICE_ERR_CLIENT_CLOSED when
// the client left), no 'internal error', and nothing half-finished is stored.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request, Agent } from 'undici'
import { startTestGateway } from '../helpers/gateway.js'
import { startOrigin } from '../helpers/origin.js'
import { until } from '../helpers/wait.js'

function yaml (url: string, cache: boolean): string {
  return `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: true }
upstreams:
  api: { url: "${url}", timeoutMs: 60000 }
routes:
  - name: c
    upstream: api
    cache: { enabled: ${cache}, coalesceTimeoutMs: 60000 }
`
}

type Gw = Awaited<ReturnType<typeof startTestGateway>>
const accessLines = (g: Gw) => g.logs.filter((l) => l.msg === 'request')
const entries = (g: Gw) => (g.gw.cache.stats() as { memory: { entries: number } }).memory.entries

/** The gateway's open client connections. */
function connections (g: Gw): Promise<number> {
  const server = (g.gw as unknown as { proxy: { server: { getConnections (cb: (e: Error | null, n: number) => void): void } } }).proxy.server
  return new Promise((resolve) => server.getConnections((_e, c) => resolve(c)))
}

/** Wait until `n` client connections are open, then let their requests reach the cache's join. */
async function connected (g: Gw, n: number): Promise<void> {
  await until(`${n} client connections`, async () => await connections(g) >= n)
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setTimeout(resolve, 100))
}

test('a coalesced miss the origin never answers, cut by the end of the drain: every client logged once as 503 SLUICE_ERR_SHUTTING_DOWN, nothing stored', async () => {
  const o = await startOrigin()
  o.on('*', () => { /* never answers */ })
  const g = await startTestGateway(yaml(o.url, true))
  const agent = new Agent({ connections: 10 })
  try {
    const ps = [0, 1, 2].map(() => request(g.url + '/k', { dispatcher: agent }).then(async (r) => { await r.body.text(); return r.statusCode }, () => 'cut'))
    await until('the origin has the fill', () => o.seen.length >= 1)
    await connected(g, 3)
    assert.equal(o.seen.length, 1, 'one request reached the origin')
    await g.gw.close(100)
    await Promise.all(ps)
    await until('three access lines', () => accessLines(g).length >= 3, { detail: () => g.logs.map((l) => l.msg) })
    const lines = accessLines(g)
    assert.equal(lines.length, 3, 'one access line per client')
    for (const l of lines) {
      assert.equal(l.status, 503)
      assert.equal(l.err, 'SLUICE_ERR_SHUTTING_DOWN')
    }
    assert.equal(g.logs.some((l) => l.msg === 'internal error'), false, 'no internal error')
    assert.equal(entries(g), 0)
  } finally {
    await g.close()
    await agent.close()
    await o.close()
  }
})

test('a streamed answer cut by the end of the drain (an SSE stream, a fill half sent) is logged once as SLUICE_ERR_SHUTTING_DOWN, not as an upstream reset; nothing stored', async () => {
  const o = await startOrigin()
  o.on('/sse', (_q, res) => { res.writeHead(200, { 'content-type': 'text/event-stream' }); res.write('data: one\n\n') })
  o.on('/fill', (_q, res) => { res.writeHead(200, { 'content-length': '100', 'cache-control': 'max-age=60' }); res.write('x'.repeat(10)) })
  const g = await startTestGateway(yaml(o.url, true))
  const agent = new Agent({ connections: 10 })
  try {
    // The second /fill waits for the first one's fill: it has no answer yet when the drain ends.
    const read = (path: string) => request(g.url + path, { dispatcher: agent }).then(async (r) => { try { await r.body.text() } catch {} return r.statusCode }, () => 'cut')
    const ps = [read('/sse'), read('/fill'), read('/fill')]
    await until('the origin has both', () => o.seen.length >= 2)
    await connected(g, 3)
    await g.gw.close(100)
    assert.deepEqual((await Promise.all(ps)).sort(), [200, 200, 'cut'])
    await until('three access lines', () => accessLines(g).length >= 3, { detail: () => g.logs.map((l) => l.msg) })
    const lines = accessLines(g)
    assert.equal(lines.length, 3, 'one access line per client')
    for (const l of lines) assert.equal(l.err, 'SLUICE_ERR_SHUTTING_DOWN', JSON.stringify(l))
    assert.deepEqual(lines.map((l) => l.status).sort(), [200, 200, 503])
    assert.equal(g.logs.some((l) => l.msg === 'internal error' || l.msg === 'upstream error'), false)
    assert.equal(g.logs.some((l) => String(l.msg).startsWith('response body failed')), false, 'no upstream-failure warning')
    assert.equal(entries(g), 0)
  } finally {
    await g.close()
    await agent.close()
    await o.close()
  }
})

test('a client that leaves before its fill is answered is logged once (499 SLUICE_ERR_CLIENT_CLOSED), and the fill is still stored for the next client', async () => {
  const o = await startOrigin()
  let answer: (() => void) | null = null
  o.on('*', (_q, res) => { answer = () => { res.writeHead(200, { 'content-length': '2', 'cache-control': 'max-age=60' }); res.end('ok') } })
  const g = await startTestGateway(yaml(o.url, true))
  try {
    const ac = new AbortController()
    const p = request(g.url + '/k', { signal: ac.signal }).then((r) => r.statusCode, () => 'aborted')
    await until('the origin has the fill', () => answer !== null)
    await connected(g, 1)
    ac.abort()
    assert.equal(await p, 'aborted')
    await until('the client connection is gone', async () => await connections(g) === 0)
    ;(answer as unknown as () => void)()
    await until('stored', () => entries(g) === 1)
    await until('an access line', () => accessLines(g).length >= 1)
    const lines = accessLines(g)
    assert.equal(lines.length, 1)
    assert.equal(lines[0].status, 499)
    assert.equal(lines[0].err, 'SLUICE_ERR_CLIENT_CLOSED')
    const next = await request(g.url + '/k')
    assert.equal(await next.body.text(), 'ok')
    assert.match(String(next.headers['cache-status']), /hit/)
    assert.equal(o.seen.length, 1)
  } finally {
    await g.close()
    await o.close()
  }
})

test('a client that leaves in the middle of a streamed answer: its access line keeps the status sent and says SLUICE_ERR_CLIENT_CLOSED', async () => {
  const o = await startOrigin()
  o.on('/sse', (_q, res) => { res.writeHead(200, { 'content-type': 'text/event-stream' }); res.write('data: one\n\n') })
  const g = await startTestGateway(yaml(o.url, false))
  try {
    const ac = new AbortController()
    const r = await request(g.url + '/sse', { signal: ac.signal })
    assert.equal(r.statusCode, 200)
    ac.abort()
    await r.body.text().catch(() => {})
    await until('an access line', () => accessLines(g).length >= 1)
    const l = accessLines(g)[0]
    assert.equal(l.status, 200)
    assert.equal(l.err, 'SLUICE_ERR_CLIENT_CLOSED')
  } finally {
    await g.close()
    await o.close()
  }
})
