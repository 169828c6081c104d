// The pipeline's order: the per-client limit runs before any byte of the request body is read.
// A PUT small enough to be buffered for retries is the case where the body used to be read
// first: a limited client's upload was taken into memory before its 429.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway } from '../helpers/gateway.js'

const origin = await startOrigin()
const gw = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  origin: { url: "${origin.url}", retry: { attempts: 2, maxBufferBytes: 65536 } }
routes:
  - name: limited
    match: { pathPrefix: / }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: 0.01, burst: 1 } }
`)
after(async () => { await gw.close(); await origin.close() })

/** Send a PUT's headers and only the first bytes of its declared body; resolve with what comes back before `ms`. */
function partialPut (declared: number, sent: number, ms: number): Promise<string> {
  const { port } = new URL(gw.url)
  return new Promise((resolve) => {
    const s = connect(Number(port), '127.0.0.1')
    let got = ''
    const done = () => { clearTimeout(timer); s.destroy(); resolve(got) }
    const timer = setTimeout(done, ms)
    s.on('data', (d) => { got += d.toString('latin1'); if (got.includes('\r\n\r\n')) done() })
    s.on('error', done)
    s.write(`PUT /upload HTTP/1.1\r\nhost: example.com\r\ncontent-type: application/octet-stream\r\ncontent-length: ${declared}\r\n\r\n` + 'x'.repeat(sent))
  })
}

test('a rate-limited client gets its 429 without the gateway waiting for (or reading) its body', async () => {
  // The one token of the bucket: a whole small PUT goes through (and is buffered for retries).
  const first = await fetch(gw.url + '/upload', { method: 'PUT', body: 'hello' })
  assert.equal(first.status, 200)
  await first.text()
  // The next one declares 1000 bytes but sends 10: the limit answers at once, with no body read.
  const head = await partialPut(1000, 10, 3000)
  assert.match(head, /^HTTP\/1\.1 429 /, `expected a 429 before the body was complete, got: ${JSON.stringify(head.slice(0, 80))}`)
  assert.match(head, /retry-after: \d+/i)
  assert.equal(origin.seen.filter((r) => r.method === 'PUT').length, 1, 'the limited PUT never reached the origin')
})
