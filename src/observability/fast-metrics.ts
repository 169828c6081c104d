// Counter and histogram families for the per-request path. prom-client's label children still
// validate and hash their labels on every call (about 1 µs each, several per request); these
// keep each child's values in a plain object bound once, and hand prom-client's Registry the
// same `get()` shape its own metrics produce, so /metrics, aggregation and tests are unchanged.
import type { Registry } from 'prom-client'

interface Value { labels: Record<string, string | number>; value: number; metricName?: string }
interface MetricData { name: string; help: string; type: 'counter' | 'histogram' | 'gauge'; values: Value[]; aggregator: 'sum' }

export class FastCounterChild {
  value = 0
  constructor (readonly labels: Record<string, string>) {}
  inc (n = 1): void { this.value += n }
}

export class FastCounter {
  readonly type = 'counter'
  readonly aggregator = 'sum'
  private readonly children = new Map<string, FastCounterChild>()
  constructor (readonly name: string, readonly help: string, readonly labelNames: readonly string[], registry: Registry) {
    registry.registerMetric(this as never)
  }

  labels (...values: string[]): FastCounterChild {
    const key = values.join('\u0000')
    let c = this.children.get(key)
    if (!c) {
      const labels: Record<string, string> = {}
      this.labelNames.forEach((n, i) => { labels[n] = values[i] })
      c = new FastCounterChild(labels)
      this.children.set(key, c)
    }
    return c
  }

  get (): MetricData {
    const values: Value[] = []
    for (const c of this.children.values()) values.push({ labels: c.labels, value: c.value })
    return { name: this.name, help: this.help, type: 'counter', values, aggregator: 'sum' }
  }

  reset (): void { this.children.clear() }
}

export class FastHistogramChild {
  /** counts[i]: observations in bucket i alone (not cumulative); the last is +Inf. */
  readonly counts: Float64Array
  sum = 0
  count = 0
  constructor (readonly labels: Record<string, string>, private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe (v: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && v > b[i]) i++
    this.counts[i]++
    this.sum += v
    this.count++
  }
}

export class FastHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly children = new Map<string, FastHistogramChild>()
  constructor (readonly name: string, readonly help: string, readonly labelNames: readonly string[], readonly buckets: readonly number[], registry: Registry) {
    registry.registerMetric(this as never)
  }

  labels (...values: string[]): FastHistogramChild {
    const key = values.join('\u0000')
    let c = this.children.get(key)
    if (!c) {
      const labels: Record<string, string> = {}
      this.labelNames.forEach((n, i) => { labels[n] = values[i] })
      c = new FastHistogramChild(labels, this.buckets)
      this.children.set(key, c)
    }
    return c
  }

  get (): MetricData {
    const values: Value[] = []
    for (const c of this.children.values()) {
      let cum = 0
      for (let i = 0; i < this.buckets.length; i++) {
        cum += c.counts[i]
        values.push({ labels: { le: this.buckets[i], ...c.labels }, value: cum, metricName: `${this.name}_bucket` })
      }
      values.push({ labels: { le: '+Inf', ...c.labels }, value: c.count, metricName: `${this.name}_bucket` })
      values.push({ labels: c.labels, value: c.sum, metricName: `${this.name}_sum` })
      values.push({ labels: c.labels, value: c.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' }
  }

  reset (): void { this.children.clear() }
}

export class FastGaugeChild {
  value = 0
  constructor (readonly labels: Record<string, string>) {}
  inc (): void { this.value++ }
  dec (): void { this.value-- }
  set (v: number): void { this.value = v }
}

/** A gauge read at scrape time: inc/dec on the request path are one integer add. */
export class FastGauge {
  readonly type = 'gauge'
  readonly aggregator = 'sum'
  private readonly children = new Map<string, FastGaugeChild>()
  constructor (readonly name: string, readonly help: string, readonly labelNames: readonly string[], registry: Registry) {
    registry.registerMetric(this as never)
  }

  labels (...values: string[]): FastGaugeChild {
    const key = values.join('\u0000')
    let c = this.children.get(key)
    if (!c) {
      const labels: Record<string, string> = {}
      this.labelNames.forEach((n, i) => { labels[n] = values[i] })
      c = new FastGaugeChild(labels)
      this.children.set(key, c)
    }
    return c
  }

  get (): MetricData {
    const values: Value[] = []
    for (const c of this.children.values()) values.push({ labels: c.labels, value: c.value })
    return { name: this.name, help: this.help, type: 'gauge', values, aggregator: 'sum' }
  }

  reset (): void { this.children.clear() }
}
