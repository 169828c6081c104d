import { test } from 'node:test'
import assert from 'node:assert/strict'
import { normalisePath, removeDotSegments } from '../../src/stages/path.js'
import { withoutPathParams } from '../../src/stages/route.js'

test('plain paths come back unchanged', () => {
  for (const p of ['/', '/api/x', '/a-b_c~d.e/f', '/x.json']) assert.equal(normalisePath(p), p)
})

test('dot segments are removed, also when percent-encoded, and never climb above the root', () => {
  const cases: [string, string][] = [
    ['/public/../admin', '/admin'],
    ['/public/%2e%2e/admin', '/admin'],
    ['/public/%2E%2e/admin', '/admin'],
    ['/public/.%2e/admin', '/admin'],
    ['/a/./b/.', '/a/b/'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/a/b/..', '/a/'],
    ['/%61pi/x', '/api/x']
  ]
  for (const [input, out] of cases) assert.equal(normalisePath(input), out, input)
  assert.equal(removeDotSegments('/a/../../b'), '/b')
})

test('reserved characters stay encoded with upper-case hex', () => {
  assert.equal(normalisePath('/a%3fb/c%2a'), '/a%3Fb/c%2A')
})

test('NUL, invalid percent-encoding, encoded slashes and backslashes are rejected', () => {
  for (const p of ['/a%00b', '/a%zz', '/a%2', '/a%2fb', '/a%2Fb', '/a%5cb', '/a\\b', 'relative']) {
    assert.throws(() => normalisePath(p), (e: Error & { code?: string }) => e.code === 'SLUICE_ERR_BAD_PATH', p)
  }
  assert.equal(normalisePath('/a%2fb', true), '/a%2Fb')
})

test('withoutPathParams drops each segment\'s ; parameters and nothing else', () => {
  assert.equal(withoutPathParams('/private;a/x'), '/private/x')
  assert.equal(withoutPathParams('/a;b;c/d;e'), '/a/d')
  assert.equal(withoutPathParams('/a;b/'), '/a/')
  assert.equal(withoutPathParams(';x/a'), '/a')
  // A segment that is only parameters goes with its slash, as a servlet origin reads it.
  assert.equal(withoutPathParams('/;x/private/y'), '/private/y')
  assert.equal(withoutPathParams('/;/private/y'), '/private/y')
  assert.equal(withoutPathParams('/private/;x/y'), '/private/y')
  assert.equal(withoutPathParams('/a/;x/;y/b'), '/a/b')
  assert.equal(withoutPathParams('/private/;x'), '/private/')
  assert.equal(withoutPathParams('/a/b'), '/a/b')
})
