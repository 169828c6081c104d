// Bounds a request body without a Content-Length (chunked) as it streams: past the route's
// maxBodyBytes the stream fails with 413 SLUICE_ERR_BODY_TOO_LARGE, which aborts the upstream
// request; the client gets the 413 unless the upstream already answered.
import { Transform, type Readable } from 'node:stream'
import { SluiceError } from '../errors.js'

export function limitBody (body: Readable, max: number): Readable {
  let seen = 0
  const t = new Transform({
    transform (chunk: Buffer, _enc, cb) {
      seen += chunk.length
      if (seen > max) cb(new SluiceError('SLUICE_ERR_BODY_TOO_LARGE', `The request body is larger than this route allows (${max} bytes)`))
      else cb(null, chunk)
    }
  })
  // A body nobody reads (the upstream stage refused the request before reading it: a budget 429,
  // an open breaker) can still fail (the rate guard's 408, the client's reset): that failure
  // must not reach the process as an uncaught error. The reader, if any, has its own listener.
  t.on('error', () => {})
  body.on('error', (err) => t.destroy(err))
  // Piped on the first read, not now: piping reads the client's body at once, and so sent an
  // `Expect: 100-continue` client its 100 (and started the body-rate clocks) before the upstream
  // stage admitted the request (src/edge/body-rate.ts and src/gateway.ts continueOnRead wait
  // for the first read too).
  const own = t as Transform & { read: Transform['read'] }
  own.read = function (this: Transform, n?: number) {
    delete (own as { read?: unknown }).read // back to Readable.prototype.read
    if (!t.destroyed) body.pipe(t)
    return this.read(n)
  }
  return t
}
