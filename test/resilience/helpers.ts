// Shared pieces of the resilience tests: a capturing logger, fresh metrics, counter reads,
// and a process-health guard (no unhandled rejection, no leaked process listener).
import { after, before } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { pino, type Logger } from 'pino'
import { createMetrics, type Metrics } from '../../src/observability/metrics.js'

export interface LogLine { level: number; msg: string; [k: string]: unknown }

export function captureLog (): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = []
  const dest = new Writable({
    write (chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as LogLine)
      cb()
    }
  })
  return { log: pino({ level: 'info' }, dest), lines }
}

export function freshMetrics (): Metrics {
  return createMetrics({ processMetrics: false })
}

/** The value of one labelled child of a counter or gauge (0 when never touched). */
export async function valueOf (metric: { get(): Promise<{ values: Array<{ value: number; labels: Record<string, string | number> }> }> }, labels: Record<string, string>): Promise<number> {
  const { values } = await metric.get()
  const v = values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val))
  return v?.value ?? 0
}

/**
 * Call at the top of a test file: fails the file when a promise rejection goes unhandled,
 * or when process listeners grew by the end.
 */
export function guardProcessHealth (): { rejections: unknown[] } {
  const rejections: unknown[] = []
  const onRejection = (reason: unknown) => { rejections.push(reason) }
  const events = ['unhandledRejection', 'uncaughtException', 'exit', 'SIGTERM', 'SIGINT', 'warning'] as const
  const counts = () => Object.fromEntries(events.map((e) => [e, process.listenerCount(e)]))
  // The test runner adds its own process listeners when it starts: take the baseline then.
  let baseline: Record<string, number> = {}
  before(() => {
    baseline = counts()
    process.on('unhandledRejection', onRejection)
  })
  after(async () => {
    // Let late settlements (timed-out Redis commands) surface first.
    await new Promise((resolve) => setTimeout(resolve, 50))
    process.off('unhandledRejection', onRejection)
    assert.deepEqual(rejections, [], 'no unhandled rejection')
    const now = counts()
    for (const e of events) assert.ok(now[e] <= baseline[e], `no leaked process listener for ${e}: ${baseline[e]} → ${now[e]}`)
  })
  return { rejections }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
