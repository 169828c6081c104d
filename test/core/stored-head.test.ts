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
import { startTestGateway, cachedConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
const gateways: TestGateway[] = []
before(async () => {
  origin = await startOrigin()
  origin.on('/dated', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' }); res.end('dated body') })
  origin.on('/undated', (_req, res) => { res.sendDate = false; res.writeHead(200, { 'cache-control': 'max-age=60' }); res.end('undated') })
})
after(async () => { for (const g of gateways) await g.close(); await origin.close() })

async function gateway (extra = ''): Promise<{ port: number }> {
  const g = await startTestGateway(cachedConfig(origin.url) + extra)
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
  assert.match(heads(first.text)[0], /cache-status: sluice; fwd=miss; stored/)
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
  assert.match(hit, /\r\nDate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/)
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
