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
 * - 4096 bytes is PIPE_BUF: a write that size or smaller reaches a pipe in one piece, so the
 *   lines of several workers sharing one stdout never interleave. That holds only for one
 *   write at a time: once a pipe is full, Node gathers the chunks waiting behind it into one
 *   `writev`, which the kernel may cut anywhere (two workers then split each other's lines).
 *   So the sink keeps its own queue and hands stdout the next chunk only when the last one
 *   has gone out. (A single line longer than 4096 bytes, a URL of several KB, goes out as a
 *   chunk of its own and loses that guarantee.)
 * - If stdout stops being read (a stalled log collector), chunks wait in that queue; past
 *   LOG_QUEUE_MAX_BYTES, further lines are dropped and counted
 *   (`sluice_log_lines_dropped_total`), and a warn line says how many once writing resumes.
 *   The gateway never blocks on its log, and never grows without bound. If stdout is closed
 *   (EPIPE), the lines of the chunk that failed and every later line are dropped and counted
 *   the same way.
 * - A graceful stop waits (boundedly) until stdout has taken everything (logDrained()); at
 *   exit, and for pino's `fatal`, what is still held is written synchronously (flushSync()).
 */
export const LOG_CHUNK_BYTES = 4096
export const LOG_FLUSH_MS = 1000
export const LOG_QUEUE_MAX_BYTES = 8 * 1024 * 1024

interface Out {
  write (chunk: string, encoding: BufferEncoding, done: (err?: Error | null) => void): unknown
  readonly writableLength: number
  on (event: 'error', listener: (err: Error) => void): unknown
}

/** Whole lines, written out as one piece. */
interface Chunk { data: string; encoding: BufferEncoding; bytes: number; lines: number }

/** How long flushSync() retries a full pipe (EAGAIN) before it gives up. */
const SYNC_FLUSH_MS = 1000
const napCell = new Int32Array(new SharedArrayBuffer(4))

let dropped = 0
/** Log lines dropped since the process started (stdout not read, or closed). */
export function droppedLogLines (): number { return dropped }

export class LogSink {
  private buf = ''
  private bytes = 0
  private lines = 0
  /** Whether the chunk is all ASCII (then it is written as Latin-1: a copy, no UTF-8 encoding). */
  private ascii = true
  /** Chunks waiting for stdout, oldest first; `inFlight` is the one stdout has now. */
  private readonly queue: Chunk[] = []
  private queuedBytes = 0
  private inFlight: Chunk | null = null
  private broken = false
  /** Drops counted before this sink existed are not its to report. */
  private reported = dropped
  private idle: (() => void)[] = []
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

  /** Write out what is held (pino's `logger.flush()`, the timer, shutdown). */
  flush (cb?: (err?: Error) => void): void {
    if (this.bytes > 0) this.writeOut()
    cb?.()
  }

  /** Whether stdout has taken every line (nothing held, queued or being written). */
  get drained (): boolean {
    return this.bytes === 0 && this.inFlight === null && this.queue.length === 0 && this.out.writableLength === 0
  }

  /** Resolves once drained, or after `ms`. */
  waitDrained (ms: number): Promise<void> {
    this.flush()
    if (this.drained || this.broken) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      timer.unref()
      this.idle.push(() => { clearTimeout(timer); resolve() })
    })
  }

  // Not `emit`: pino calls stream.emit('message', ...) on a destination that has one.
  private writeOut (): void {
    if (this.enqueue()) this.pump()
  }

  /** The held lines become a chunk at the end of the queue (or are dropped and counted); whether it was queued. */
  private enqueue (): boolean {
    const chunk: Chunk = { data: this.buf, encoding: this.ascii ? 'latin1' : 'utf8', bytes: this.bytes, lines: this.lines }
    this.buf = ''
    this.bytes = 0
    this.lines = 0
    this.ascii = true
    if (this.broken || this.queuedBytes + (this.inFlight?.bytes ?? 0) + chunk.bytes > this.maxQueued) { dropped += chunk.lines; return false }
    this.queue.push(chunk)
    this.queuedBytes += chunk.bytes
    return true
  }

  /** Hand stdout the next chunk, if it has none. */
  private pump (): void {
    if (this.inFlight !== null) return
    if (this.queue.length > 0 && dropped > this.reported) {
      const n = dropped - this.reported
      this.reported = dropped
      const note = `{"level":40,"time":"${new Date().toISOString()}","service":"sluice","dropped":${n},"msg":"log lines dropped: stdout was not being read"}\n`
      this.queue.unshift({ data: note, encoding: 'latin1', bytes: note.length, lines: 1 })
      this.queuedBytes += note.length
    }
    const next = this.queue.shift()
    if (next === undefined) {
      if (this.idle.length > 0 && this.drained) for (const f of this.idle.splice(0)) f()
      return
    }
    this.queuedBytes -= next.bytes
    this.inFlight = next
    this.out.write(next.data, next.encoding, this.written)
  }

  private readonly written = (err?: Error | null): void => {
    const c = this.inFlight
    this.inFlight = null
    if (err != null || this.broken) {
      this.broken = true
      dropped += (c?.lines ?? 0)
      this.dropQueue()
      for (const f of this.idle.splice(0)) f()
      return
    }
    this.pump()
  }

  /** Every queued line is dropped and counted (stdout closed, or it could not be written at exit). */
  private dropQueue (): void {
    for (const q of this.queue.splice(0)) dropped += q.lines
    this.queuedBytes = 0
  }

  /**
   * What is held and queued, written synchronously: at exit, and for pino's `fatal` (which
   * calls this without a descriptor). A pipe that is full is retried for up to SYNC_FLUSH_MS.
   * The chunk stdout has in flight is not written again: a process that exits does not finish
   * it, and if this one goes on, it goes out after these.
   */
  flushSync (fd = 1): void {
    if (this.broken) return
    if (this.bytes > 0) this.enqueue()
    const deadline = Date.now() + SYNC_FLUSH_MS
    while (this.queue.length > 0) {
      const c = this.queue[0]
      if (!writeAllSync(fd, Buffer.from(c.data, c.encoding), deadline)) { this.dropQueue(); return }
      this.queue.shift()
      this.queuedBytes -= c.bytes
    }
  }
}

/** Write all of `b` to `fd`, waiting out a full pipe (EAGAIN) until `deadline`. */
function writeAllSync (fd: number, b: Buffer, deadline: number): boolean {
  let off = 0
  while (off < b.length) {
    try {
      off += writeSync(fd, b, off, b.length - off)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() > deadline) return false
      Atomics.wait(napCell, 0, 0, 2)
    }
  }
  return true
}

/** Wait, at most `ms`, until the logger's stdout has taken every line (a graceful stop, before exit). */
export function logDrained (log: Logger, ms = 2000): Promise<void> {
  const stream = streamOf(log)
  return stream instanceof LogSink ? stream.waitDrained(ms) : Promise.resolve()
}

/** The destination a pino logger writes to: Sluice's LogSink, or a stream a test injected. */
export function streamOf (log: Logger): { write (s: string): unknown } {
  return (log as unknown as Record<symbol, { write (s: string): unknown }>)[pino.symbols.streamSym]
}

/** One sink for the process's stdout, shared by every logger made for it (its flush timer and exit hook are made once). */
let stdoutSink: LogSink | null = null

export function createLogger (level: string, dest?: DestinationStream): Logger {
  let out = dest
  if (out === undefined) {
    if (stdoutSink === null) {
      const sink = stdoutSink = new LogSink(process.stdout)
      setInterval(() => { sink.flush() }, LOG_FLUSH_MS).unref()
      process.once('exit', () => { sink.flushSync(1) })
    }
    out = stdoutSink
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
