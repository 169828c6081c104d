import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Registry, Histogram, Counter } from 'prom-client'
import { FastCounter, FastHistogram } from '../../src/observability/fast-metrics.js'

test('the lean counter and histogram print exactly what prom-client\'s own would', async () => {
  const a = new Registry()
  const b = new Registry()
  const buckets = [0.001, 0.01, 0.1, 1]
  const h1 = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['route', 'cache'], buckets, registers: [a] })
  const h2 = new FastHistogram('x_seconds', 'h', ['route', 'cache'], buckets, b)
  const c1 = new Counter({ name: 'y_total', help: 'c', labelNames: ['route'], registers: [a] })
  const c2 = new FastCounter('y_total', 'c', ['route'], b)
  for (const v of [0.0005, 0.001, 0.002, 0.5, 3, 0.05]) {
    h1.labels('r1', 'hit').observe(v); h2.labels('r1', 'hit').observe(v)
    h1.labels('r2', 'miss').observe(v * 2); h2.labels('r2', 'miss').observe(v * 2)
  }
  c1.labels('r1').inc(); c1.labels('r1').inc(2); c2.labels('r1').inc(); c2.labels('r1').inc(2)
  assert.equal(await b.metrics(), await a.metrics())
})
