// OpenTelemetry tracing (config `tracing:`), with the OTel JS SDK: off when the key is absent
// (then requests do nothing more than one null check). When on: the client's W3C traceparent
// and tracestate are continued (parent-based sampling, sampleRatio for new traces), each
// request gets a SERVER span (route, cache result, upstream, status, retries as attributes),
// each upstream attempt a CLIENT child span, and the upstream gets a traceparent whose parent
// is that child span. Cache hits answered by the fast path get a span too. Spans leave through
// a BatchSpanProcessor (bounded queue: past maxQueueSize spans are dropped, never waited for);
// each batch is serialised here and sent by the SDK's OTLP/HTTP export delegate on a thread of
// its own (trace-export-worker.ts): a dead or slow collector never slows or fails a request.
import { trace, SpanKind, SpanStatusCode, ROOT_CONTEXT, defaultTextMapGetter, defaultTextMapSetter, type Span, type Tracer } from '@opentelemetry/api'
import { W3CTraceContextPropagator, ExportResultCode, type ExportResult } from '@opentelemetry/core'
import { AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { ProtobufTraceSerializer, JsonTraceSerializer } from '@opentelemetry/otlp-transformer'
import { Worker } from 'node:worker_threads'
import type { FromWorker, ToWorker } from './trace-export-worker.js'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { Type, type Static } from '@sinclair/typebox'
import type { Logger } from 'pino'
import { Strict, Ms } from '../config/types-helpers.js'
import { methodLabel } from './metrics.js'

export const TracingSchema = Strict({
  otlp: Strict({
    url: Type.String({ pattern: '^https?://', description: 'OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces' }),
    headers: Type.Record(Type.String(), Type.String(), { default: {}, description: 'Headers sent with every export (an API key)' }),
    timeoutMs: Ms(5000, 'Longest time one export may take', 1),
    // Protobuf is OTLP's default, and costs less per span: the SDK writes it straight from the
    // spans, where JSON first builds an object tree and then stringifies it.
    protocol: Type.Union([Type.Literal('http/protobuf'), Type.Literal('http/json')], { default: 'http/protobuf', description: 'OTLP/HTTP encoding: http/protobuf (the OTLP default, cheaper per span) or http/json' })
  }, { description: 'Where spans are sent' }),
  sampleRatio: Type.Number({ minimum: 0, maximum: 1, default: 0.05, description: 'Share of new traces sampled; a client\'s sampled traceparent is always followed (parent-based)' }),
  serviceName: Type.String({ minLength: 1, default: 'sluice', description: 'service.name of the spans' }),
  // An export costs about the same for 20 spans as for 512 (one HTTP request and its JSON), so a
  // busy gateway exports full batches at once and a quiet one every exportDelayMs. The SDK's
  // default, 5 s: at 1 s, a gateway sampling 50 spans a second paid for one export per 50 spans.
  exportDelayMs: Ms(5000, 'Longest time a span waits for its batch (512 spans) to fill before it is exported', 1),
  maxQueueSize: Type.Integer({ minimum: 1, default: 2048, description: 'Spans held for export at most; more are dropped (memory stays bounded when the collector is down)' })
}, { description: 'OpenTelemetry tracing; absent means off' })
export type TracingConfig = Static<typeof TracingSchema>

type HeaderBag = Record<string, string | string[] | undefined>

const propagator = new W3CTraceContextPropagator()

/** W3C Trace Context §3.2: version-traceid-parentid-flags, lower-case hex; a later version may append fields. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-[^]*)?$/
const ZERO_TRACE = '0'.repeat(32)
const ZERO_SPAN = '0'.repeat(16)

/** The traceparent when it is valid, else null (then it is treated as absent). */
export function validTraceparent (v: unknown): string | null {
  if (typeof v !== 'string') return null
  const m = TRACEPARENT.exec(v)
  if (m === null || m[1] === 'ff' || m[2] === ZERO_TRACE || m[3] === ZERO_SPAN) return null
  if (m[1] === '00' && v.length !== 55) return null // version 00 has exactly four fields
  return v
}

/**
 * The BatchSpanProcessor's exporter: each batch is serialised here with the SDK's OTLP
 * serializer (protobuf or JSON) and its bytes are handed to a worker thread, which posts them
 * with the SDK's OTLP/HTTP export delegate (src/observability/trace-export-worker.ts: why a
 * thread, with the figures). The batch's result comes back to the processor as usual; the
 * request thread never waits for the collector.
 */
class ThreadExporter implements SpanExporter {
  private readonly worker: Worker
  private readonly waiting = new Map<number, (r: ExportResult) => void>()
  private nextId = 1
  private dead = false
  private readonly serializer: typeof ProtobufTraceSerializer

  constructor (otlp: TracingConfig['otlp'], private readonly log: Logger) {
    this.serializer = otlp.protocol === 'http/json' ? JsonTraceSerializer : ProtobufTraceSerializer
    this.worker = new Worker(new URL('./trace-export-worker.js', import.meta.url), { workerData: otlp })
    this.worker.unref()
    this.worker.on('message', (m: FromWorker) => {
      const done = this.waiting.get(m.id)
      if (done === undefined) return
      this.waiting.delete(m.id)
      done(m.code === 0 ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: new Error(m.error ?? 'export failed') })
    })
    // A thread that fails (it should not) loses its batches; requests are never affected.
    const failAll = (why: string): void => {
      if (this.dead) return
      this.dead = true
      for (const done of this.waiting.values()) done({ code: ExportResultCode.FAILED, error: new Error(why) })
      this.waiting.clear()
    }
    this.worker.on('error', (e) => { this.log.error({ err: e.message }, 'tracing: the span export thread failed; spans are no longer exported'); failAll(e.message) })
    this.worker.on('exit', () => failAll('span export thread stopped'))
  }

  export (spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    if (this.dead) { done({ code: ExportResultCode.FAILED, error: new Error('span export thread stopped') }); return }
    const bytes = this.serializer.serializeRequest(spans)
    if (bytes === undefined) { done({ code: ExportResultCode.FAILED, error: new Error('spans could not be serialised') }); return }
    const id = this.nextId++
    this.waiting.set(id, done)
    // The serializer writes each batch into a new array of its own, so its memory moves to the
    // thread instead of being copied (a Node Buffer may share a pool: that one is copied).
    this.worker.postMessage({ id, bytes, spans: spans.length } satisfies ToWorker, Buffer.isBuffer(bytes) ? [] : [bytes.buffer as ArrayBuffer])
  }

  /** Waits for the batches in flight (the worker's own export timeout bounds that), then stops the thread. */
  async shutdown (): Promise<void> {
    if (this.dead) return
    const id = this.nextId++
    await new Promise<void>((resolve) => {
      this.waiting.set(id, () => resolve())
      this.worker.postMessage({ id, shutdown: true } satisfies ToWorker)
    })
    this.dead = true
    await this.worker.terminate()
  }

  async forceFlush (): Promise<void> {}
}

/** One provider for one tracing config; a reload that changes it makes a new one. */
class Active {
  readonly tracer: Tracer
  private readonly provider: BasicTracerProvider
  readonly ratio: number
  private readonly exporter: ThreadExporter
  constructor (readonly key: string, cfg: TracingConfig, log: Logger) {
    this.ratio = cfg.sampleRatio
    const exporter = this.exporter = new ThreadExporter(cfg.otlp, log)
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': cfg.serviceName }),
      // The ratio decision for new traces is taken in Tracing.server() before any span exists.
      sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
      spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize: cfg.maxQueueSize, maxExportBatchSize: Math.min(512, cfg.maxQueueSize), scheduledDelayMillis: cfg.exportDelayMs, exportTimeoutMillis: cfg.otlp.timeoutMs })]
    })
    this.tracer = this.provider.getTracer('sluice')
  }

  /**
   * The SDK shuts its exporter down only after a last flush that succeeds: with the collector
   * down, the export thread was left running (one more per reload that changed `tracing`, and
   * a process that could not exit). The exporter is stopped here either way.
   */
  async shutdown (): Promise<void> {
    await this.provider.shutdown().catch(() => {})
    await this.exporter.shutdown()
  }
}

export interface RequestSpanInfo { route: string, upstream?: string, status: number, cache: string, retries: number, method: string, url?: string, error?: string }

/**
 * How long a provider a reload replaced keeps taking the spans it started: requests in flight
 * at the reload end their SERVER spans on it (a span ended on a provider already shut down is
 * dropped, and its trace would reach the collector without its root). Longer streams lose
 * theirs; close() shuts every provider down at once, flushing what they hold.
 */
const RETIRED_GRACE_MS = 30_000

export class Tracing {
  private active: Active | null = null
  private readonly retired = new Map<Active, NodeJS.Timeout>()
  constructor (private readonly log: Logger) {}

  /** Apply a config's `tracing` (null: off). Cheap when unchanged. */
  configure (cfg: TracingConfig | undefined): void {
    const key = cfg ? JSON.stringify(cfg) : ''
    if ((this.active?.key ?? '') === key) return
    const old = this.active
    this.active = cfg ? new Active(key, cfg, this.log) : null
    if (old) this.retire(old)
    this.log.info(cfg ? { url: cfg.otlp.url, sampleRatio: cfg.sampleRatio } : {}, cfg ? 'tracing on' : 'tracing off')
  }

  get on (): boolean { return this.active !== null }

  /** The request's SERVER span, continuing the client's traceparent (null when tracing is off). */
  server (headers: HeaderBag, method: string, startTime?: number): Span | null {
    const a = this.active
    if (a === null) return null
    // The sampling decision first, so an unsampled request makes no span at all: a client's
    // traceparent decides (its sampled flag), else sampleRatio. An unsampled client trace
    // reaches the upstream as the client sent it.
    // An invalid traceparent (W3C: version ff, zero ids, upper case, wrong length, two header
    // lines joined) is ignored, as if absent: it neither forces nor suppresses sampling.
    const tp = validTraceparent(headers.traceparent)
    if (tp !== null) {
      if ((parseInt(tp.slice(53, 55), 16) & 1) === 0) return null
    } else if (a.ratio < 1 && Math.random() >= a.ratio) return null
    const parent = tp === null ? ROOT_CONTEXT : propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter)
    // OTel HTTP conventions: a method outside the known set is _OTHER (the span is named HTTP),
    // the client's own kept in http.request.method_original. An HTTP/2 client may send any token
    // as :method, and each would otherwise be a span name of its own in the tracing backend.
    const m = methodLabel(method)
    const attributes = m === method ? { 'http.request.method': m } : { 'http.request.method': m, 'http.request.method_original': method }
    return a.tracer.startSpan(m === '_OTHER' ? 'HTTP' : m, { kind: SpanKind.SERVER, startTime, attributes }, parent)
  }

  /** A CLIENT span for one upstream attempt; its context goes upstream as traceparent. */
  attempt (parent: Span, upstream: string, target: string, attempt: number, headers: Record<string, string | string[]>): Span | null {
    const a = this.active
    if (a === null) return null
    const span = a.tracer.startSpan(`upstream ${upstream}`, { kind: SpanKind.CLIENT, attributes: { 'sluice.upstream': upstream, 'server.address': target, 'sluice.attempt': attempt } }, trace.setSpan(ROOT_CONTEXT, parent))
    delete headers.traceparent
    delete headers.tracestate
    propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, defaultTextMapSetter)
    return span
  }

  static endAttempt (span: Span, status: number, error?: string): void {
    if (status > 0) span.setAttribute('http.response.status_code', status)
    if (error !== undefined || status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: error })
    span.end()
  }

  /** Close the SERVER span with what happened. */
  static finish (span: Span, info: RequestSpanInfo): void {
    const m = methodLabel(info.method)
    span.updateName(`${m === '_OTHER' ? 'HTTP' : m} ${info.route}`)
    span.setAttributes({ 'http.route': info.route, 'http.response.status_code': info.status, 'sluice.cache': info.cache, 'sluice.retries': info.retries })
    if (info.upstream !== undefined) span.setAttribute('sluice.upstream', info.upstream)
    // OTel HTTP conventions: url.path is the path alone, the query string is url.query (a
    // backend groups and searches by path; the query held tokens and ids that split it).
    if (info.url !== undefined) {
      const q = info.url.indexOf('?')
      if (q === -1) span.setAttribute('url.path', info.url)
      else span.setAttributes({ 'url.path': info.url.slice(0, q), 'url.query': info.url.slice(q + 1) })
    }
    if (info.error !== undefined) span.setAttribute('error.type', info.error)
    if (info.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: info.error })
    span.end()
  }

  /** Shut a replaced provider down once the requests in flight at the reload are likely done. */
  private retire (old: Active): void {
    const t = setTimeout(() => { this.retired.delete(old); void old.shutdown() }, RETIRED_GRACE_MS)
    t.unref()
    this.retired.set(old, t)
  }

  async close (): Promise<void> {
    const a = this.active
    this.active = null
    const old = [...this.retired]
    this.retired.clear()
    for (const [, t] of old) clearTimeout(t)
    await Promise.all([...(a ? [a] : []), ...old.map(([r]) => r)].map((p) => p.shutdown()))
  }
}
