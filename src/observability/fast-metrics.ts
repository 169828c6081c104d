// Counter, gauge and histogram families for the per-request path. prom-client's label children still
// validate and hash their labels on every call (about 1 µs each, several per request); these
// keep each child's values in a plain object bound once, and hand prom-client's Registry the
// same `get()` shape its own metrics produce, so /metrics, aggregation and tests are unchanged.
import type { Registry } from 'prom-client'

interface Value { labels: Record<string, string | number>; value: number; metricName?: string }
interface MetricData { name: string; help: string; type: 'counter' | 'histogram' | 'gauge'; values: Value[]; aggregator: 'sum' }

/** A family of children by label values, each bound once (what prom-client's labels() would hash per call). */
abstract class Family<C extends { labels: Record<string, string> }> {
  readonly aggregator = 'sum'
  protected readonly children = new Map<string, C>()
  constructor (readonly name: string, readonly help: string, readonly labelNames: readonly string[], registry: Registry) {
    registry.registerMetric(this as never)
  }

  protected abstract make (labels: Record<string, string>): C

  labels (...values: string[]): C {
    const key = values.join('\u0000')
    let c = this.children.get(key)
    if (!c) {
      const labels: Record<string, string> = {}
      this.labelNames.forEach((n, i) => { labels[n] = values[i] })
      c = this.make(labels)
      this.children.set(key, c)
    }
    return c
  }

  reset (): void { this.children.clear() }

  /** The `get()` of a family whose children hold one value each (counters, gauges). */
  protected values (type: 'counter' | 'gauge'): MetricData {
    const values: Value[] = []
    for (const c of this.children.values()) values.push({ labels: c.labels, value: (c as unknown as { value: number }).value })
    return { name: this.name, help: this.help, type, values, aggregator: 'sum' }
  }
}

export class FastCounterChild {
  value = 0
  constructor (readonly labels: Record<string, string>) {}
  inc (n = 1): void { this.value += n }
}

export class FastCounter extends Family<FastCounterChild> {
  readonly type = 'counter'
  protected make (labels: Record<string, string>): FastCounterChild { return new FastCounterChild(labels) }

  get (): MetricData { return this.values('counter') }
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

export class FastHistogram extends Family<FastHistogramChild> {
  readonly type = 'histogram'
  constructor (name: string, help: string, labelNames: readonly string[], readonly buckets: readonly number[], registry: Registry) {
    super(name, help, labelNames, registry)
  }

  protected make (labels: Record<string, string>): FastHistogramChild { return new FastHistogramChild(labels, this.buckets) }

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

}

export class FastGaugeChild {
  value = 0
  constructor (readonly labels: Record<string, string>) {}
  inc (): void { this.value++ }
  dec (): void { this.value-- }
  set (v: number): void { this.value = v }
}

/** A gauge read at scrape time: inc/dec on the request path are one integer add. */
export class FastGauge extends Family<FastGaugeChild> {
  readonly type = 'gauge'
  protected make (labels: Record<string, string>): FastGaugeChild { return new FastGaugeChild(labels) }

  get (): MetricData { return this.values('gauge') }
}
