// Hand-written requests over raw sockets: framing, limits and headers, asserting both the
// status and what the origin received.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
let port: number
before(async () => {
  origin = await startOrigin()
  origin.on('*', (req, res, body) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(`${req.method} ${req.url} ${body.length} ${req.headers['content-length'] ?? '-'} ${req.headers['transfer-encoding'] ?? '-'}`) })
  gw = await startTestGateway(simpleConfig(origin.url).replace('log: {', 'server: { maxHeadersCount: 20, headersTimeoutMs: 500, requestTimeoutMs: 1000 }\nlog: {'))
  port = Number(new URL(gw.url).port)
})
after(async () => { await gw.close(); await origin.close() })

function raw (text: string, opts: { keepOpen?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const done = () => { s.destroy(); resolve(Buffer.concat(chunks).toString('latin1')) }
    s.setTimeout(opts.keepOpen ?? 3000, done)
    s.on('data', (c) => chunks.push(c))
    s.on('end', done)
    s.on('error', done)
    s.on('connect', () => s.write(text))
  })
}

async function rejectedWithoutReachingOrigin (text: string, status: RegExp): Promise<void> {
  const before = origin.seen.length
  const r = await raw(text)
  assert.match(r, status, JSON.stringify(r.slice(0, 120)))
  assert.equal(origin.seen.length, before, 'the origin received nothing')
}

test('Content-Length together with Transfer-Encoding is refused (CL.TE / TE.CL smuggling)', async () => {
  await rejectedWithoutReachingOrigin('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n', /^HTTP\/1\.1 400 /)
  assert.equal(origin.seen.filter((r) => r.url === '/smuggled').length, 0)
})

test('duplicate or invalid Content-Length is refused', async () => {
  await rejectedWithoutReachingOrigin('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd', /^HTTP\/1\.1 400 /)
  await rejectedWithoutReachingOrigin('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n', /^HTTP\/1\.1 400 /)
  await rejectedWithoutReachingOrigin('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n', /^HTTP\/1\.1 400 /)
})

test('obfuscated Transfer-Encoding (TE.TE) and invalid chunk sizes are refused', async () => {
  await rejectedWithoutReachingOrigin('POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n', /^HTTP\/1\.1 400 /)
  const before = origin.seen.length
  const r = await raw('POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n')
  assert.doesNotMatch(r, /^HTTP\/1\.1 200 /, 'never a complete 200 for a broken chunked body')
  assert.ok(origin.seen.slice(before).every((s) => s.body.length === 0 || s.body.toString() !== 'hello'))
})

test('obs-fold (a header continued on the next line) is refused', async () => {
  await rejectedWithoutReachingOrigin('GET /x HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n', /^HTTP\/1\.1 400 /)
})

test('a clean chunked body reaches the origin with one, clean framing', async () => {
  const r = await raw('POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n')
  assert.match(r, /^HTTP\/1\.1 200 /)
  const seen = origin.seen.at(-1)!
  assert.equal(seen.url, '/chunked')
  assert.equal(seen.body.toString(), 'hello')
  assert.ok(!(seen.headers['content-length'] !== undefined && seen.headers['transfer-encoding'] !== undefined), 'never both framings upstream')
})

test('too many header lines get 431', async () => {
  const many = Array.from({ length: 30 }, (_, i) => `X-H${i}: v`).join('\r\n')
  await rejectedWithoutReachingOrigin(`GET /x HTTP/1.1\r\nHost: a\r\n${many}\r\nConnection: close\r\n\r\n`, /^HTTP\/1\.1 431 /)
})

test('a client that never finishes its headers is cut off (slowloris) with 408 or a close', async () => {
  const before = origin.seen.length
  const r = await raw('GET /slow HTTP/1.1\r\nHost: a\r\nX-Partial: ', { keepOpen: 5000 })
  assert.ok(r === '' || /^HTTP\/1\.1 408 /.test(r), JSON.stringify(r.slice(0, 80)))
  assert.equal(origin.seen.length, before)
})

test('an Upgrade that is not WebSocket is refused, and hop-by-hop headers never reach the origin', async () => {
  await rejectedWithoutReachingOrigin('GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n', /^HTTP\/1\.1 400 /)
  const r = await raw('GET /hop HTTP/1.1\r\nHost: a\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\n\r\n')
  assert.match(r, /^HTTP\/1\.1 200 /)
  const seen = origin.seen.at(-1)!
  for (const h of ['x-drop', 'keep-alive', 'te', 'proxy-authorization']) assert.equal(seen.headers[h], undefined, h)
})
