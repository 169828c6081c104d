// Raw HTTP/1.1 over net.Socket for the hardening tests: send exact bytes, read every byte the
// gateway answers until it closes (or a bounded wait passes), and split that into responses.
import { connect, type Socket } from 'node:net'

export interface RawResponse {
  status: number
  reason: string
  /** Header names lower case; repeated headers keep every value. */
  headers: Record<string, string[]>
  body: Buffer
  /** The response's bytes as they arrived (status line, headers, body framing). */
  raw: Buffer
}

export interface Exchange {
  /** Every byte received. */
  data: Buffer
  responses: RawResponse[]
  /** The gateway closed the connection (as opposed to the bounded wait running out). */
  closed: boolean
}

export interface SendOptions {
  /** Give up waiting after this long (the connection is then destroyed); default 3000 ms. */
  waitMs?: number
  /** Half-close after writing (default false: leave the write side open). */
  end?: boolean
  /** Stop waiting once this many complete responses arrived (default: wait for the close). */
  responses?: number
  /** Called with the socket once connected, instead of writing `bytes` at once. */
  drive?: (s: Socket) => void
}

/** Send `bytes` to 127.0.0.1:port and collect the answer. */
export function send (port: number, bytes: string | Buffer, opts: SendOptions = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let settled = false
    const finish = (closed: boolean) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      s.destroy()
      const data = Buffer.concat(chunks)
      resolve({ data, responses: parseResponses(data), closed })
    }
    const timer = setTimeout(() => finish(false), opts.waitMs ?? 3000)
    s.on('data', (c: Buffer) => {
      chunks.push(c)
      if (opts.responses !== undefined && parseResponses(Buffer.concat(chunks)).length >= opts.responses) finish(false)
    })
    s.on('close', () => finish(true))
    s.on('error', () => finish(true))
    s.on('connect', () => {
      if (opts.drive) { opts.drive(s); return }
      if (opts.end) s.end(bytes)
      else s.write(bytes)
    })
  })
}

/** Join lines with CRLF and end the header block. */
export function req (...lines: string[]): string {
  return lines.join('\r\n') + '\r\n\r\n'
}

/** Split a byte stream into complete HTTP/1.1 responses (Content-Length, chunked, or no body). */
export function parseResponses (data: Buffer): RawResponse[] {
  const out: RawResponse[] = []
  let pos = 0
  while (pos < data.length) {
    const end = data.indexOf('\r\n\r\n', pos)
    if (end === -1) break
    const head = data.subarray(pos, end).toString('latin1').split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(head[0])
    if (!m) break
    const headers: Record<string, string[]> = {}
    for (const line of head.slice(1)) {
      const i = line.indexOf(':')
      const k = line.slice(0, i).toLowerCase()
      ;(headers[k] ??= []).push(line.slice(i + 1).trim())
    }
    const status = Number(m[1])
    let p = end + 4
    let body: Buffer
    const noBody = status === 204 || status === 304 || (status >= 100 && status < 200)
    if (noBody) {
      body = Buffer.alloc(0)
    } else if (headers['transfer-encoding']?.some((v) => /chunked/i.test(v))) {
      const parts: Buffer[] = []
      let complete = false
      for (;;) {
        const le = data.indexOf('\r\n', p)
        if (le === -1) break
        const size = parseInt(data.subarray(p, le).toString('latin1'), 16)
        if (Number.isNaN(size)) break
        if (size === 0) {
          const te = data.indexOf('\r\n\r\n', le)
          if (te === -1) break
          p = te + 4
          complete = true
          break
        }
        if (le + 2 + size + 2 > data.length) break
        parts.push(data.subarray(le + 2, le + 2 + size))
        p = le + 2 + size + 2
      }
      if (!complete) break
      body = Buffer.concat(parts)
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length'][0])
      if (p + n > data.length) break
      body = data.subarray(p, p + n)
      p += n
    } else {
      body = data.subarray(p) // delimited by the close
      p = data.length
    }
    out.push({ status, reason: m[2] ?? '', headers, body, raw: data.subarray(pos, p) })
    pos = p
  }
  return out
}

/** The JSON error code of a response body, or undefined. */
export function errorCode (r: RawResponse | undefined): string | undefined {
  if (r === undefined) return undefined
  try { return (JSON.parse(r.body.toString('utf8')) as { error?: string }).error } catch { return undefined }
}
