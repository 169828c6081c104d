// The access line writer (src/observability/access-line.ts): pino's line format, valid JSON for
// any URL or request ID; Sluice's log sink (src/observability/logger.ts): chunks of whole lines
// up to PIPE_BUF, nothing lost while stdout is read, a bounded queue and counted drops when not.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import pino from 'pino'
import { spawn } from 'node:child_process'
import { until } from '../helpers/wait.js'
import { AccessLog, type AccessFields } from '../../src/observability/access-line.js'
import { LogSink, LOG_CHUNK_BYTES, droppedLogLines, createLogger } from '../../src/observability/logger.js'

function capture () {
  const chunks: string[] = []
  const sink = new Writable({ write (c, _e, cb) { chunks.push(String(c)); cb() } })
  const log = pino({ level: 'info', base: { service: 'sluice' } }, sink)
  const lines = () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  return { log, chunks, lines }
}
const fields = (over: Partial<AccessFields> = {}): AccessFields => ({ reqId: 'r1', route: 'api', upstream: 'origin', method: 'GET', url: '/x', status: 200, bytes: 5, ms: 1.25, cache: 'miss', ip: '127.0.0.1', err: undefined, ...over })
const tick = () => new Promise((resolve) => setImmediate(resolve))

/**
 * A stand-in for process.stdout that keeps every chunk written. While `stall()`ed it takes a
 * chunk but does not finish it (a pipe nobody reads); `resume()` finishes them. `fail` makes
 * the next writes fail as a closed pipe does ('error', and the write's callback with it).
 */
interface FakeOut { writableLength: number, write (c: string, e: BufferEncoding, done: (err?: Error | null) => void): boolean, on (e: 'error', l: (err: Error) => void): FakeOut }
function fakeStdout (): { out: FakeOut, chunks: string[], fail: (e: Error) => void, stall: () => void, resume: () => void } {
  const chunks: string[] = []
  let onError: ((e: Error) => void) | undefined
  let stalled = false
  let failure: Error | null = null
  const waiting: (() => void)[] = []
  const out: FakeOut = {
    writableLength: 0,
    write (c, _e, done) {
      if (failure !== null) { const f = failure; onError?.(f); done(f); return false }
      chunks.push(c)
      if (stalled) { out.writableLength += c.length; waiting.push(() => { out.writableLength -= c.length; done() }); return false }
      done()
      return true
    },
    on (_e, l) { onError = l; return out }
  }
  return {
    out,
    chunks,
    fail: (e) => { failure = e },
    stall: () => { stalled = true },
    resume: () => { stalled = false; while (waiting.length > 0) waiting.shift()!() }
  }
}

test('an access line is pino\'s format and valid JSON whatever the URL or request ID holds', async () => {
  const { log, lines } = capture()
  const a = new AccessLog(log)
  a.write(fields({ url: '/q?a="b"\\c&d=\u00e9', reqId: 'id"with\\quote', upstream: undefined, err: 'SLUICE_ERR_UPSTREAM_RESET' }))
  await tick()
  const [l] = lines()
  assert.equal(l.level, 30)
  assert.equal(l.service, 'sluice')
  assert.equal(l.msg, 'request')
  assert.match(String(l.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  assert.equal(l.url, '/q?a="b"\\c&d=\u00e9')
  assert.equal(l.reqId, 'id"with\\quote')
  assert.equal(l.upstream, undefined)
  assert.equal(l.err, 'SLUICE_ERR_UPSTREAM_RESET')
  assert.equal(l.ms, 1.25)
  // A duration that is not a finite positive number is written as 0, never as invalid JSON.
  for (const ms of [-0.001, NaN, Infinity, 1e21]) a.write(fields({ ms }))
  await tick()
  assert.deepEqual(lines().slice(1).map((x) => x.ms), [0, 0, 0, 0])
  a.close()
})

test('through Sluice\'s sink an access line is ASCII, batched with pino\'s lines in whole-line chunks of at most 4096 bytes', async () => {
  const { out, chunks } = fakeStdout()
  const sink = new LogSink(out)
  const log = pino({ level: 'info', base: { service: 'sluice' } }, sink)
  const a = new AccessLog(log)
  a.write(fields({ url: '/caf\u00e9?x=\u4e2d' }))
  log.warn({ note: 'd\u00e9j\u00e0 vu' }, 'a pino line with Latin-1')
  for (let i = 0; i < 100; i++) a.write(fields({ reqId: `n${i}` }))
  assert.ok(chunks.length >= 2, 'full chunks went out without waiting for the timer')
  a.close()
  const bytes = chunks.map((c) => Buffer.byteLength(c))
  assert.ok(bytes.every((b) => b <= LOG_CHUNK_BYTES), `chunk sizes ${bytes.join(',')}`)
  assert.ok(chunks.every((c) => c.endsWith('\n')), 'every chunk holds whole lines')
  const lines = chunks.join('').split('\n').filter(Boolean)
  assert.equal(lines.length, 102)
  assert.ok(/^[\x20-\x7e]+$/.test(lines[0]), lines[0])
  assert.equal(JSON.parse(lines[0]).url, '/caf\u00e9?x=\u4e2d')
  assert.equal(JSON.parse(lines[1]).note, 'd\u00e9j\u00e0 vu')
  assert.deepEqual(lines.slice(2).map((l) => JSON.parse(l).reqId), Array.from({ length: 100 }, (_, i) => `n${i}`), 'in order, none lost')
  log.level = 'warn'
  a.write(fields({ reqId: 'quiet' }))
  a.close()
  assert.equal(chunks.join('').split('\n').filter(Boolean).length, 102, 'nothing below the log level')
})

test('a stdout that is not being read: one chunk at a time goes to it, lines past the queue bound are dropped and counted, then reported once writing resumes; a closed stdout drops, the failed chunk\'s lines too', () => {
  const { out, chunks, fail, stall, resume } = fakeStdout()
  const sink = new LogSink(out, 1000)
  const before = droppedLogLines()
  const line = (n: number) => `{"n":${n},"pad":"${'x'.repeat(280)}"}\n` // 300 bytes
  sink.write(line(0)); sink.flush()
  assert.equal(chunks.length, 1)
  stall() // the reader stalled
  for (let i = 1; i <= 10; i++) { sink.write(line(i)); sink.flush() }
  // Line 1 is in flight; 2 and 3 wait in the sink's queue (1000 bytes); 4 to 10 are dropped.
  assert.equal(chunks.length, 2, 'stdout is handed one chunk at a time')
  assert.equal(droppedLogLines() - before, 7)
  resume()
  assert.deepEqual(chunks.slice(1).map((c) => JSON.parse(c).n ?? JSON.parse(c).msg), [1, 'log lines dropped: stdout was not being read', 2, 3])
  assert.equal(JSON.parse(chunks[2]).dropped, 7)
  assert.equal(JSON.parse(chunks[2]).level, 40)
  // EPIPE: the chunk whose write failed and every later line are dropped and counted.
  fail(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))
  sink.write(line(11)); sink.flush()
  sink.write(line(12)); sink.flush()
  assert.equal(chunks.length, 5)
  assert.equal(droppedLogLines() - before, 9)
})

test('stdout taken by one process at a time: two processes sharing a slow pipe never split each other\'s lines', async () => {
  const loggerJs = new URL('../../src/observability/logger.js', import.meta.url).href
  const writer = (id: string) => `"${process.execPath}" --input-type=module -e '
    const { LogSink } = await import(${JSON.stringify(loggerJs)})
    const sink = new LogSink(process.stdout)
    let seq = 0
    const burst = () => {
      for (let i = 0; i < 200; i++) sink.writeAscii(JSON.stringify({ w: "${id}", seq: seq++, b: "${id}".repeat(150 + (seq % 50)) }) + "\\n")
      sink.flush()
      if (seq < 10000) setImmediate(burst)
    }
    burst()'`
  const child = spawn('sh', ['-c', `${writer('A')} & ${writer('B')} & wait`], { stdio: ['ignore', 'pipe', 'inherit'] })
  let text = ''
  child.stdout!.setEncoding('latin1')
  // A slow reader: the pipe fills, and each writer's chunks wait.
  child.stdout!.on('data', (d: string) => { text += d; child.stdout!.pause(); setTimeout(() => child.stdout!.resume(), 2) })
  await new Promise((resolve) => child.on('close', resolve))
  const lines = text.split('\n').filter(Boolean)
  assert.equal(lines.length, 20000)
  const broken = lines.filter((l) => { try { const o = JSON.parse(l) as { w: string, b: string }; return o.b !== o.w.repeat(o.b.length) } catch { return true } })
  assert.deepEqual(broken.slice(0, 2), [], `${broken.length} lines were split`)
})

test('pino\'s fatal writes out the held lines and itself at once; a graceful stop waits until stdout has taken every line', async () => {
  const loggerJs = new URL('../../src/observability/logger.js', import.meta.url).href
  const run = async (script: string, readAfterMs: number): Promise<string[]> => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', `const { createLogger, logDrained } = await import(${JSON.stringify(loggerJs)}); ${script}`], { stdio: ['ignore', 'pipe', 'inherit'] })
    child.stdout!.pause()
    await new Promise((resolve) => setTimeout(resolve, readAfterMs))
    let text = ''
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (d: string) => { text += d })
    child.stdout!.resume()
    await new Promise((resolve) => child.on('close', resolve))
    return text.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { msg: string }).msg)
  }
  // pino calls flushSync() with no descriptor on fatal; then the process exits.
  assert.deepEqual(await run("const log = createLogger('info'); log.info('one'); log.info('two'); log.fatal('FATAL'); process.exit(1)", 0), ['one', 'two', 'FATAL'])
  // 5,000 lines (1.3 MB) into a pipe read only after 500 ms: a stop that waits for the drain loses none.
  const lines = await run("const log = createLogger('info'); for (let i = 0; i < 5000; i++) log.info({ pad: 'x'.repeat(200) }, 'line ' + i); log.info('stopped'); await logDrained(log, 5000); process.exit(0)", 500)
  assert.equal(lines.length, 5001)
  assert.equal(lines.at(-1), 'stopped')
})

test('a real pipe nobody reads never blocks the process: it keeps running, drops past the bound, and says so when read again', async () => {
  // A child logs through createLogger (stdout: a pipe this test leaves unread at first) and
  // reports over IPC that its event loop still turns while the pipe is full.
  const loggerJs = new URL('../../src/observability/logger.js', import.meta.url).href
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    const { createLogger, droppedLogLines } = await import(${JSON.stringify(loggerJs)})
    const log = createLogger('info')
    let n = 0
    const big = 'x'.repeat(200)
    const t = setInterval(() => {
      for (let i = 0; i < 2000; i++) log.info({ n: n++, big })
      log.flush()
      process.send({ n, dropped: droppedLogLines() })
    }, 5)
    process.on('message', () => {
      clearInterval(t)
      const wait = () => process.stdout.writableLength > 0 ? setTimeout(wait, 10) : (log.info('done \u00e9 \u4e2d'), log.flush(), process.send({ bye: droppedLogLines() }))
      wait()
    })
  `], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
  child.stdout!.pause()
  let last: { n: number; dropped: number } = { n: 0, dropped: 0 }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no drop reported; last ${JSON.stringify(last)}`)), 20_000)
    child.on('message', (m: { n: number; dropped: number }) => { last = m; if (m.dropped > 0) { clearTimeout(timer); resolve() } })
  })
  assert.ok(last.n > 4000, 'the child kept logging with its stdout full')
  let text = ''
  child.stdout!.setEncoding('utf8')
  child.stdout!.on('data', (d: string) => { text += d })
  child.stdout!.resume()
  child.removeAllListeners('message')
  child.send('stop')
  await new Promise((resolve) => child.on('message', resolve))
  // The sink writes its queue out a chunk at a time: wait for the last line, not for a while.
  await until('the last line through the pipe', () => text.includes('"msg":"done '))
  child.kill()
  const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  assert.ok(lines.length > 0)
  assert.ok(lines.some((l) => l.msg === 'log lines dropped: stdout was not being read' && Number(l.dropped) > 0), 'the drop is reported in the log itself')
  assert.ok(lines.some((l) => l.msg === 'done \u00e9 \u4e2d'), 'a line that is not ASCII arrives as UTF-8')
})

test('any request ID, URL, address or error round-trips as ASCII JSON: quotes, backslashes, control characters, Latin-1, CJK, emoji, lone surrogates; numbers; a URL longer than a chunk', () => {
  const { out, chunks } = fakeStdout()
  const sink = new LogSink(out)
  const a = new AccessLog(pino({ level: 'info', base: { service: 'sluice' } }, sink))
  const alphabet = ['a', 'Z', '0', '"', '\\', '/', '\u0000', '\u0001', '\t', '\n', '\u001f', '\u007f', '\u0080', '\u00e9', '\u00ff', '\u4e2d', '\ud83d\ude00', '\ud800', '\udfff', ' ', '%', '{', '}']
  let seed = 7
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n }
  const str = (max: number) => Array.from({ length: rnd(max) }, () => alphabet[rnd(alphabet.length)]).join('')
  // Route and upstream names (the config's name pattern), the method (a token Node's parser
  // checked) and the cache word are written unescaped: tokens only.
  const token = (max: number) => Array.from({ length: 1 + rnd(max) }, () => 'abcXYZ09-_.'[rnd(11)]).join('')
  const want: AccessFields[] = []
  for (let i = 0; i < 300; i++) {
    const f = fields({ reqId: str(20), route: token(10), upstream: i % 3 ? token(10) : undefined, method: token(8), url: i === 150 ? '/' + 'x\u00e9"'.repeat(2000) : str(60), status: rnd(600), bytes: [-1, 0, 9, 10, 99999, 2 ** 40][rnd(6)], ms: rnd(10_000_000) / 1000, cache: token(6), ip: str(16), err: i % 4 ? undefined : str(12), proto: [undefined, 'h2', 'http/1.0'][rnd(3)] as AccessFields['proto'] })
    want.push(f)
    a.write(f)
  }
  a.close()
  const lines = chunks.join('').split('\n').filter(Boolean)
  assert.equal(lines.length, 300)
  for (let i = 0; i < 300; i++) {
    assert.ok(/^[\x20-\x7e]+$/.test(lines[i]), `line ${i} is printable ASCII`)
    const l = JSON.parse(lines[i]) as Record<string, unknown>
    const f = want[i]
    for (const k of ['reqId', 'route', 'upstream', 'method', 'url', 'status', 'bytes', 'cache', 'ip', 'err', 'proto'] as const) assert.deepEqual(l[k], f[k], `line ${i} ${k}`)
    assert.equal(l.ms, Math.round(f.ms * 1000) / 1000)
  }
})

test('loggers made for stdout share one sink: twenty of them add one exit hook, not twenty', () => {
  createLogger('silent')
  const before = process.listenerCount('exit')
  for (let i = 0; i < 20; i++) createLogger('silent')
  assert.equal(process.listenerCount('exit'), before)
})
