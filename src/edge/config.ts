// Config schemas of the edge listener: TLS termination and HTTP/2 on the proxy port
// (listen.tls, listen.http2), the HTTP/2 abuse limits and the slow-client request-body rule
// (server.http2, server.requestBodyRate). Cleartext HTTP/1.1 stays the default.
import { Type, type Static } from '@sinclair/typebox'
import { Strict, Ms, Bool } from '../config/types-helpers.js'

export const ListenTlsSchema = Strict({
  certFile: Type.String({ minLength: 1, description: 'PEM certificate chain (leaf first) served on the proxy port' }),
  keyFile: Type.String({ minLength: 1, description: 'PEM private key of the certificate' }),
  minVersion: Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], { default: 'TLSv1.2', description: 'Oldest TLS version accepted (a reload applies a change to new connections)' }),
  caFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM CA certificates for client-certificate authentication: with it, a client must present a certificate they signed' })),
  handshakeTimeoutMs: Ms(10000, 'A TLS handshake not finished in this time is dropped; so is an h2 connection whose first valid SETTINGS frame has not arrived by then', 1)
}, { description: 'HTTPS on the proxy port. The pair is reloaded (for new connections) on SIGHUP, /admin/reload and when either file changes' })
export type ListenTlsConfig = Static<typeof ListenTlsSchema>

export const Http2Schema = Strict({
  maxConcurrentStreams: Type.Integer({ minimum: 1, maximum: 10000, default: 100, description: 'Streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS)' }),
  maxResetsPerSecond: Type.Integer({ minimum: 1, default: 200, description: 'Streams a client may cancel (RST_STREAM) per second on one connection; more closes it with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487)' }),
  idleTimeoutMs: Ms(120000, 'An HTTP/2 connection with no open stream for this long is closed with GOAWAY', 1)
}, { description: 'HTTP/2 limits of the proxy port (listen.http2); the header list is bounded by server.maxHeaderBytes' })
export type Http2Config = Static<typeof Http2Schema>

export const RequestBodyRateSchema = Strict({
  minBytesPerSecond: Type.Integer({ minimum: 0, default: 240, description: 'Slowest average upload accepted after graceMs; slower gets 408 and the upstream request is aborted; 0 disables' }),
  graceMs: Ms(10000, 'Time an upload may take before its rate is checked'),
  maxIdleMs: Ms(30000, 'Longest gap between two pieces of a request body; longer gets 408; 0 disables')
}, { description: 'Slow-client protection of streamed request bodies (as Kestrel\'s MinRequestBodyDataRate)' })
export type RequestBodyRateConfig = Static<typeof RequestBodyRateSchema>

export const ListenEdgeProps = {
  tls: Type.Optional(ListenTlsSchema),
  http2: Bool(false, 'With tls: offer HTTP/2 by ALPN (h2), keeping HTTP/1.1 for clients that do not; needs tls')
}
