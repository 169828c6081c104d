// pino, JSON lines on stdout. Credentials never reach a log line.
import pino, { type Logger, type DestinationStream } from 'pino'

export const REDACT = [
  'authorization', 'cookie', 'set-cookie', 'token', 'password',
  '*.authorization', '*.cookie', '*["set-cookie"]', '*.token', '*.password',
  'headers.authorization', 'headers.cookie', 'headers["set-cookie"]',
  'req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]'
]

/**
 * Lines are written in batches: up to 4 KB (about 20 access lines) per write, and whatever is
 * buffered at least once a second, and at exit (pino flushes on exit; a drain flushes too).
 * Writing each line at once took a 1 KB cache hit with the access log on from 130.3k
 * instructions to 139.7k (callgrind, bench/instr.mjs; docs/benchmarks.md). nginx's
 * `access_log ... buffer= flush=` makes the same trade: a line may show up to a second late,
 * and a process killed with SIGKILL loses at most that second.
 */
export const LOG_BUFFER_BYTES = 4096
export const LOG_FLUSH_MS = 1000

export function createLogger (level: string, dest?: DestinationStream): Logger {
  let out = dest
  if (out === undefined) {
    const boom = pino.destination({ sync: false, minLength: LOG_BUFFER_BYTES })
    setInterval(() => { try { boom.flush() } catch {} }, LOG_FLUSH_MS).unref()
    out = boom
  }
  return pino({
    level,
    base: { service: 'sluice' },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime
  }, out)
}

/** Remove credentials from a redis:// URL before it is shown anywhere. */
export function redactUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return url ? '[unparseable url]' : url
  }
}
