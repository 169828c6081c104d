// The thread that sends spans to the collector (src/observability/tracing.ts). The request
// thread serialises each batch with the OTel SDK's serializer and hands the bytes over; this
// thread posts them with the SDK's own OTLP/HTTP export delegate (its timeout, retries with
// backoff, bound on concurrent exports, and response handling), so no HTTP client code for the
// collector runs on the request thread.
//
// Why a thread: with the exporter on the request thread, its node:http client objects ran
// through the same Node stream and socket functions as the proxied requests, and every export
// (every few seconds) left those hot functions with wider type feedback. Measured with
// callgrind at sampleRatio 0.05 (bench/instr.mjs, 60,000 warm-up, 6,000 counted): off 223.5k
// instructions per pass-through request; spans kept but never exported 231.9k; spans
// serialised but not sent 233.4k; serialised and sent from the request thread 241.6k-243.9k.
import { parentPort, workerData } from 'node:worker_threads'
import { createOtlpHttpExportDelegate, convertLegacyHttpOptions } from '@opentelemetry/otlp-exporter-base/node-http'
import { ProtobufTraceSerializer, JsonTraceSerializer } from '@opentelemetry/otlp-transformer'
import type { TracingConfig } from './tracing.js'
/** request thread -> this thread */
export type ToWorker = { id: number, bytes: Uint8Array, spans: number } | { id: number, shutdown: true }
/** this thread -> request thread: ExportResultCode (0 success, 1 failure) */
export interface FromWorker { id: number, code: 0 | 1, error?: string }

/** The `tracing.otlp` config, as the request thread validated it. */
const cfg = workerData as TracingConfig['otlp']
const json = cfg.protocol === 'http/json'
const serializer = json ? JsonTraceSerializer : ProtobufTraceSerializer
interface Batch { bytes: Uint8Array, spans: number }
const delegate = createOtlpHttpExportDelegate<Batch, unknown>(
  convertLegacyHttpOptions({ url: cfg.url, headers: cfg.headers, timeoutMillis: cfg.timeoutMs }, 'TRACES', 'v1/traces', { 'Content-Type': json ? 'application/json' : 'application/x-protobuf' }),
  // The batch arrives serialised: the request thread ran the SDK's serializer.
  { serializeRequest: (b) => b.bytes, deserializeResponse: (d) => serializer.deserializeResponse(d) },
  'otlp_http_span_exporter',
  { name: 'span', countItems: (b) => b.spans },
  undefined
)

const port = parentPort
if (port === null) throw new Error('trace-export-worker.js runs as a worker thread')
port.on('message', (m: ToWorker) => {
  if ('shutdown' in m) {
    void delegate.shutdown().catch(() => {}).then(() => port.postMessage({ id: m.id, code: 0 } satisfies FromWorker))
    return
  }
  delegate.export({ bytes: m.bytes, spans: m.spans }, (r) => {
    port.postMessage({ id: m.id, code: r.code === 0 ? 0 : 1, error: r.error?.message } satisfies FromWorker)
  })
})
