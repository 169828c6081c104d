// The access line, one per request, written straight to the logger's own stream in pino's
// format: {"level":30,"time":"<ISO>","service":"sluice","reqId":...,"msg":"request"}. pino's
// generic serialisation of the same object cost about 38k instructions per request (a 1 KB
// cache hit costs 92k in all); this builds the line from known fields, quotes strings with
// JSON.stringify, and reuses the time string within a millisecond. Other log lines go through
// pino as usual, to the same stream, so their order is kept.
import pino, { type Logger } from 'pino'

export interface AccessFields {
  reqId: string | undefined
  route: string
  upstream: string | undefined
  method: string
  url: string | undefined
  status: number
  bytes: number
  ms: number
  cache: string
  ip: string
  err: string | undefined
}

/**
 * A JSON string literal. Route and upstream names, methods, cache results and addresses are
 * checked tokens (config patterns, Node's parser), and a request ID or URL holds no control
 * characters (Node refuses them): only `"` and `\\` can need escaping, and rarely do.
 */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\uffff]/
function q (s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : '"' + s + '"'
}

const MS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'))

export class AccessLog {
  private readonly stream: { write (s: string): unknown }
  private lastSecond = -1
  /** "YYYY-MM-DDTHH:MM:SS." of the current second: the time string is that, the ms, and Z. */
  private secondIso = ''
  constructor (private readonly log: Logger) {
    this.stream = (log as unknown as Record<symbol, { write (s: string): unknown }>)[pino.symbols.streamSym]
  }

  write (f: AccessFields): void {
    if (!this.log.isLevelEnabled('info')) return
    const now = Date.now()
    const second = Math.floor(now / 1000)
    if (second !== this.lastSecond) { this.lastSecond = second; this.secondIso = new Date(second * 1000).toISOString().slice(0, 20) }
    let line = '{"level":30,"time":"' + this.secondIso + MS[now - second * 1000] + 'Z","service":"sluice"'
    if (f.reqId !== undefined) line += ',"reqId":' + q(f.reqId)
    line += ',"route":' + q(f.route)
    if (f.upstream !== undefined) line += ',"upstream":' + q(f.upstream)
    line += ',"method":' + q(f.method)
    if (f.url !== undefined) line += ',"url":' + q(f.url)
    line += ',"status":' + f.status + ',"bytes":' + f.bytes + ',"ms":' + f.ms + ',"cache":' + q(f.cache) + ',"ip":' + q(f.ip)
    if (f.err !== undefined) line += ',"err":' + q(f.err)
    this.stream.write(line + ',"msg":"request"}\n')
  }
}
