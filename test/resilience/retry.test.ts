// The retry policy as a table: methods, errors, statuses, body, Retry-After, jitter bounds,
// the budget. Pure decisions (no network): the breaker and budget tests cover the I/O.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Value } from '@sinclair/typebox/value'
import { errors } from 'undici'
import { RetryPolicy } from '../../src/resilience/retry.js'
import type { RetryContext } from '../../src/upstream/guard.js'
import { mapUpstreamError, isRetryableError } from '../../src/upstream/errors.js'
import { RetrySchema, type RetryConfig } from '../../src/resilience/config.js'
import { SluiceError } from '../../src/errors.js'
import { guardProcessHealth } from './helpers.js'

guardProcessHealth()

const cfg = (over: Partial<RetryConfig> = {}): RetryConfig => Value.Default(RetrySchema, { attempts: 2, backoffMs: 100, maxBackoffMs: 2000, budgetMinRetries: 1_000_000, ...over }) as RetryConfig
const base: RetryContext = { method: 'GET', status: 503, bodyReplayable: true, routeAllowsNonIdempotent: false }
const connRefused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })

test('decision table', () => {
  const rows: Array<[string, Partial<RetryContext>, number, boolean]> = [
    // [case, context over base, attempt, retried?]
    ['GET 503', {}, 1, true],
    ['GET 502', { status: 502 }, 1, true],
    ['GET 504', { status: 504 }, 2, true],
    ['past attempts', {}, 3, false],
    ['GET 500 is not in the default list', { status: 500 }, 1, false],
    ['GET 429 is not in the default list', { status: 429 }, 1, false],
    ['GET 200', { status: 200 }, 1, false],
    ['GET 404', { status: 404 }, 1, false],
    ['HEAD 503', { method: 'HEAD' }, 1, true],
    ['OPTIONS 503', { method: 'OPTIONS' }, 1, true],
    ['PUT 503', { method: 'PUT' }, 1, true],
    ['DELETE 503', { method: 'DELETE' }, 1, true],
    ['TRACE 503 (idempotent, RFC 9110 §9.2.2)', { method: 'TRACE' }, 1, true],
    ['POST 503', { method: 'POST' }, 1, false],
    ['PATCH 503', { method: 'PATCH' }, 1, false],
    ['POST 503, route opted in', { method: 'POST', routeAllowsNonIdempotent: true }, 1, true],
    ['GET with a streamed body', { bodyReplayable: false }, 1, false],
    ['GET after a response byte reached the client', { responseStarted: true }, 1, false],
    ['connect refused (raw code)', { status: undefined, error: connRefused }, 1, true],
    ['connect refused (SluiceError)', { status: undefined, error: new SluiceError('SLUICE_ERR_UPSTREAM_CONNECT') }, 1, true],
    ['reset before any byte', { status: undefined, error: new SluiceError('SLUICE_ERR_UPSTREAM_RESET') }, 1, true],
    ['POST reset', { method: 'POST', status: undefined, error: new SluiceError('SLUICE_ERR_UPSTREAM_RESET') }, 1, false],
    ['timeout is not retried', { status: undefined, error: new SluiceError('SLUICE_ERR_UPSTREAM_TIMEOUT') }, 1, false],
    ['client abort is not retried', { status: undefined, error: new DOMException('gone', 'AbortError') }, 1, false],
    ['Retry-After within maxBackoffMs', { retryAfter: '1' }, 1, true],
    ['Retry-After beyond maxBackoffMs', { retryAfter: '5' }, 1, false],
    ['no time left before the deadline', { remainingMs: 0 }, 1, false]
  ]
  for (const [name, over, attempt, retried] of rows) {
    const p = new RetryPolicy(cfg())
    p.noteAttempt()
    const d = p.delayMs(attempt, { ...base, ...over })
    assert.equal(d !== null, retried, name)
  }
})

test('a configured status list replaces the default', () => {
  const p = new RetryPolicy(cfg({ statuses: [500, 429] }))
  assert.notEqual(p.delayMs(1, { ...base, status: 500 }), null)
  assert.notEqual(p.delayMs(1, { ...base, status: 429 }), null)
  assert.equal(p.delayMs(1, { ...base, status: 503 }), null)
})

test('attempts: 0 (the default) never retries', () => {
  const p = new RetryPolicy(Value.Default(RetrySchema, {}) as RetryConfig)
  assert.equal(p.delayMs(1, base), null)
})

test('full jitter: delays spread over [0, min(maxBackoffMs, backoffMs * 2^(n-1))]', () => {
  const p = new RetryPolicy(cfg({ attempts: 10, backoffMs: 100, maxBackoffMs: 1000 }))
  const caps = [100, 200, 400, 800, 1000, 1000]
  for (const [i, cap] of caps.entries()) {
    const seen: number[] = []
    for (let k = 0; k < 200; k++) {
      const d = p.delayMs(i + 1, base)
      assert.ok(d !== null && d >= 0 && d <= cap, `attempt ${i + 1}: ${d} within [0, ${cap}]`)
      seen.push(d)
    }
    assert.ok(Math.min(...seen) < cap / 4 && Math.max(...seen) > cap * 3 / 4, `attempt ${i + 1} spreads over its range`)
  }
  const low = new RetryPolicy(cfg({ attempts: 3 }), undefined, () => 0)
  const high = new RetryPolicy(cfg({ attempts: 3 }), undefined, () => 0.999999)
  assert.equal(low.delayMs(3, base), 0)
  assert.equal(high.delayMs(3, base), 400)
})

test('Retry-After is honoured: the delay is at least what the upstream asked', () => {
  const p = new RetryPolicy(cfg(), undefined, () => 0)
  assert.equal(p.delayMs(1, { ...base, retryAfter: '2' }), 2000)
  const date = new Date(Date.now() + 1500).toUTCString()
  const d = p.delayMs(1, { ...base, retryAfter: date })
  assert.ok(d !== null && d > 0 && d <= 1500)
})

test('the retry budget keeps retries within budgetPercent of first attempts (plus budgetMinRetries)', () => {
  let counted = 0
  const p = new RetryPolicy(cfg({ attempts: 1, budgetPercent: 20, budgetMinRetries: 3 }), () => { counted++ })
  let retries = 0
  for (let i = 0; i < 100; i++) {
    p.noteAttempt() // the first attempt
    if (p.delayMs(1, base) !== null) { retries++; p.noteAttempt(); p.noteRetrySent() }
  }
  assert.equal(retries, 20, '20% of 100 first attempts')
  assert.equal(counted, 20, 'each retry sent is counted once')
  const quiet = new RetryPolicy(cfg({ attempts: 1, budgetPercent: 20, budgetMinRetries: 3 }))
  let q = 0
  for (let i = 0; i < 5; i++) { quiet.noteAttempt(); if (quiet.delayMs(1, base) !== null) { q++; quiet.noteAttempt() } }
  assert.equal(q, 3, 'a quiet upstream still gets budgetMinRetries')
})

// What undici and the resolver throw, mapped the way the upstream stage maps them.
const dnsRaw = Object.assign(new Error('getaddrinfo ENOTFOUND nope.invalid'), { code: 'ENOTFOUND', hostname: 'nope.invalid' })
const dnsMapped = mapUpstreamError(dnsRaw, 'api', false)
const connectTimeout = mapUpstreamError(new errors.ConnectTimeoutError(), 'api', false)
const headersTimeout = mapUpstreamError(new errors.HeadersTimeoutError(), 'api', false)
const protocol = mapUpstreamError(new errors.HTTPParserError('Response does not match the HTTP/1.1 protocol (Invalid status code)'), 'api', false)

test('the mapped errors keep their public codes', () => {
  assert.equal(dnsMapped.code, 'SLUICE_ERR_UPSTREAM_DNS')
  assert.equal(connectTimeout.code, 'SLUICE_ERR_UPSTREAM_TIMEOUT')
  assert.equal(headersTimeout.code, 'SLUICE_ERR_UPSTREAM_TIMEOUT')
  assert.equal(protocol.code, 'SLUICE_ERR_UPSTREAM_PROTOCOL')
})

test('DNS failures and connect timeouts are retried; header timeouts and protocol errors are not', () => {
  const rows: Array<[string, unknown, boolean]> = [
    ['DNS failure (SluiceError)', dnsMapped, true],
    ['DNS failure (raw ENOTFOUND)', dnsRaw, true],
    ['DNS failure (raw EAI_AGAIN)', Object.assign(new Error('getaddrinfo EAI_AGAIN x'), { code: 'EAI_AGAIN' }), true],
    ['connect timeout (SluiceError)', connectTimeout, true],
    ['connect timeout (raw undici error)', new errors.ConnectTimeoutError(), true],
    ['no response headers before the deadline', headersTimeout, false],
    ['body idle timeout', mapUpstreamError(new errors.BodyTimeoutError(), 'api', false), false],
    ['protocol error', protocol, false],
    ['protocol error (bare SluiceError)', new SluiceError('SLUICE_ERR_UPSTREAM_PROTOCOL'), false]
  ]
  for (const [name, error, retried] of rows) {
    const p = new RetryPolicy(cfg())
    p.noteAttempt()
    const d = p.delayMs(1, { ...base, status: undefined, error })
    assert.equal(d !== null, retried, name)
    if (retried) assert.ok(d !== null && d >= 0 && d <= 100, `${name}: a delay within the first backoff`)
    assert.equal(isRetryableError(error), retried, `${name}: isRetryableError agrees with the policy`)
  }
  // Non-idempotent methods stay unretried on these errors too.
  const p = new RetryPolicy(cfg())
  assert.equal(p.delayMs(1, { ...base, method: 'POST', status: undefined, error: dnsMapped }), null, 'POST after a DNS failure')
  assert.equal(p.delayMs(1, { ...base, method: 'POST', status: undefined, error: connectTimeout }), null, 'POST after a connect timeout')
})

test('a connect timeout is told apart by its cause, not by the words in the message', () => {
  // An upstream whose name contains "connect": its header timeout is still not a connect timeout.
  const named = mapUpstreamError(new errors.HeadersTimeoutError(), 'connect-api', false)
  assert.match(named.message, /connect/)
  assert.equal(isRetryableError(named), false)
  assert.equal(new RetryPolicy(cfg()).delayMs(1, { ...base, status: undefined, error: named }), null)
  // And a connect timeout is retryable whatever its upstream is called.
  assert.equal(isRetryableError(mapUpstreamError(new errors.ConnectTimeoutError(), 'slow', false)), true)
  // Node's own socket timeout code maps to a connect timeout too.
  assert.equal(isRetryableError(mapUpstreamError(Object.assign(new Error('connect ETIMEDOUT 127.0.0.1:9'), { code: 'ETIMEDOUT' }), 'x', false)), true)
})
