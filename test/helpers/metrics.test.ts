// The metrics helper's parser and matching rule (name exact, labels a subset, values summed).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseSamples, sampleSum } from './metrics.js'

const TEXT = `# HELP sluice_x_total A counter.
# TYPE sluice_x_total counter
sluice_x_total{upstream="a",to="open"} 2
sluice_x_total{upstream="a",to="closed"} 3
sluice_x_total{upstream="b",to="open"} 5 1700000000000
sluice_x_total_extra{upstream="a"} 100
sluice_y 7
nodejs_lag Nan
nodejs_max +Inf
sluice_z{path="a \\"quoted\\", {odd} value",le="+Inf"} 1.5
`

test('parseSamples reads names, labels (with escapes, commas and braces in values), values and ignores timestamps', () => {
  const s = parseSamples(TEXT)
  assert.equal(s.length, 8)
  assert.ok(Number.isNaN(s[5].value))
  assert.equal(s[6].value, Infinity)
  assert.deepEqual(s[7], { name: 'sluice_z', labels: { path: 'a "quoted", {odd} value', le: '+Inf' }, value: 1.5 })
  assert.deepEqual(s[2], { name: 'sluice_x_total', labels: { upstream: 'b', to: 'open' }, value: 5 })
  assert.deepEqual(s[4], { name: 'sluice_y', labels: {}, value: 7 })
})

test('sampleSum: exact name, label subset, matching samples summed, 0 when none match', () => {
  assert.equal(sampleSum(TEXT, 'sluice_x_total', { upstream: 'a' }), 5)
  assert.equal(sampleSum(TEXT, 'sluice_x_total', { upstream: 'a', to: 'open' }), 2)
  assert.equal(sampleSum(TEXT, 'sluice_x_total'), 10)
  assert.equal(sampleSum(TEXT, 'sluice_x_total', { upstream: 'c' }), 0)
  assert.equal(sampleSum(TEXT, 'sluice_x', {}), 0)
  assert.equal(sampleSum(TEXT, 'sluice_y'), 7)
})
