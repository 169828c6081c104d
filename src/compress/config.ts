// Config schema of each route's `compression:` block.
import { Type, type Static } from '@sinclair/typebox'
import { Strict, Bytes, Bool, Ms } from '../config/types-helpers.js'

export const CompressionRouteSchema = Strict({
  enabled: Bool(false, 'Compress responses to clients that accept it'),
  minBytes: Bytes(1024, 'Smallest body that is compressed (a streamed body of unknown length is compressed)'),
  encodings: Type.Array(Type.Union([Type.Literal('br'), Type.Literal('gzip'), Type.Literal('deflate')]), {
    default: ['br', 'gzip'], uniqueItems: true, description: 'Encodings offered, in order of preference (deflate only when listed)'
  }),
  contentTypes: Type.Array(Type.String({ pattern: '^[A-Za-z0-9!#$&^_.+-]+/(\\*|[A-Za-z0-9!#$&^_.+-]+)$' }), {
    default: [], description: 'Extra compressible media types (type/subtype, or type/* for a whole family, without parameters), besides text/*, JSON, JavaScript, XML, SVG and +json/+xml'
  }),
  // Capped at 9: quality 10 and 11 cost 50 to 100 times quality 4 and belong to stored copies only.
  brQuality: Type.Integer({ minimum: 0, maximum: 9, default: 4, description: 'Brotli quality on the fly (uncached responses); 10 and 11 are too slow for a request path' }),
  gzipLevel: Type.Integer({ minimum: 1, maximum: 9, default: 6, description: 'gzip level on the fly (uncached responses)' }),
  storeBrQuality: Type.Integer({ minimum: 0, maximum: 11, default: 11, description: 'Brotli quality for the copy stored with a cache entry (encoded once, off the response path); bodies over 256 KiB use at most 9' }),
  storeGzipLevel: Type.Integer({ minimum: 1, maximum: 9, default: 9, description: 'gzip level for the copy stored with a cache entry' }),
  maxDecompressedBytes: Bytes(67108864, 'When an origin sends an encoded body that is stored, decoding it for identity clients stops here (compression-bomb bound)', 1),
  flushIdleMs: Ms(20, 'A body compressed on the fly is flushed at most this long after a chunk arrives, so streamed JSON and long polls keep moving; 0 never flushes early', 0),
  debugHeader: Bool(false, 'Add x-sluice-compression: <encoding> <original bytes> <ratio> to compressed cached responses (on the fly the sizes are known only at the end, so it is omitted)')
}, { description: 'Response compression' })
export type CompressionRouteConfig = Static<typeof CompressionRouteSchema>
