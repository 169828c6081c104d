// Storing an entry: L1 at once, the encoded copies off the response path, then L2 (unless a
// purge named the entry meanwhile).
//
// An origin's encoded body is decoded first (bounded: a compression bomb is not stored), so
// every entry holds identity bytes and the clients that send no Accept-Encoding get them
// without a decoder on the hit path. The route's br/gzip copies are made once, in the
// background, by compress/variants.ts's encodeMissing; until they exist, hits get identity.
import { isSluiceError } from '../errors.js'
import { decodedHeaders, first, hasNoTransform, namesNoCoding, withoutContentEncoding } from '../compress/headers.js'
import { decodeOriginBody, encodeMissing, shouldEncode } from '../compress/variants.js'
import { owned, storeTtlMs, type CacheEntry } from './entry.js'
import { purges, type CacheCore, type CacheRoute, type PurgeWatch } from './core.js'

/** Store-time encodes allowed to run at once (libuv's thread pool has 4 threads). */
const MAX_ENCODES = 4
/** The codings an entry keeps besides identity (few clients want deflate; they get identity). */
const STORED_CODINGS = new Set(['br', 'gzip'])
/**
 * Replicas' clocks may differ by this much: a purge logged up to this long before a fill's
 * upstream request began counts as one that may have crossed it, and the L2 copy is deleted
 * (other replicas then fill the key themselves, once each).
 */
const CLOCK_SKEW_MS = 1000

export class EntryWriter {
  private encodes = 0

  constructor (private readonly core: CacheCore) {}

  /**
   * An entry whose body the origin encoded (gzip, br, deflate), turned into one with identity
   * bytes, keeping the origin's gzip or br as that stored coding. A coding Sluice cannot decode,
   * or bytes that do not decode, are stored as sent. Rejects with
   * SLUICE_ERR_DECOMPRESSED_TOO_LARGE past the bound (then nothing is stored).
   */
  async normalise (e: CacheEntry, route: CacheRoute): Promise<CacheEntry> {
    // Content-Encoding: identity is no coding: stored without it, so its br/gzip copies are made
    // and its hits look like any uncoded entry's.
    if (namesNoCoding(e.headers)) return { ...e, headers: withoutContentEncoding(e.headers), out: undefined }
    // no-transform: an intermediary may not change the content coding (RFC 9110 §7.7): stored and served as sent.
    if (first(e.headers['content-encoding']) === undefined || hasNoTransform(e.headers)) return e
    let decoded: Awaited<ReturnType<typeof decodeOriginBody>>
    try {
      decoded = await decodeOriginBody(e.body, e.headers, Math.min(route.compression.maxDecompressedBytes, this.core.config.memory.maxEntryBytes))
    } catch (err) {
      if (isSluiceError(err) && err.code === 'SLUICE_ERR_DECOMPRESSED_TOO_LARGE') throw err
      return e
    }
    if (decoded === null || decoded.coding === undefined) return e
    // As the compress stage decodes on the fly: the encoded bytes' length, digests and strong
    // ETag do not describe the identity bytes (a strong ETag would validate identity ranges).
    const headers = decodedHeaders(e.headers)
    const out: CacheEntry = { ...e, headers, body: owned(decoded.identity), out: undefined }
    // The origin's own coding: served as the origin chose it, whatever the route's threshold.
    if (decoded.coding === 'gzip') { out.gzip = e.body; out.fromOrigin = 'gzip' } else if (decoded.coding === 'br') { out.br = e.body; out.fromOrigin = 'br' }
    return out
  }

  /**
   * Store in L1 now, encode the route's codings and store in L2 in the background. A purge
   * naming the entry (here or from another replica) stops its L2 write: one that runs before
   * the write is sent skips it, one that runs while it is in flight (and may have missed it,
   * a SCAN or a tag set read before it landed) deletes it again once it is done. A purge or
   * unsafe-method invalidation on another replica whose message comes after the write landed
   * is found in the L2's purge log, read after the write (both log themselves before they
   * delete anything). An entry
   * completed while a purge naming it runs is not stored at all, nor is one whose fill
   * watched (`fill`, from before its upstream request) a purge naming it: its bytes may be
   * from before the purge.
   *
   * Returns null when the entry is stored nowhere: L1 refused it (larger than the whole cache)
   * and there is no L2. The fill then says so instead of `stored`.
   */
  store (e: CacheEntry, route: CacheRoute, fill?: PurgeWatch): Promise<void> | null {
    const { core } = this
    if (core.purgeRunning(e) || (fill !== undefined && core.purgedDuring(fill, e))) return Promise.resolve()
    if (!core.l1.set(e, storeTtlMs(e, core.now())) && core.l2 === null) {
      core.gauges() // the key's old entry, if any, went
      return null
    }
    const watch = core.watch()
    const comp = route.compression
    // Encoded copies are an optimisation: when MAX_ENCODES are already running (a miss-heavy
    // burst), the entry is stored identity-only rather than queueing work and memory without bound.
    const encode = this.encodes < MAX_ENCODES && e.range === undefined && e.headers['content-encoding'] === undefined && shouldEncode(e.body, e.headers, comp)
    if (encode) this.encodes++
    const job = (encode ? this.encode(e, route).finally(() => { this.encodes-- }) : Promise.resolve())
      .then(async () => {
        if (core.l2 === null || core.purgedDuring(watch, e)) return
        const sent = watch.seen.length
        await core.l2.set(e, storeTtlMs(e, core.now()))
        if (core.purgedDuring(watch, e, sent)) { await core.l2.deleteBase(e.base); return }
        // Another replica's purge that began after this fill did, and whose message has not
        // arrived yet: its L2 part may have run before this write landed. Its log says so (or,
        // with more purges since than it keeps, says it cannot tell: a `gap` entry that names
        // everything, dated before the fill began, so only the L2 copy goes).
        const others = await core.l2.purgedSince(e.requestTime - CLOCK_SKEW_MS)
        const hit = others === null ? null : others.filter((p) => purges(p.sel, e))
        if (hit === null || hit.length > 0) {
          await core.l2.deleteBase(e.base)
          // A purge that began after this fill did (by the clocks) is also applied to L1, as its
          // message will be (or would have been: a message sent while the subscriber
          // reconnected is lost).
          for (const p of hit ?? []) if (p.at >= e.requestTime) core.purgeL1(p.sel)
          core.gauges()
        }
      })
      .catch((err: Error) => core.log.warn({ err: err.message, key: e.path }, 'cache store failed'))
      .finally(() => core.unwatch(watch))
    core.track(job)
    core.gauges()
    return job
  }

  private async encode (e: CacheEntry, route: CacheRoute): Promise<void> {
    const comp = route.compression
    const codings = comp.encodings.filter((c) => STORED_CODINGS.has(c))
    const made = await encodeMissing(e.body, e.headers, comp, { gzip: e.gzip, br: e.br }, codings)
    if (made.gzip === undefined && made.br === undefined) return
    if (made.gzip !== undefined) e.gzip = owned(made.gzip)
    if (made.br !== undefined) e.br = owned(made.br)
    e.out = undefined // the headers of each coding change (Vary, ETag)
    this.core.l1.grew(e.key)
    this.core.gauges()
    const { metrics } = this.core
    for (const [k, v] of Object.entries(made)) {
      if (!STORED_CODINGS.has(k)) continue
      metrics.compressionBytes.labels(k, 'in').inc(e.body.length)
      metrics.compressionBytes.labels(k, 'out').inc((v as Buffer).length)
    }
  }
}
