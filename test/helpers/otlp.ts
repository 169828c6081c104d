// A small OTLP/HTTP trace receiver for tests: it decodes what the exporter sends (protobuf, or
// JSON) into spans with hex ids, so tests can check parent/child ids and attributes.
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'

export interface OtlpSpan { traceId: string, spanId: string, parentSpanId?: string, name: string, kind: number, attributes: { key: string, value: Record<string, unknown> }[] }

/** Protobuf wire format, enough of it for OTLP traces: each field as [number, value] (varints as numbers, length-delimited as bytes). */
function fields (buf: Buffer): [number, number | Buffer][] {
  const out: [number, number | Buffer][] = []
  let i = 0
  const varint = (): number => { let v = 0; let m = 1; for (;;) { const b = buf[i++]; v += (b & 0x7f) * m; if (b < 0x80) return v; m *= 128 } }
  while (i < buf.length) {
    const tag = varint()
    const wire = tag & 7
    if (wire === 0) out.push([tag >>> 3, varint()])
    else if (wire === 1) { out.push([tag >>> 3, buf.subarray(i, i + 8)]); i += 8 } else if (wire === 5) { out.push([tag >>> 3, buf.subarray(i, i + 4)]); i += 4 } else if (wire === 2) { const n = varint(); out.push([tag >>> 3, buf.subarray(i, i + n)]); i += n } else throw new Error(`wire type ${wire}`)
  }
  return out
}
const sub = (f: [number, number | Buffer][], n: number): Buffer[] => f.filter(([k, v]) => k === n && Buffer.isBuffer(v)).map(([, v]) => v as Buffer)

/** An OTLP/protobuf ExportTraceServiceRequest, as the JSON form's spans (ids in hex). */
function decodeProtobuf (body: Buffer): OtlpSpan[] {
  const spans: OtlpSpan[] = []
  for (const rs of sub(fields(body), 1)) {
    for (const ss of sub(fields(rs), 2)) {
      for (const sp of sub(fields(ss), 2)) {
        const f = fields(sp)
        const attributes = sub(f, 9).map((kv) => {
          const kf = fields(kv)
          const [key] = sub(kf, 1)
          const vf = fields(sub(kf, 2)[0] ?? Buffer.alloc(0))
          const [n, v] = vf[0] ?? [1, Buffer.alloc(0)]
          // AnyValue: 1 string, 2 bool, 3 int.
          const value = n === 1 ? { stringValue: (v as Buffer).toString() } : n === 2 ? { boolValue: v === 1 } : { intValue: v }
          return { key: key.toString(), value }
        })
        const parent = sub(f, 4)[0]
        spans.push({
          traceId: sub(f, 1)[0].toString('hex'),
          spanId: sub(f, 2)[0].toString('hex'),
          ...(parent !== undefined && parent.length > 0 ? { parentSpanId: parent.toString('hex') } : {}),
          name: sub(f, 5)[0]?.toString() ?? '',
          kind: Number(f.find(([k]) => k === 6)?.[1] ?? 0),
          attributes
        })
      }
    }
  }
  return spans
}

/** A collector: decodes OTLP trace exports (protobuf, or JSON) and keeps every span and content type. */
/** `closers` gets the receiver's close. */
export async function receiver (closers: Array<() => Promise<unknown>>): Promise<{ url: string, spans: OtlpSpan[], types: string[], server: Server }> {
  const spans: OtlpSpan[] = []
  const types: string[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const type = String(req.headers['content-type'])
      types.push(type)
      const raw = Buffer.concat(chunks)
      if (type === 'application/x-protobuf') spans.push(...decodeProtobuf(raw))
      else {
        const body = JSON.parse(raw.toString()) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] }
        for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans)
      }
      res.writeHead(200, { 'content-type': type === 'application/x-protobuf' ? type : 'application/json' })
      res.end(type === 'application/x-protobuf' ? '' : '{}')
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  closers.push(() => new Promise((resolve) => server.close(resolve)))
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/traces`, spans, types, server }
}

export const attr = (s: OtlpSpan, k: string): unknown => { const a = s.attributes.find((x) => x.key === k); return a ? Object.values(a.value)[0] : undefined }
export const hex = (id: string): string => /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex')

