// The access line writer (src/observability/access-line.ts): pino's line format, valid JSON for
// any URL or request ID, and batching that loses nothing (a full batch, the timer, close()).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import pino from 'pino'
import { AccessLog, type AccessFields } from '../../src/observability/access-line.js'

function capture () {
  const chunks: string[] = []
  const sink = new Writable({ write (c, _e, cb) { chunks.push(String(c)); cb() } })
  const log = pino({ level: 'info', base: { service: 'sluice' } }, sink)
  const lines = () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  return { log, chunks, lines }
}
const fields = (over: Partial<AccessFields> = {}): AccessFields => ({ reqId: 'r1', route: 'api', upstream: 'origin', method: 'GET', url: '/x', status: 200, bytes: 5, ms: 1.25, cache: 'miss', ip: '127.0.0.1', err: undefined, ...over })
const tick = () => new Promise((resolve) => setImmediate(resolve))

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

test('batched lines reach the stream when a batch fills, and the rest on close(); nothing below the log level', async () => {
  const { log, lines, chunks } = capture()
  const a = new AccessLog(log, 4)
  for (let i = 0; i < 6; i++) a.write(fields({ reqId: `b${i}` }))
  await tick()
  assert.deepEqual(lines().map((l) => l.reqId), ['b0', 'b1', 'b2', 'b3'], 'one full batch')
  assert.equal(chunks.length, 1, 'in one write')
  a.close()
  await tick()
  assert.deepEqual(lines().map((l) => l.reqId), ['b0', 'b1', 'b2', 'b3', 'b4', 'b5'])
  log.level = 'warn'
  a.write(fields({ reqId: 'quiet' }))
  a.flush()
  await tick()
  assert.equal(lines().length, 6)
})
