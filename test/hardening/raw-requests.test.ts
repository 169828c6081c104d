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

/** How a raw exchange ended: the server closed (FIN) or reset the connection, or the test's own wait ran out. */
type Ending = 'server-closed' | 'server-reset' | 'test-timeout'

/** Writes `text`, collects the answer until the connection ends or `waitMs` pass without data; reports which of the two happened. */
function exchange (text: string, opts: { waitMs?: number } = {}): Promise<{ data: string; ending: Ending; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now()
    const s = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let settled = false
    const done = (ending: Ending) => {
      if (settled) return
      settled = true
      s.destroy()
      resolve({ data: Buffer.concat(chunks).toString('latin1'), ending, ms: Date.now() - t0 })
    }
    s.setTimeout(opts.waitMs ?? 3000, () => done('test-timeout'))
    s.on('data', (c) => chunks.push(c))
    s.on('end', () => done('server-closed'))
    s.on('close', () => done('server-closed'))
    s.on('error', () => done('server-reset'))
    s.on('connect', () => s.write(text))
  })
}

async function raw (text: string): Promise<string> {
  return (await exchange(text)).data
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

test('a client that never finishes its headers is cut off by the server (slowloris) with 408 or a close', async () => {
  // The gateway above runs with server.headersTimeoutMs: 500; the test waits up to 5 s. A pass needs
  // the SERVER to end the connection: the test's own timer running out ('test-timeout') fails.
  const before = origin.seen.length
  const r = await exchange('GET /slow HTTP/1.1\r\nHost: a\r\nX-Partial: ', { waitMs: 5000 })
  const seen = JSON.stringify({ ending: r.ending, ms: r.ms, data: r.data.slice(0, 200) })
  assert.notEqual(r.ending, 'test-timeout', `the server never cut the connection off: ${seen}`)
  if (r.data !== '') {
    assert.match(r.data, /^HTTP\/1\.1 408 /, seen)
    assert.match(r.data, /SLUICE_ERR_REQUEST_TIMEOUT/, seen)
  }
  assert.ok(r.ms < 4000, `cut off within headersTimeoutMs plus Node's check interval, not near the test's wait: ${seen}`)
  assert.equal(origin.seen.length, before)
})

test('an Upgrade that is not WebSocket is served as a plain request (RFC 9110 §7.8) without reaching the origin as one, and hop-by-hop headers never reach the origin', async () => {
  const before = origin.seen.length
  assert.match(await raw('GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n'), /^HTTP\/1\.1 200 [^]*\r\nConnection: close\r\n/)
  assert.equal(origin.seen.length, before + 1)
  assert.equal(origin.seen.at(-1)!.headers.upgrade, undefined, 'no Upgrade reaches the origin (no h2c smuggling)')
  const r = await raw('GET /hop HTTP/1.1\r\nHost: a\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\n\r\n')
  assert.match(r, /^HTTP\/1\.1 200 /)
  const seen = origin.seen.at(-1)!
  for (const h of ['x-drop', 'keep-alive', 'te', 'proxy-authorization']) assert.equal(seen.headers[h], undefined, h)
})
