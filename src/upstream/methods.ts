// HTTP method classes (RFC 9110 §9.2), declared once for every stage that decides by method
// (retries, the cache's unsafe-method invalidation, and so on). A leaf module: no imports.

/** Safe methods (RFC 9110 §9.2.1): read-only by definition. */
export const SAFE: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])

/** Idempotent methods (RFC 9110 §9.2.2): the safe ones plus PUT and DELETE; a retry may repeat them. */
export const IDEMPOTENT: ReadonlySet<string> = new Set([...SAFE, 'PUT', 'DELETE'])
