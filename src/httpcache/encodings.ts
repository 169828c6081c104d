// Content negotiation for stored encodings: the one RFC 9110 negotiator of src/compress
// (memoised per header value; it runs on every cache hit). `available` is in preference order.
import { pickEncoding as negotiate } from '../compress/negotiate.js'

/** The best of `available` for this Accept-Encoding, or null when nothing is acceptable. */
export function pickEncoding (acceptEncoding: string | undefined, available: readonly string[]): string | null {
  return negotiate(acceptEncoding, available, available)
}
