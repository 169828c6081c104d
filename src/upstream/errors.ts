// Maps what undici and the socket layer throw to Sluice's stable error codes.
import { SluiceError, type ErrorCode } from '../errors.js'

/** What undici and the socket layer throw when a connection could not be set up in time. */
const CONNECT_TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT'])

function codeOf (err: unknown): string {
  let e = err as { code?: string; cause?: unknown } | undefined
  for (let i = 0; i < 4 && e; i++) {
    if (typeof e.code === 'string' && e.code !== 'UND_ERR_SOCKET') return e.code
    e = e.cause as typeof e
  }
  return (err as { code?: string })?.code ?? ''
}

export function mapUpstreamError (err: unknown, upstream: string, clientClosed: boolean): SluiceError {
  if (err instanceof SluiceError) return err
  // A failure of the request body stream (e.g. over maxBodyBytes) keeps its own code.
  const cause = (err as { cause?: unknown })?.cause
  if (cause instanceof SluiceError) return cause
  const code = codeOf(err)
  const msg = (err as Error)?.message ?? String(err)
  let sc: ErrorCode
  let detail: string
  if (clientClosed) { sc = 'SLUICE_ERR_CLIENT_CLOSED'; detail = 'client closed the connection' } else if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'SLUICE_DEADLINE') { sc = 'SLUICE_ERR_UPSTREAM_TIMEOUT'; detail = 'no response headers before the deadline' } else if (CONNECT_TIMEOUT_CODES.has(code)) { sc = 'SLUICE_ERR_UPSTREAM_TIMEOUT'; detail = 'connect timeout' } else if (code === 'UND_ERR_BODY_TIMEOUT') { sc = 'SLUICE_ERR_UPSTREAM_TIMEOUT'; detail = 'body idle timeout' } else if (code === 'ECONNREFUSED') { sc = 'SLUICE_ERR_UPSTREAM_CONNECT'; detail = 'connection refused' } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME' || code === 'EAI_FAIL') { sc = 'SLUICE_ERR_UPSTREAM_DNS'; detail = `DNS lookup failed (${code})` } else if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|HOSTNAME_MISMATCH/.test(code)) { sc = 'SLUICE_ERR_UPSTREAM_TLS'; detail = `TLS: ${code}` } else if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED' || code === 'UND_ERR_DESTROYED' || code === 'ECONNABORTED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') { sc = code.startsWith('E') && code.endsWith('UNREACH') ? 'SLUICE_ERR_UPSTREAM_CONNECT' : 'SLUICE_ERR_UPSTREAM_RESET'; detail = `connection closed (${code})` } else { sc = 'SLUICE_ERR_UPSTREAM_PROTOCOL'; detail = code ? `${code}: ${msg}` : msg }
  return new SluiceError(sc, `upstream "${upstream}": ${detail}`, { cause: err })
}

/** Mapped codes of failures that come before any response byte (connect, reset, DNS). */
const RETRYABLE_CODES = new Set<ErrorCode>(['SLUICE_ERR_UPSTREAM_CONNECT', 'SLUICE_ERR_UPSTREAM_RESET', 'SLUICE_ERR_UPSTREAM_DNS'])

/**
 * True when the failure happened before any byte of a response, so a retry cannot duplicate one:
 * connection refused or unreachable, a reset, a DNS failure, or a connect timeout (told apart
 * from the other timeouts by the cause's code, not by the message). An error that is not a
 * SluiceError (a raw undici or socket error) is mapped first.
 */
export function isRetryableError (err: unknown): boolean {
  const e = mapUpstreamError(err, '', false)
  if (RETRYABLE_CODES.has(e.code)) return true
  return e.code === 'SLUICE_ERR_UPSTREAM_TIMEOUT' && CONNECT_TIMEOUT_CODES.has(codeOf(e.cause))
}
