// Request IDs end to end (src/request-id.ts): kept when sane and trusted, made otherwise, sent
// upstream and back, in the access line, in error bodies, and never one client's ID replayed
// to another from the cache.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

let origin: Origin
let gw: TestGateway

before(async () => {
  origin = await startOrigin()
  // The origin echoes the ID it received, as many services do.
  origin.on('*', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2', 'x-request-id': String(req.headers['x-request-id']) })
    res.end('ok')
  })
  origin.on('/cached', (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'x-request-id': String(req.headers['x-request-id']) })
    res.end('cached')
  })
  gw = await startTestGateway(simpleConfig(origin.url).replace('routes:\n', `routes:
  - name: cached
    match: { pathPrefix: /cached }
    upstream: origin
    cache: { enabled: true }
`))
})
after(async () => { await gw.close(); await origin.close() })

async function get (path: string, headers: Record<string, string> = {}, base = gw.url) {
  const r = await request(base + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

const accessLine = (g: TestGateway, id: string) => g.logs.find((l) => l.msg === 'request' && l.reqId === id)

test('a request without an ID gets one: sent upstream, returned, and in the access line', async () => {
  const r = await get('/a')
  const id = String(r.headers['x-request-id'])
  assert.match(id, /^[\x21-\x7e]{1,128}$/)
  assert.equal(origin.seen.at(-1)!.headers['x-request-id'], id, 'the upstream got the same ID')
  await until('the access line names the ID', () => accessLine(gw, id) !== undefined)
  assert.equal(accessLine(gw, id)!.bytes, 2, 'a streamed answer logs its Content-Length')
  const second = await get('/a')
  assert.notEqual(second.headers['x-request-id'], id, 'each request its own')
})

test('a sane client ID is kept end to end; an insane one is replaced', async () => {
  const mine = 'client-' + 'x'.repeat(100)
  const r = await get('/b', { 'x-request-id': mine })
  assert.equal(r.headers['x-request-id'], mine)
  assert.equal(origin.seen.at(-1)!.headers['x-request-id'], mine)
  for (const bad of ['has space', 'y'.repeat(129), 'caf\u00e9']) {
    const b = await get('/b', { 'x-request-id': bad })
    assert.notEqual(b.headers['x-request-id'], bad, JSON.stringify(bad))
    assert.match(String(b.headers['x-request-id']), /^[\x21-\x7e]{1,128}$/)
    assert.equal(origin.seen.at(-1)!.headers['x-request-id'], b.headers['x-request-id'], 'the upstream got the replacement')
  }
})

test('error bodies and error responses carry the ID', async () => {
  const g2 = await startTestGateway(simpleConfig(origin.url).replace('match: { pathPrefix: / }', 'match: { pathPrefix: /only }'))
  try {
    const r = await get('/elsewhere', { 'x-request-id': 'err-1' }, g2.url)
    assert.equal(r.status, 404)
    assert.equal(r.headers['x-request-id'], 'err-1')
    assert.deepEqual(JSON.parse(r.body).requestId, 'err-1')
    await until('the access line of the error names the ID', () => accessLine(g2, 'err-1') !== undefined)
  } finally { await g2.close() }
})

test('cache hits (fast path included) get their own ID, never the one stored with the response', async () => {
  const first = await get('/cached', { 'x-request-id': 'first-client' })
  assert.equal(first.headers['x-request-id'], 'first-client')
  const hit = await get('/cached', { 'x-request-id': 'second-client' })
  assert.match(String(hit.headers['cache-status']), /hit/)
  assert.equal(hit.headers['x-request-id'], 'second-client', 'the stored echo of the first ID is not replayed')
  const anon = await get('/cached')
  assert.match(String(anon.headers['cache-status']), /hit/)
  assert.notEqual(anon.headers['x-request-id'], 'first-client')
  assert.match(String(anon.headers['x-request-id']), /^[\x21-\x7e]{1,128}$/)
  assert.equal(origin.count('/cached'), 1)
  await until('hits are in the access log with their IDs', () => accessLine(gw, 'second-client')?.cache === 'hit')
})

test('requestId.header renames the header; trustIncoming: false always makes a new ID', async () => {
  const g2 = await startTestGateway(simpleConfig(origin.url).replace('log: {', 'requestId: { header: X-Correlation-Id, trustIncoming: false }\nlog: {'))
  try {
    const r = await get('/c', { 'x-correlation-id': 'from-client' }, g2.url)
    const id = String(r.headers['x-correlation-id'])
    assert.notEqual(id, 'from-client')
    assert.match(id, /^[\x21-\x7e]{1,128}$/)
    assert.equal(origin.seen.at(-1)!.headers['x-correlation-id'], id)
  } finally { await g2.close() }
})
