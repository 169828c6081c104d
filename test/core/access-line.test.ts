// The access line writer (src/observability/access-line.ts): pino's line format, valid JSON for
// any URL or request ID; Sluice's log sink (src/observability/logger.ts): chunks of whole lines
// up to PIPE_BUF, nothing lost while stdout is read, a bounded queue and counted drops when not.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import pino from 'pino'
import { spawn } from 'node:child_process'
import { AccessLog, type AccessFields } from '../../src/observability/access-line.js'
import { LogSink, LOG_CHUNK_BYTES, droppedLogLines } from '../../src/observability/logger.js'

function capture () {
  const chunks: string[] = []
  const sink = new Writable({ write (c, _e, cb) { chunks.push(String(c)); cb() } })
  const log = pino({ level: 'info', base: { service: 'sluice' } }, sink)
  const lines = () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  return { log, chunks, lines }
}
const fields = (over: Partial<AccessFields> = {}): AccessFields => ({ reqId: 'r1', route: 'api', upstream: 'origin', method: 'GET', url: '/x', status: 200, bytes: 5, ms: 1.25, cache: 'miss', ip: '127.0.0.1', err: undefined, ...over })
const tick = () => new Promise((resolve) => setImmediate(resolve))

/** A stand-in for process.stdout that keeps every chunk written; `fail` emits an 'error' as a closed pipe would. */
interface FakeOut { writableLength: number, write (c: string): boolean, on (e: 'error', l: (err: Error) => void): FakeOut }
function fakeStdout (): { out: FakeOut, chunks: string[], fail: (e: Error) => void } {
  const chunks: string[] = []
  let onError: ((e: Error) => void) | undefined
  const out: FakeOut = { writableLength: 0, write (c) { chunks.push(c); return true }, on (_e, l) { onError = l; return out } }
  return { out, chunks, fail: (e) => onError?.(e) }
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

test('a stdout that is not being read: lines past the queue bound are dropped and counted, then reported once writing resumes; a closed stdout drops too', () => {
  const { out, chunks, fail } = fakeStdout()
  const sink = new LogSink(out, 1000)
  const before = droppedLogLines()
  sink.write('{"a":1}\n'); sink.flush()
  out.writableLength = 5000 // the reader stalled: more queued than the bound
  for (let i = 0; i < 3; i++) { sink.write('{"b":1}\n'); sink.flush() }
  assert.equal(droppedLogLines() - before, 3)
  assert.equal(chunks.length, 1)
  out.writableLength = 0 // it reads again
  sink.write('{"c":1}\n'); sink.flush()
  assert.equal(chunks.length, 3)
  assert.deepEqual({ ...JSON.parse(chunks[1]), time: undefined }, { level: 40, time: undefined, service: 'sluice', dropped: 3, msg: 'log lines dropped: stdout was not being read' })
  assert.equal(chunks[2], '{"c":1}\n')
  fail(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))
  sink.write('{"d":1}\n'); sink.flush()
  assert.equal(chunks.length, 3)
  assert.equal(droppedLogLines() - before, 4)
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
  await new Promise((resolve) => setTimeout(resolve, 300))
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
