// A fast-path HTTP/1.1 hit writes its response head as one string (writeStoredHead in
// src/send.ts) instead of through Node's writeHead. These tests read the bytes on the wire, so
// they also check that the Node fields it relies on still mean what they did: one Date, the
// keep-alive fields Node would send, the connection reused, and every case Node decides
// differently (Connection: close, HTTP/1.0, a request limit per connection, HEAD) answered as
// Node answers it.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, cachedConfig, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
const gateways: TestGateway[] = []
before(async () => {
  origin = await startOrigin()
  origin.on('/dated', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' }); res.end('dated body') })
  origin.on('/undated', (_req, res) => { res.sendDate = false; res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('undated') })
  // Streamed (not cached: simpleConfig's route has no cache) with and without a length.
  origin.on('/pass/length', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11', 'x-origin': 'a\u00ffb' }); res.end('pass-length') })
  origin.on('/pass/chunked', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.write('part one,'); setTimeout(() => res.end('part two'), 20) })
  origin.on('/pass/undated', (_req, res) => { res.sendDate = false; res.writeHead(201, { 'content-length': '7' }); res.end('created') })
  origin.on('/pass/empty', (_req, res) => { res.writeHead(204); res.end() })
})
after(async () => { for (const g of gateways) await g.close(); await origin.close() })

async function gateway (extra = '', config = cachedConfig): Promise<{ port: number }> {
  const g = await startTestGateway(config(origin.url) + extra)
  gateways.push(g)
  return { port: Number(new URL(g.url).port) }
}

/** Send raw requests on one connection; resolve with everything read once `until` holds or the socket closes. */
function raw (port: number, requests: string[], until: (text: string) => boolean): Promise<{ text: string, closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let text = ''
    let done = false
    const finish = (closed: boolean): void => { if (!done) { done = true; s.destroy(); resolve({ text, closed }) } }
    s.on('data', (d) => { text += d.toString('latin1'); if (until(text)) setTimeout(() => finish(false), 50) })
    s.on('end', () => finish(true))
    s.on('close', () => finish(true))
    s.on('error', reject)
    s.write(requests.join(''))
  })
}
const get = (path: string, more = '', version = '1.1', method = 'GET'): string => `${method} ${path} HTTP/${version}\r\nHost: shop.example\r\n${more}\r\n`
const heads = (text: string): string[] => text.split(/(?=HTTP\/1\.[01] )/).map((r) => r.slice(0, r.indexOf('\r\n\r\n')))
const count = (head: string, name: string): number => head.split('\r\n').filter((l) => l.toLowerCase().startsWith(name.toLowerCase() + ':')).length

test('a fast-path hit: one Date (the stored one), Connection: keep-alive and Keep-Alive, and the connection is reused', async () => {
  const { port } = await gateway()
  const first = await raw(port, [get('/dated')], (t) => t.includes('dated body'))
  assert.match(heads(first.text)[0], /cache-status: sluice; fwd=miss(?!;)/)
  // two hits, pipelined on one connection
  const r = await raw(port, [get('/dated'), get('/dated')], (t) => (t.match(/dated body/g) ?? []).length === 2)
  const [hit1, hit2] = heads(r.text)
  for (const h of [hit1, hit2]) {
    assert.match(h, /^HTTP\/1\.1 200 OK\r\n/)
    assert.match(h, /cache-status: sluice; hit/)
    assert.equal(count(h, 'date'), 1)
    assert.equal(count(h, 'content-length'), 1)
    assert.match(h, /\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5$/)
    assert.equal(count(h, 'x-request-id'), 1)
    assert.match(h, /\r\nage: \d+/)
  }
  assert.equal(r.closed, false)
})

test('a stored response without Date gets one on a hit, as Node would add it', async () => {
  const { port } = await gateway()
  await raw(port, [get('/undated')], (t) => t.includes('undated'))
  const r = await raw(port, [get('/undated')], (t) => t.includes('undated'))
  const hit = heads(r.text)[0]
  assert.match(hit, /cache-status: sluice; hit/)
  assert.equal(count(hit, 'date'), 1)
  // The time the response was received (RFC 9110 §6.6.1), kept with the entry's fields.
  assert.match(hit, /\r\ndate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/i)
})

test('Connection: close, HTTP/1.0 and HEAD hits are answered as Node answers them', async () => {
  const { port } = await gateway()
  await raw(port, [get('/dated')], (t) => t.includes('dated body'))
  const close = await raw(port, [get('/dated', 'Connection: close\r\n')], () => false)
  assert.match(heads(close.text)[0], /cache-status: sluice; hit/)
  assert.match(heads(close.text)[0], /\r\nConnection: close/)
  assert.equal(close.closed, true)
  const old = await raw(port, [get('/dated', '', '1.0')], () => false)
  assert.match(heads(old.text)[0], /^HTTP\/1\.1 200 OK/)
  assert.match(old.text, /dated body$/)
  assert.equal(old.closed, true)
  const head = await raw(port, [get('/dated', '', '1.1', 'HEAD'), get('/dated')], (t) => t.includes('dated body'))
  const [h1, h2] = heads(head.text)
  assert.match(h1, /cache-status: sluice; hit/)
  assert.match(h1, /content-length: 10/)
  assert.match(h2, /^HTTP\/1\.1 200 OK/, 'the HEAD response had no body: the next response starts right after its head')
})

test('server.maxRequestsPerSocket: the last response on the connection says Connection: close', async () => {
  const { port } = await gateway('server: { maxRequestsPerSocket: 2 }\n')
  await raw(port, [get('/dated')], (t) => t.includes('dated body'))
  const r = await raw(port, [get('/dated'), get('/dated')], (t) => (t.match(/dated body/g) ?? []).length === 2)
  const [a, b] = heads(r.text)
  assert.match(a, /cache-status: sluice; hit/)
  assert.match(a, /Keep-Alive: timeout=5, max=2/)
  assert.match(b, /\r\nConnection: close/)
})

// Streamed responses (pass-through, misses) get their head the same way (writeStreamedHead).
test('a streamed response with Content-Length: one Date (the origin\'s), keep-alive fields, field bytes as sent, the connection reused', async () => {
  const { port } = await gateway('', (u) => simpleConfig(u))
  const r = await raw(port, [get('/pass/length'), get('/pass/length')], (t) => (t.match(/pass-length/g) ?? []).length === 2)
  const [a, b] = heads(r.text)
  for (const h of [a, b]) {
    assert.match(h, /^HTTP\/1\.1 200 OK\r\n/)
    assert.equal(count(h, 'date'), 1)
    assert.equal(count(h, 'content-length'), 1)
    assert.equal(count(h, 'transfer-encoding'), 0)
    // Node's origin writes U+00FF as UTF-8 (C3 BF); the bytes pass through as they came.
    assert.match(h, /\r\nx-origin: a\u00c3\u00bfb\r\n/)
    assert.match(h, /\r\nvia: 1\.1 sluice/)
    assert.equal(count(h, 'x-request-id'), 1)
    assert.match(h, /\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5$/)
  }
  assert.equal(r.closed, false)
  // The same fields, byte for byte, as writeHead writes them (HTTP/1.0 goes through writeHead).
  const viaWriteHead = heads((await raw(port, [get('/pass/length', '', '1.0')], () => false)).text)[0]
  const fields = (h: string): string[] => h.split('\r\n').slice(1).filter((l) => !/^(date|x-request-id|connection|keep-alive):/i.test(l))
  assert.deepEqual(fields(a), fields(viaWriteHead))
})

test('a streamed response without a length is sent chunked, framed right, and the next response follows on the connection', async () => {
  const { port } = await gateway('', (u) => simpleConfig(u))
  const r = await raw(port, [get('/pass/chunked'), get('/pass/length')], (t) => t.includes('pass-length'))
  const [a, b] = heads(r.text)
  assert.match(a, /^HTTP\/1\.1 200 OK\r\n/)
  assert.equal(count(a, 'content-length'), 0)
  assert.match(a, /\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked$/)
  const body = r.text.slice(r.text.indexOf('\r\n\r\n') + 4, r.text.lastIndexOf('HTTP/1.1 '))
  assert.equal(body, '9\r\npart one,\r\n8\r\npart two\r\n0\r\n\r\n')
  assert.match(b, /^HTTP\/1\.1 200 OK\r\n/)
  assert.equal(r.closed, false)
})

test('a streamed response: Date added when the origin sent none; 204, HTTP/1.0 and Connection: close answered as Node answers them', async () => {
  const { port } = await gateway('', (u) => simpleConfig(u))
  const undated = heads((await raw(port, [get('/pass/undated')], (t) => t.includes('created'))).text)[0]
  assert.match(undated, /^HTTP\/1\.1 201 Created\r\n/)
  assert.equal(count(undated, 'date'), 1)
  const empty = await raw(port, [get('/pass/empty'), get('/pass/length')], (t) => t.includes('pass-length'))
  const [e, next] = heads(empty.text)
  assert.match(e, /^HTTP\/1\.1 204 No Content\r\n/)
  assert.equal(count(e, 'transfer-encoding'), 0)
  assert.match(next, /^HTTP\/1\.1 200 OK\r\n/)
  const old = await raw(port, [get('/pass/chunked', '', '1.0')], () => false)
  assert.equal(count(heads(old.text)[0], 'transfer-encoding'), 0)
  assert.match(old.text, /part one,part two$/)
  assert.equal(old.closed, true)
  const close = await raw(port, [get('/pass/length', 'Connection: close\r\n')], () => false)
  assert.match(heads(close.text)[0], /\r\nConnection: close/)
  assert.equal(close.closed, true)
})

test('a stored 204 hit carries no Content-Length (RFC 9110 §8.6); a GET with a body over the route\'s maxBodyBytes gets 413 on a hit too', async () => {
  origin.on('/empty204', (_req, res) => { res.writeHead(204, { 'cache-control': 'max-age=60' }); res.end() })
  const { port } = await gateway('', (u) => cachedConfig(u).replace('    cache: { enabled: true }', '    cache: { enabled: true }\n    maxBodyBytes: 10'))
  await raw(port, [get('/empty204')], (t) => t.includes('\r\n\r\n'))
  for (const path of ['/empty204', '/%65mpty204']) { // the fast path, then the full pipeline
    const r = await raw(port, [get(path)], (t) => t.includes('\r\n\r\n'))
    assert.match(r.text, /^HTTP\/1\.1 204 /, path)
    assert.match(r.text, /cache-status: sluice; hit/i, path)
    assert.equal(count(heads(r.text)[0], 'content-length'), 0, path)
  }
  await raw(port, [get('/dated')], (t) => t.includes('dated body'))
  for (const path of ['/dated', '/%64ated']) {
    const r = await raw(port, [get(path, 'Content-Length: 50\r\n') + 'y'.repeat(50)], (t) => t.includes('\r\n\r\n'))
    assert.match(r.text, /^HTTP\/1\.1 413 /, path)
  }
})
