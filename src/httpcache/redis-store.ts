// L2: Redis, shared by every replica. Per base key (one URL): one binary record per variant
// (entry.ts), a small Vary record, and an index of its variants, all under one hash tag so they
// share a Redis Cluster slot and are written and invalidated atomically without any SCAN.
// Per tag: a bounded set of entry keys, and (tagPurges) when the tag was last purged, so an
// entry a full set no longer lists is still purged when read. Every command has the client's short timeout; an error
// is reported and treated as a miss (the caller never fails a request).
import { createHash, randomUUID } from 'node:crypto'
import type { Redis, Cluster } from 'ioredis'
import type { CacheEntry } from './entry.js'
import { encodeEntry, decodeEntry } from './entry.js'
import { matches, PURGE_LOG_MS, type SharedEntryStore, type LeaseResult, type Purge, type PurgeLogRead, type PurgeSelector } from './store.js'

/** The default most members of a tag set (the constructor's maxTagMembers). */
const MAX_TAG_MEMBERS = 10_000
/** The most tags whose last purge is remembered, in each process and in Redis (the newest). */
export const MAX_TAG_PURGES = 10_000
/** Replicas' clocks are assumed this close (as writer.ts assumes for the purge log). */
const CLOCK_SKEW_MS = 1000
/** The most purges the log keeps (the newest). */
const PURGE_LOG_MAX = 10_000
/** Members of a full tag set checked for entries that are gone, per add. */
const TAG_SAMPLE = 32
/** Commands a purge has in flight at once (its DELs, its GETRANGEs of ambiguous paths). */
const PURGE_BATCH = 200
const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&')

/**
 * Store a variant: KEYS entry, vary record, variant index; ARGV record, vary names, ttl ms,
 * part ('1' for a partial entry). The Vary record and the index live as long as their
 * longest-lived variant. The record is the complete response's (lookups compute the complete
 * entry's key from it): a part only writes it when there is none, and otherwise only extends
 * it, so a 206 with another Vary does not make the complete entry unreachable. A part whose
 * Vary names are not the record's is not stored at all (no lookup computes its key: it would
 * only cost memory until it expired; an older record of its key goes too), and 0 is returned.
 * Each store also checks a few index members (same slot) and removes those whose records expired or were
 * purged: an index renewed by every new variant would otherwise keep every variant ever stored
 * (a Vary on User-Agent adds one per browser build), so it converges to the live set instead.
 */
const SET_SCRIPT = `
local vt = redis.call('PTTL', KEYS[2])
if ARGV[4] == '1' and vt ~= -2 and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
local ttl = tonumber(ARGV[3])
if ARGV[4] == '1' and vt ~= -2 then
  if vt ~= -1 and vt < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
elseif vt < ttl then redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl) else redis.call('SET', KEYS[2], ARGV[2], 'KEEPTTL') end
for _, k in ipairs(redis.call('SRANDMEMBER', KEYS[3], 8)) do
  if redis.call('EXISTS', k) == 0 then redis.call('SREM', KEYS[3], k) end
end
redis.call('SADD', KEYS[3], KEYS[1])
if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
return 1`

/**
 * Add an entry key to a tag set: KEYS tag set; ARGV entry key, ttl ms, cap, sample size, force,
 * then keys to remove first. The set lives as long as its longest-lived member: its TTL is only
 * ever extended (PTTL compared here, not PEXPIRE GT, which needs Redis 7), or a short-lived
 * member would expire it under long-lived ones and a purge by tag would then miss them.
 * A full set (cap members, the key not among them) with force 0 is left as it is, and a sample
 * of its members is returned: the caller checks which of their entries are gone, as a script
 * may not read them (they live in other slots, on other nodes of a Cluster), and calls again with
 * force 1 and those keys. Only then, and only as far as the cap needs, are arbitrary members
 * dropped; the add and the drop are one script, so concurrent adds never overshoot the cap nor
 * drop more than it needs. Returns the number of members dropped that way.
 */
const TAG_SCRIPT = `
local tk, key = KEYS[1], ARGV[1]
local cap = tonumber(ARGV[3])
local new = redis.call('SISMEMBER', tk, key) == 0
if new and ARGV[5] == '0' and redis.call('SCARD', tk) >= cap then return redis.call('SRANDMEMBER', tk, tonumber(ARGV[4])) end
for i = 6, #ARGV do redis.call('SREM', tk, ARGV[i]) end
local over = 0
if new then
  over = redis.call('SCARD', tk) - cap + 1
  if over > 0 then redis.call('SPOP', tk, over) else over = 0 end
  redis.call('SADD', tk, key)
end
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', tk) < ttl then redis.call('PEXPIRE', tk, ttl) end
return over`

/** Remove every variant of a base key: KEYS vary record, variant index, plain entry. */
const DELETE_BASE_SCRIPT = `
local keys = redis.call('SMEMBERS', KEYS[2])
local n = 0
for _, k in ipairs(keys) do n = n + redis.call('DEL', k) end
if redis.call('SISMEMBER', KEYS[2], KEYS[3]) == 0 then n = n + redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[1], KEYS[2])
return n`

/**
 * Take the fill lease of a variant key: KEYS entry, lease; ARGV owner, ttl ms, check.
 * 2: the entry is already stored (check = 1 only: a pure miss); 1: the lease is ours;
 * 0: another replica holds it (and now knows one more replica waits for its "filled" message).
 */
const LEASE_SCRIPT = `
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
if redis.call('HSETNX', KEYS[2], 'o', ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
redis.call('HINCRBY', KEYS[2], 'w', 1)
return 0`

/** Give a lease back: KEYS lease; ARGV owner. The number of replicas waiting, or -1 when it was no longer ours. */
const RELEASE_SCRIPT = `
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return -1 end
local w = redis.call('HGET', KEYS[1], 'w')
redis.call('DEL', KEYS[1])
return tonumber(w or '0')`

export class RedisStore implements SharedEntryStore {
  constructor (
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly onError: (op: string, err: Error) => void,
    /** false while Redis is marked down (RedisHandle.up): lookups are misses, leases and writes are skipped, with no command sent. */
    private readonly available: () => boolean = () => true,
    opts: { maxTagMembers?: number } = {}
  ) {
    this.maxTagMembers = opts.maxTagMembers ?? MAX_TAG_MEMBERS
  }

  /** The most members of a tag set (tests lower it to overflow one cheaply). */
  private readonly maxTagMembers: number
  /**
   * When each tag was last purged (ms since the epoch; insertion order is about purge order):
   * the newest MAX_TAG_PURGES tags. A tag set is bounded, so a purge by tag may not reach every
   * L2 record with the tag (tag()); such a record, read by any replica, is recognised here by
   * its own tags and time, answered as a miss and deleted. Fed by this process's purges, those
   * it hears of (notePurge: the purge bus; purgedSince: the purge log) and, once at start and
   * after a loss the purge log cannot cover, the tag purge record in Redis (tpk).
   */
  private readonly tagPurges = new Map<string, number>()
  /** The tag purge record in Redis has been read (loadTagPurges); a read in flight. */
  private tagsLoaded = false
  private tagsLoading: Promise<void> | null = null

  /** The hash tag of a base key: its digest, so any URL (braces included) maps to one slot. */
  private slot (base: string): string { return '{' + createHash('sha1').update(base).digest('base64url').slice(0, 12) + '}' }
  /** The hash tag of a variant key: its base key's (the part before the Vary values). */
  private keySlot (key: string): string { const nl = key.indexOf('\n'); return this.slot(nl === -1 ? key : key.slice(0, nl)) }
  private rk (key: string): string { return `${this.prefix}${this.keySlot(key)}c:${key}` }
  private vk (base: string): string { return `${this.prefix}${this.slot(base)}v:${base}` }
  private ik (base: string): string { return `${this.prefix}${this.slot(base)}i:${base}` }
  private tk (tag: string): string { return `${this.prefix}t:{${tag}}` }
  /** The fill lease of a variant key, in its URL's slot. */
  private lk (key: string): string { return `${this.prefix}${this.keySlot(key)}l:${key}` }
  /** The purge log: a sorted set of this prefix's recent purges, scored by when they began. */
  private plk (): string { return `${this.prefix}purges` }
  /** The tag purge record: a sorted set of the newest MAX_TAG_PURGES purged tags, scored by their last purge. */
  private tpk (): string { return `${this.prefix}tagpurges` }
  /** This replica's name in the purge log (its own purges are watched in process: core.ts). */
  private readonly self = randomUUID()

  /**
   * Miss coalescing across replicas: one replica at a time fills a key. `check` (a pure miss)
   * first looks for an entry stored since this replica's lookup. Errors are reported and
   * answered 'error' (the caller then coalesces within its process only).
   */
  async lease (key: string, owner: string, ttlMs: number, check: boolean): Promise<LeaseResult> {
    if (!this.available()) return 'error'
    try {
      const r = Number(await this.redis.eval(LEASE_SCRIPT, 2, this.rk(key), this.lk(key), owner, Math.max(1, Math.ceil(ttlMs)), check ? '1' : '0'))
      return r === 1 ? 'acquired' : r === 2 ? 'filled' : 'held'
    } catch (err) {
      this.onError('cache_lease', err as Error)
      return 'error'
    }
  }

  /** Release a lease this replica holds: the number of replicas waiting for it (-1: it had expired or failed). */
  async release (key: string, owner: string): Promise<number> {
    try {
      return Number(await this.redis.eval(RELEASE_SCRIPT, 1, this.lk(key), owner))
    } catch (err) {
      this.onError('cache_lease', err as Error)
      return -1
    }
  }

  async get (key: string): Promise<CacheEntry | undefined> {
    if (!this.available()) return undefined
    try {
      if (!this.tagsLoaded) await this.loadTagPurges()
      const rk = this.rk(key)
      const buf = await this.redis.getBuffer(rk)
      if (!buf) return undefined
      try {
        const e = decodeEntry(buf)
        if (e !== undefined && this.tagPurges.size !== 0 && e.tags.length !== 0 && this.tagPurged(e)) {
          // A purge by one of its tags missed it (its tag set was full): it is gone. Best effort:
          // a newer fill stored under the key meanwhile goes too, and fills again.
          this.redis.del(rk).catch((err: Error) => this.onError('cache_delete', err))
          return undefined
        }
        return e
      } catch (err) {
        // A record that does not decode is this key's problem, not Redis's: counted, a miss.
        this.onError('cache_get', Object.assign(err as Error, { code: 'SLUICE_L2_CORRUPT' }))
        return undefined
      }
    } catch (err) {
      this.onError('cache_get', err as Error)
      return undefined
    }
  }

  /**
   * Was one of the entry's tags purged after its fill began? The margin is the purge log's
   * (writer.ts): a fill that began up to CLOCK_SKEW_MS after a purge by the clocks counts, as
   * its L2 write is then deleted after it lands anyway.
   */
  private tagPurged (e: CacheEntry): boolean {
    for (const t of e.tags) {
      const at = this.tagPurges.get(t)
      if (at !== undefined && at >= e.requestTime - CLOCK_SKEW_MS) return true
    }
    return false
  }

  /** Remember a purge by tag ran at `at` (the newest MAX_TAG_PURGES tags are kept). */
  private noteTag (tag: string, at: number): void {
    const had = this.tagPurges.get(tag)
    if (had !== undefined) {
      if (had >= at) return
      this.tagPurges.delete(tag) // moved to the end: the newest
    }
    this.tagPurges.set(tag, at)
    if (this.tagPurges.size > MAX_TAG_PURGES) this.tagPurges.delete(this.tagPurges.keys().next().value!)
  }

  /** Another replica's purge, heard on the purge bus now: a purge by tag is remembered (tagPurged). */
  notePurge (p: Purge): void {
    if ('tag' in p && typeof p.tag === 'string') this.noteTag(p.tag, Date.now())
  }

  /**
   * Read the tag purge record (once, and again after a loss of purge messages the log cannot
   * cover). A read that fails is reported and tried again by the next get.
   */
  private async loadTagPurges (): Promise<void> {
    this.tagsLoading ??= (async () => {
      try {
        const r = await this.redis.zrange(this.tpk(), 0, -1, 'WITHSCORES')
        for (let i = 0; i + 1 < r.length; i += 2) this.noteTag(r[i], Number(r[i + 1]))
        this.tagsLoaded = true
      } catch (err) {
        this.onError('cache_get', err as Error)
      } finally { this.tagsLoading = null }
    })()
    await this.tagsLoading
  }

  async getVary (base: string): Promise<string[] | undefined> {
    if (!this.available()) return undefined
    try {
      const v = await this.redis.get(this.vk(base))
      return v === null ? undefined : (v === '' ? [] : v.split(','))
    } catch (err) {
      this.onError('cache_get', err as Error)
      return undefined
    }
  }

  async set (e: CacheEntry, ttlMs: number): Promise<void> {
    if (ttlMs <= 0 || !this.available()) return
    const px = Math.ceil(ttlMs)
    const rk = this.rk(e.key)
    try {
      // 0: a part whose Vary is not the base's record, not stored (nothing to tag).
      if (await this.redis.eval(SET_SCRIPT, 3, rk, this.vk(e.base), this.ik(e.base), encodeEntry(e), e.varyNames.join(','), px, e.range === undefined ? '0' : '1') === 0) return
    } catch (err) {
      this.onError('cache_set', err as Error)
      return
    }
    try {
      // Tags span slots: one command per key (a Cluster pipeline or MULTI needs a single slot).
      await Promise.all(e.tags.map(async (t) => { await this.tag(this.tk(t), rk, Math.max(px, 60_000)) }))
    } catch (err) {
      // A record missing from one of its tag sets would outlive a purge by that tag, for every
      // replica, until it expires: it is deleted instead (a miss costs one fill).
      this.onError('cache_set', err as Error)
      try { await this.redis.del(rk) } catch (e2) { this.onError('cache_set', e2 as Error) }
    }
  }

  /**
   * Add a record key to a tag set, bounded to maxTagMembers. When the set is full, members
   * whose entries are gone (expired, or purged by key or prefix) are dropped first, from a sample;
   * only if the sample holds none is a live member dropped: a purge by tag then does not delete
   * it, and it is found purged when read instead (tagPurged), and deleted then.
   */
  private async tag (tk: string, rk: string, ttl: number): Promise<void> {
    const cap = this.maxTagMembers
    const sample = await this.redis.eval(TAG_SCRIPT, 1, tk, rk, ttl, cap, TAG_SAMPLE, '0')
    if (!Array.isArray(sample)) return
    const exists = await Promise.all((sample as string[]).map(async (k) => await this.redis.exists(k)))
    const gone = (sample as string[]).filter((_, i) => exists[i] === 0)
    await this.redis.eval(TAG_SCRIPT, 1, tk, rk, ttl, cap, TAG_SAMPLE, '1', ...gone)
    // A gone key stored again between its EXISTS and the SREM above was added back by that
    // set() before the SREM, and is now missing from the set: add it back.
    const back = await Promise.all(gone.map(async (k) => await this.redis.pttl(k)))
    for (let i = 0; i < gone.length; i++) {
      if (back[i] > 0) await this.redis.eval(TAG_SCRIPT, 1, tk, gone[i], Math.max(back[i], 60_000), cap, TAG_SAMPLE, '1')
    }
  }

  async deleteBase (base: string): Promise<number> {
    try {
      return Number(await this.redis.eval(DELETE_BASE_SCRIPT, 3, this.vk(base), this.ik(base), this.rk(base)))
    } catch (err) {
      this.onError('cache_delete', err as Error)
      return 0
    }
  }

  /**
   * Write a purge or an invalidation to the purge log, before anything is deleted: a write that
   * lands after the deletes (and so escapes them) is made before its writer reads the log,
   * which then holds this purge. One round trip, applied as one (the log is one key, so one
   * slot in a cluster); a command that failed inside it fails the purge as a failed round trip
   * would.
   */
  private async logPurge (p: Purge): Promise<number> {
    const now = Date.now()
    const log = this.plk()
    const replies = await this.redis.multi()
      .zadd(log, now, JSON.stringify({ ...p, from: this.self, id: randomUUID() }))
      .zremrangebyscore(log, '-inf', now - PURGE_LOG_MS)
      .zremrangebyrank(log, 0, -PURGE_LOG_MAX - 1)
      .pexpire(log, PURGE_LOG_MS)
      .exec()
    if (replies === null) throw new Error('the purge log transaction was aborted')
    for (const [err] of replies) if (err !== null) throw err
    return now
  }

  async invalidate (base: string): Promise<number> {
    try {
      await this.logPurge({ base })
    } catch (err) {
      // The deletes still run: they are what this replica's clients need; only a fill racing
      // on another replica (rare) goes unseen.
      this.onError('cache_delete', err as Error)
    }
    return await this.deleteBase(base)
  }

  async purge (sel: PurgeSelector): Promise<number> {
    try {
      const at = await this.logPurge(sel)
      if (sel.tag !== undefined) {
        // Remembered here and in Redis before anything is deleted: a record its tag set no longer
        // lists is then a miss for this replica, for the others (the purge bus, the purge log) and
        // for one that starts later (loadTagPurges). One key: one slot, one transaction.
        this.noteTag(sel.tag, at)
        const tp = this.tpk()
        const replies = await this.redis.multi().zadd(tp, at, sel.tag).zremrangebyrank(tp, 0, -MAX_TAG_PURGES - 1).exec()
        if (replies === null) throw new Error('the tag purge record transaction was aborted')
        for (const [err] of replies) if (err !== null) throw err
        // Members leave the set only once their entries are deleted: a purge that fails partway
        // (an error, a timeout) leaves the rest listed, and a retry finds and deletes them. The
        // set goes away with its last member; a key added meanwhile stays listed.
        const tk = this.tk(sel.tag)
        const keys = await this.redis.smembers(tk)
        let n = 0
        for (let i = 0; i < keys.length; i += PURGE_BATCH) {
          const some = keys.slice(i, i + PURGE_BATCH)
          n += await this.delAll(some)
          await this.redis.srem(tk, ...some)
        }
        return n
      }
      // Keys are `<prefix>{slot}c:<M>|<host>|<path>[|...][\n vary]`: match any method and host.
      // Each SCAN page is matched and deleted before the next is read: bounded memory and work in flight.
      const path = sel.key ?? sel.prefix ?? ''
      let n = 0
      await this.scan(`${globEscape(this.prefix)}{*}c:*|*|${globEscape(path)}*`, async (page) => {
        for (let i = 0; i < page.length; i += PURGE_BATCH) {
          const some = page.slice(i, i + PURGE_BATCH)
          const paths = await Promise.all(some.map(async (k) => await this.keyPath(k)))
          n += await this.delAll(some.filter((_, j) => paths[j] !== undefined && matches({ path: paths[j]!, tags: [] }, sel)))
        }
      })
      return n
    } catch (err) {
      // Counted and logged as every Redis failure is, then passed on: a purge that did not
      // reach L2 leaves the entry there for every replica, and the caller must hear of it.
      this.onError('cache_purge', err as Error)
      throw err
    }
  }

  async purgedSince (since: number, evenIfDown = false): Promise<PurgeLogRead[] | null> {
    if (!evenIfDown && !this.available()) return [] // marked down: the write was skipped, and a delete would be too
    try {
      const out: PurgeLogRead[] = []
      const from = Math.floor(since)
      // The log's size and oldest entry, read with the range in one transaction: a log at its cap
      // whose oldest entry is not older than `since` may have trimmed purges from the gap.
      const replies = await this.redis.multi()
        .zcard(this.plk())
        .zrange(this.plk(), 0, 0, 'WITHSCORES')
        .zrangebyscore(this.plk(), from, '+inf', 'WITHSCORES')
        .exec()
      if (replies === null) throw new Error('the purge log read was aborted')
      for (const [err] of replies) if (err !== null) throw err
      const size = Number(replies[0][1])
      const oldest = replies[1][1] as string[]
      if (size >= PURGE_LOG_MAX && oldest.length === 2 && Number(oldest[1]) >= from) {
        // Whatever was trimmed may have named anything: a purge of everything stands for it.
        out.push({ sel: { prefix: '' }, at: from, gap: true })
        this.tagsLoaded = false // purges by tag among them: read the tag purge record again
      } else if (Date.now() - from > PURGE_LOG_MS) this.tagsLoaded = false // older than the log keeps
      const r = replies[2][1] as string[]
      for (let i = 0; i + 1 < r.length; i += 2) {
        let p: PurgeSelector & { base?: unknown, from?: unknown }
        try { p = JSON.parse(r[i]) } catch { continue }
        if (p === null || typeof p !== 'object' || p.from === this.self) continue
        const at = Number(r[i + 1])
        if (typeof p.key === 'string') out.push({ sel: { key: p.key }, at })
        else if (typeof p.prefix === 'string') out.push({ sel: { prefix: p.prefix }, at })
        else if (typeof p.tag === 'string') { out.push({ sel: { tag: p.tag }, at }); this.noteTag(p.tag, at) }
        else if (typeof p.base === 'string') out.push({ sel: { base: p.base }, at })
      }
      return out
    } catch (err) {
      this.onError('cache_get', err as Error)
      return null
    }
  }

  /**
   * The path of a record key `<prefix>{slot}c:<M>|<host>|<path>[|<header>=<value>...][\n vary]`.
   * A path may hold `|` (a raw query), and so may a key header's value, so when anything past
   * the host holds one, the split is ambiguous: the path is then read from the record's meta
   * (its first bytes, never the bodies). undefined: the record is gone.
   */
  private async keyPath (k: string): Promise<string | undefined> {
    let rest = k.slice(k.indexOf('}c:', this.prefix.length) + 3)
    const nl = rest.indexOf('\n')
    if (nl !== -1) rest = rest.slice(0, nl)
    const afterHost = rest.indexOf('|', rest.indexOf('|') + 1) + 1
    const p = rest.slice(afterHost)
    if (afterHost === 0 || !p.includes('|')) return p
    const head = await this.redis.getrangeBuffer(k, 0, 4095)
    if (head.length < 4) return undefined
    const ml = head.readUInt32BE(0)
    const meta = 4 + ml <= head.length ? head.subarray(4, 4 + ml) : await this.redis.getrangeBuffer(k, 4, 3 + ml)
    try {
      const path = (JSON.parse(meta.toString('utf8')) as { path?: unknown }).path
      return typeof path === 'string' ? path : p
    } catch {
      return p // a damaged record: match it by its key as it reads
    }
  }

  /**
   * DEL each key, PURGE_BATCH at a time: one DEL per key, as the keys live in different slots,
   * and never thousands at once (each would wait behind the others, past the command timeout).
   * The variant indexes keep stale members until later stores prune them; deleting a missing
   * key is harmless.
   */
  private async delAll (keys: string[]): Promise<number> {
    let n = 0
    for (let i = 0; i < keys.length; i += PURGE_BATCH) {
      for (const d of await Promise.all(keys.slice(i, i + PURGE_BATCH).map(async (k) => await this.redis.del(k)))) n += d
    }
    return n
  }

  /** Every key matching `match` on every master; with `onPage`, handed over one SCAN page at a time instead of collected. */
  private async scan (match: string, onPage?: (keys: string[]) => Promise<void>): Promise<string[]> {
    const out: string[] = []
    const nodes = 'nodes' in this.redis && typeof (this.redis as Cluster).nodes === 'function' ? (this.redis as Cluster).nodes('master') : [this.redis as Redis]
    for (const node of nodes) {
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000)
        cursor = next
        if (onPage !== undefined) await onPage(keys); else out.push(...keys)
      } while (cursor !== '0')
    }
    return out
  }

  private walk: { nodes: Redis[]; node: number; cursor: string; keys: number; sampled: number; sampledBytes: number } | null = null
  private lastPass: { entries: number; bytes: number } | null = null

  /**
   * L2 size for the gauges, at a bounded cost per call: one SCAN step and a few pipelined
   * MEMORY USAGE samples. A pass over the keyspace spans as many calls as it needs; each call
   * returns the last completed pass (null before the first one ends), so a cache of millions of
   * keys is never scanned in one go. Bytes are the sampled mean size times the entries.
   */
  async sampleStats (count = 1000, samples = 16): Promise<{ entries: number; bytes: number } | null> {
    try {
      if (this.walk === null) {
        const nodes = 'nodes' in this.redis && typeof (this.redis as Cluster).nodes === 'function' ? (this.redis as Cluster).nodes('master') : [this.redis as Redis]
        this.walk = { nodes, node: 0, cursor: '0', keys: 0, sampled: 0, sampledBytes: 0 }
      }
      const w = this.walk
      const [next, keys] = await w.nodes[w.node].scan(w.cursor, 'MATCH', `${globEscape(this.prefix)}{*}c:*`, 'COUNT', count)
      w.keys += keys.length
      if (keys.length > 0) {
        const p = w.nodes[w.node].pipeline() // the node that holds these keys (a Cluster pipeline needs one slot)
        const step = Math.max(1, Math.floor(keys.length / samples))
        for (let i = 0; i < keys.length; i += step) p.call('MEMORY', 'USAGE', keys[i])
        for (const [err, v] of (await p.exec()) ?? []) if (!err && v !== null) { w.sampled++; w.sampledBytes += Number(v) }
      }
      w.cursor = next
      if (next === '0' && ++w.node === w.nodes.length) {
        this.lastPass = { entries: w.keys, bytes: w.sampled ? Math.round(w.sampledBytes / w.sampled * w.keys) : 0 }
        this.walk = null
      }
      return this.lastPass
    } catch (err) {
      this.walk = null
      this.onError('cache_stats', err as Error)
      return null
    }
  }

  /** Exact L2 size: scans every key (tests and one-off checks; the gauges use sampleStats). */
  async stats (): Promise<{ entries: number; bytes: number }> {
    try {
      const keys = await this.scan(`${globEscape(this.prefix)}{*}c:*`)
      let bytes = 0
      for (const k of keys.slice(0, 1000)) bytes += Number(await this.redis.call('MEMORY', 'USAGE', k) ?? 0)
      if (keys.length > 1000) bytes = Math.round(bytes * keys.length / 1000)
      return { entries: keys.length, bytes }
    } catch (err) {
      this.onError('cache_stats', err as Error)
      return { entries: -1, bytes: -1 }
    }
  }
}
