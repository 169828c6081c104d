// A streamed response (pass-through, no Content-Length known to be small) is pumped from the
// upstream to the client with backpressure (writeStreamed in src/send.ts): a client that stops
// reading stops the origin too, instead of the gateway buffering what the origin sends; a client
// that goes away mid-body frees the upstream; an origin that dies mid-body cuts the client's
// connection, so a truncated body never looks complete.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { once } from 'node:events'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const CHUNK = Buffer.alloc(64 * 1024, 'y')
const TOTAL = 128 * 1024 * 1024

let origin: Origin
let gw: TestGateway
/** Bytes the origin has handed to its socket for the current /big response, and whether it finished or was cut. */
let sent = 0
let originClosed = false

before(async () => {
  origin = await startOrigin()
  origin.on('/big', (_req, res) => {
    sent = 0
    originClosed = false
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(TOTAL) })
    res.on('close', () => { originClosed = true })
    const more = (): void => {
      while (sent < TOTAL && !res.destroyed) {
        sent += CHUNK.length
        if (!res.write(CHUNK)) { res.once('drain', more); return }
      }
      if (sent >= TOTAL) res.end()
    }
    more()
  })
  origin.on('/dies', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100000' })
    res.write('x'.repeat(1000))
    setTimeout(() => res.destroy(), 50)
  })
  gw = await startTestGateway(simpleConfig(origin.url).replace('timeoutMs: 2000', 'timeoutMs: 20000'))
})
after(async () => { await gw.close(); await origin.close() })

function get (path: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    http.get(gw.url + path, resolve).on('error', reject)
  })
}

test('a client that stops reading stops the origin; when it reads again, every byte arrives', async () => {
  const res = await get('/big')
  assert.equal(res.statusCode, 200)
  res.pause()
  // Let the pipes fill: socket buffers and the streams' high-water marks, a few MB at most.
  await new Promise((r) => setTimeout(r, 700))
  const whilePaused = sent
  await new Promise((r) => setTimeout(r, 300))
  assert.ok(whilePaused < 32 * 1024 * 1024, `the origin sent ${whilePaused} bytes to a client that read nothing`)
  assert.equal(sent, whilePaused, 'the origin kept sending while the client read nothing')
  let got = 0
  res.on('data', (c: Buffer) => { got += c.length })
  res.resume()
  await once(res, 'end')
  assert.equal(got, TOTAL)
})

test('a client that goes away mid-body frees the upstream: the origin sees its response closed', async () => {
  const from = gw.logs.length
  const res = await get('/big')
  await once(res, 'data')
  res.destroy()
  await until('the origin to see its response closed', () => originClosed)
  assert.ok(sent < TOTAL, 'the origin was read to the end for a client that had gone')
  // A client leaving is not a failure of the body: no warn line (a warn alert would fire for
  // every viewer that closes an SSE tab); its access line says SLUICE_ERR_CLIENT_CLOSED.
  await until('the access line', () => gw.logs.slice(from).some((l) => l.msg === 'request' && l.url === '/big'))
  const lines = gw.logs.slice(from)
  assert.deepEqual(lines.filter((l) => Number(l.level) >= 40).map((l) => l.msg), [], 'a warn line for a client that left')
  assert.equal(lines.find((l) => l.msg === 'request' && l.url === '/big')?.err, 'SLUICE_ERR_CLIENT_CLOSED')
})

test('an origin that dies mid-body cuts the client connection: the body never looks complete', async () => {
  const res = await get('/dies')
  assert.equal(res.statusCode, 200)
  let got = 0
  res.on('data', (c: Buffer) => { got += c.length })
  const [err] = await Promise.race([
    once(res, 'error').then((e) => e),
    once(res, 'aborted').then(() => [new Error('aborted')]),
    once(res, 'end').then(() => [null])
  ]) as [Error | null]
  assert.ok(err !== null || !res.complete, 'a cut body ended as if complete')
  assert.ok(got < 100000)
  await until('the body failure logged', () => gw.logs.some((l) => l.msg === 'response body failed after the headers were sent; the client connection is cut'))
})
