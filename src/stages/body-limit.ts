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
  return body.pipe(t)
}
