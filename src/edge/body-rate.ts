// Slow-client protection for request bodies (server.requestBodyRate): an upload that trickles
// in (say 10 bytes every 2 s) must not hold an upstream connection for minutes. After graceMs
// the body's average rate must stay at or above minBytesPerSecond, and no gap between two
// pieces may exceed maxIdleMs. Otherwise the stream fails with 408 SLUICE_ERR_REQUEST_TIMEOUT,
// which aborts the upstream request (the body is its request stream) and answers the client.
// An HTTP/2 body that the client cancels fails too, rule or not (see guardBodyRate).
import { Transform, type Readable } from 'node:stream'
import { SluiceError } from '../errors.js'
import type { RequestBodyRateConfig } from './config.js'

export function guardBodyRate (body: Readable, rule: RequestBodyRateConfig): Readable {
  const { minBytesPerSecond: min, graceMs, maxIdleMs } = rule
  const rated = min > 0 || maxIdleMs > 0
  // Node's HTTP/2 compatibility request answers a client's RST_STREAM with 'aborted' and then a
  // normal 'end' (never an 'error', unlike HTTP/1's 'aborted' + ECONNRESET): piped as it is, the
  // cut body would reach the upstream as a complete request. So an HTTP/2 body always goes
  // through the transform, which fails (and so aborts the upstream request) on 'aborted'.
  const h2 = (body as { httpVersionMajor?: number }).httpVersionMajor === 2
  if (!rated && !h2) return body
  let start = 0
  let last = 0
  let seen = 0
  const t = new Transform({
    transform (chunk: Buffer, _enc, cb) {
      seen += chunk.length
      last = Date.now()
      cb(null, chunk)
    }
  })
  // A stream that nobody reads any more (a cache hit) must not throw its failure at the process.
  t.on('error', () => {})
  body.on('error', (err) => t.destroy(err))
  if (h2) {
    body.once('aborted', () => {
      if (!t.writableEnded && !t.destroyed) t.destroy(new SluiceError('SLUICE_ERR_CLIENT_CLOSED', 'the client reset the HTTP/2 stream before the request body ended'))
    })
  }
  let timer: NodeJS.Timeout | null = null
  const stop = (): void => { if (timer !== null) clearInterval(timer) }
  t.once('close', stop)
  t.once('finish', stop)
  /** Checked on a timer, not per chunk: a body that stops arriving has no chunk to check on. */
  const watch = (): void => {
    const every = Math.max(25, Math.min(1000, ...[graceMs, maxIdleMs].filter((x) => x > 0).map((x) => x / 4)))
    // Time the upstream side is not reading (backpressure: the transform's buffers are full and
    // the pipe has paused the client) is not the client's: it stops neither clock (as Kestrel).
    // Measured per tick: a tick that finds the pipe blocked counts its interval as paused.
    let tick = start
    let pausedMs = 0
    timer = setInterval(() => {
      const now = Date.now()
      if (t.writableNeedDrain || t.readableLength >= t.readableHighWaterMark) {
        pausedMs += now - tick
        last = now
      }
      tick = now
      const elapsed = now - start - pausedMs
      let why: string | null = null
      if (maxIdleMs > 0 && now - last > maxIdleMs) why = `no request body data for ${now - last} ms (server.requestBodyRate.maxIdleMs ${maxIdleMs})`
      else if (min > 0 && elapsed >= graceMs && seen * 1000 < min * elapsed) why = `the request body arrives at ${Math.round(seen * 1000 / elapsed)} B/s, under server.requestBodyRate.minBytesPerSecond ${min}`
      if (why === null) return
      stop()
      t.destroy(new SluiceError('SLUICE_ERR_REQUEST_TIMEOUT', why))
    }, every)
    timer.unref()
  }
  // Nothing is taken from the client until the upstream side first reads: an
  // `Expect: 100-continue` client gets its 100 only then (src/gateway.ts continueOnRead), after
  // the budget and the breaker have admitted the request, and the rate clocks start then.
  const own = t as Transform & { read: Transform['read'] }
  own.read = function (this: Transform, n?: number) {
    delete (own as { read?: unknown }).read // back to Readable.prototype.read
    if (!t.destroyed) {
      start = last = Date.now()
      if (rated) watch()
      body.pipe(t)
    }
    return this.read(n)
  }
  return t
}
