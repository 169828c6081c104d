// Stage 2, client limit: the seam to the per-client rate limiter (src/resilience).
import type { RouteEntry } from '../config/snapshot.js'
import type { SluiceError } from '../errors.js'
import type { Headers } from '../types.js'

export interface ClientLimitProvider {
  /** null to let the request through, or the 429 error to answer with. */
  check (route: RouteEntry, clientIp: string, headers: Headers): null | SluiceError | Promise<null | SluiceError>
}
