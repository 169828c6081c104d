// pino, JSON lines on stdout. Credentials never reach a log line.
import { writeSync } from 'node:fs'
import pino, { type Logger, type DestinationStream } from 'pino'

export const REDACT = [
  'authorization', 'cookie', 'set-cookie', 'token', 'password',
  '*.authorization', '*.cookie', '*["set-cookie"]', '*.token', '*.password',
  'headers.authorization', 'headers.cookie', 'headers["set-cookie"]',
  'req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]'
]

/**
 * Where Sluice's own log lines go (pino's lines and the access lines): stdout, in chunks of
 * whole lines of at most LOG_CHUNK_BYTES, written at least once a second (LOG_FLUSH_MS), on a
 * graceful stop and at exit. nginx's `access_log ... buffer= flush=` makes the same trade: a
 * line may show up to a second late, and a process killed with SIGKILL loses at most that
 * second.
 *
 * - The chunks go through `process.stdout`. On a pipe or a socket (docker, systemd) that is a
 *   non-blocking descriptor written from the event loop: a write that fits goes out at once,
 *   in one system call and no thread hop. pino's default destination (sonic-boom) wrote from
 *   libuv's thread pool instead, which cost a thread wake-up and two context switches per
 *   chunk on the gateway's core (docs/benchmarks.md). On a file it is a plain synchronous write.
 * - 4096 bytes is PIPE_BUF: a chunk that size or smaller reaches a pipe in one piece, so the
 *   lines of several workers sharing one stdout never interleave. (A single line longer than
 *   that, a URL of several KB, goes out as a chunk of its own and loses that guarantee.)
 * - If stdout stops being read (a stalled log collector), Node queues what could not be written;
 *   past LOG_QUEUE_MAX_BYTES of queue, further lines are dropped and counted
 *   (`sluice_log_lines_dropped_total`), and a warn line says how many once writing resumes.
 *   The gateway never blocks on its log, and never grows without bound. If stdout is closed
 *   (EPIPE), every later line is dropped and counted the same way.
 */
export const LOG_CHUNK_BYTES = 4096
export const LOG_FLUSH_MS = 1000
export const LOG_QUEUE_MAX_BYTES = 8 * 1024 * 1024

interface Out {
  write (chunk: string, encoding?: BufferEncoding): unknown
  readonly writableLength: number
  on (event: 'error', listener: (err: Error) => void): unknown
}

let dropped = 0
/** Log lines dropped since the process started (stdout not read, or closed). */
export function droppedLogLines (): number { return dropped }

export class LogSink {
  private buf = ''
  private bytes = 0
  private lines = 0
  /** Whether the chunk is all ASCII (then it is written as Latin-1: a copy, no UTF-8 encoding). */
  private ascii = true
  private broken = false
  /** Drops counted before this sink existed are not its to report. */
  private reported = dropped
  constructor (private readonly out: Out, private readonly maxQueued = LOG_QUEUE_MAX_BYTES) {
    out.on('error', () => { this.broken = true })
  }

  /** A line known to be ASCII (an access line): its length is its size in bytes. */
  writeAscii (line: string): void {
    this.append(line, line.length)
  }

  /** pino's entry point: one line, any characters. */
  write (line: string): boolean {
    const n = Buffer.byteLength(line)
    this.append(line, n)
    if (n !== line.length) this.ascii = false
    return true
  }

  /** Add a line of `bytes` bytes, writing out the chunk first if the line would overflow it. */
  private append (line: string, bytes: number): void {
    if (this.bytes + bytes > LOG_CHUNK_BYTES && this.bytes > 0) this.writeOut()
    this.buf += line
    this.bytes += bytes
    this.lines++
  }

  /** Start an empty chunk. */
  private reset (): void {
    this.buf = ''
    this.bytes = 0
    this.lines = 0
    this.ascii = true
  }

  /** Write out what is held (pino's `logger.flush()`, the timer, shutdown). */
  flush (cb?: (err?: Error) => void): void {
    if (this.bytes > 0) this.writeOut()
    cb?.()
  }

  // Not `emit`: pino calls stream.emit('message', ...) on a destination that has one.
  private writeOut (): void {
    const chunk = this.buf
    const lines = this.lines
    const encoding = this.ascii ? 'latin1' : 'utf8'
    this.reset()
    if (this.broken || this.out.writableLength > this.maxQueued) { dropped += lines; return }
    if (dropped > this.reported) {
      const n = dropped - this.reported
      this.reported = dropped
      this.out.write(`{"level":40,"time":"${new Date().toISOString()}","service":"sluice","dropped":${n},"msg":"log lines dropped: stdout was not being read"}\n`)
    }
    this.out.write(chunk, encoding)
  }

  /** At exit: what is held, written synchronously (nothing if stdout still has a queue: order first). */
  flushSync (fd: number): void {
    if (this.bytes === 0 || this.broken || this.out.writableLength > 0) return
    const chunk = this.buf
    this.reset()
    try { writeSync(fd, chunk) } catch {}
  }
}

export function createLogger (level: string, dest?: DestinationStream): Logger {
  let out = dest
  if (out === undefined) {
    const sink = new LogSink(process.stdout)
    setInterval(() => { sink.flush() }, LOG_FLUSH_MS).unref()
    process.once('exit', () => { sink.flushSync(1) })
    out = sink
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
