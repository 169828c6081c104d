// pino, JSON lines on stdout. Credentials never reach a log line.
import pino, { type Logger, type DestinationStream } from 'pino'

export const REDACT = [
  'authorization', 'cookie', 'set-cookie', 'token', 'password',
  '*.authorization', '*.cookie', '*["set-cookie"]', '*.token', '*.password',
  'headers.authorization', 'headers.cookie', 'headers["set-cookie"]',
  'req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]'
]

export function createLogger (level: string, dest?: DestinationStream): Logger {
  return pino({
    level,
    base: { service: 'sluice' },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime
  }, dest ?? pino.destination({ sync: false }))
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
