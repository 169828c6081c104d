// The token-bucket store seam. Both stores give the same answer for the same calls (one
// conformance suite, test/resilience/bucket-conformance.ts, runs against each).
//
// take() reserves one token. The result is one number so the memory path allocates nothing:
//   r >= 0  granted; the caller must wait r ms before sending (a reservation: the bucket may
//           run into debt up to maxWaitMs worth of tokens, which makes waiting FIFO and keeps
//           the Redis path to one round trip per request)
//   r <  0  denied; a token (within maxWaitMs) is available again in -r ms (always >= 1)
//
// maxWaitMs = GIVE_BACK returns one token instead (a request that took one and left while it
// waited): the bucket gains a token, never past burst, and the result is 0. A give-back is a
// take of its own kind so that every store, the Redis script and the cluster primary's IPC
// channel carry it without a second operation.

/** The maxWaitMs of a take that gives a token back (see above). */
export const GIVE_BACK = -1

export interface BucketStore {
  readonly kind: 'memory' | 'redis' | 'primary'
  take (key: string, ratePerSecond: number, burst: number, maxWaitMs: number): number | Promise<number>
}

