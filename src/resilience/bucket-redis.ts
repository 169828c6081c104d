// Token buckets shared by every replica through Redis: one atomic Lua script, one round trip
// per take. The script reads the clock with Redis TIME, because replicas' clocks differ.
// Each bucket is a single hash key whose name carries a {hash tag}, so on Redis Cluster the
// key (and anything derived from it later) stays in one slot.
//
// take() rejects when Redis errors or does not answer within commandTimeoutMs; the caller
// (limiter.ts) then decides locally. It never waits on a reconnecting client.
import type { Redis, Cluster } from 'ioredis'
import type { BucketStore } from './bucket-store.js'

export type RedisClient = Redis | Cluster

// KEYS[1] bucket; ARGV rate (tokens/s), burst, maxWaitMs. Returns the same number as
// MemoryBucketStore.take. Fields: tk = tokens (may be negative: reserved debt), ts = ms.
const TAKE_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local maxWait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local s = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens = tonumber(s[1])
local ts = tonumber(s[2])
-- The bucket as of now; it expires once it would be full again.
local function save (tk)
  redis.call('HSET', KEYS[1], 'tk', string.format('%.6f', tk), 'ts', string.format('%.3f', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tk) * 1000 / rate) + 1000)
end
if tokens == nil or ts == nil then
  -- A give-back (maxWait < 0, bucket-store.ts GIVE_BACK) to a bucket that expired: it was
  -- full, so there is nothing to give back to.
  if maxWait < 0 then return 0 end
  tokens = burst
else
  local el = now - ts
  if el < 0 then el = 0 end
  tokens = math.min(burst, tokens + el * rate / 1000)
end
if maxWait < 0 then
  -- A give-back: one token more, never past burst.
  save(math.min(burst, tokens + 1))
  return 0
end
local wait = 0
if tokens < 1 then wait = (1 - tokens) * 1000 / rate end
if wait > maxWait then
  -- Kept at now even when refused: a stored time ahead of Redis's clock (a failover to a
  -- server whose clock is behind, an NTP step) would otherwise refuse every take until the
  -- clock caught up. The tokens are the same state, refilled to now.
  if ts ~= nil and now < ts then save(tokens) end
  local r = math.ceil(wait - maxWait)
  if r < 1 then r = 1 end
  return -r
end
save(tokens - 1)
return math.ceil(wait)
`

// KEYS[1] bucket; ARGV old rate, old burst, new rate, new burst. A reload changed the bucket's
// rate or burst: its tokens are brought to now at the old rate, clamped to the new burst, and
// its expiry set from the new rate. A full bucket is deleted (absent reads as full). Without
// this a key kept the expiry the old rate gave it: once a lowered rate's reload was in, a
// drained bucket still vanished (read as full) when the old rate would have refilled it.
const RESCALE_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local s = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens = tonumber(s[1])
local ts = tonumber(s[2])
if tokens == nil or ts == nil then return 0 end
local oldRate = tonumber(ARGV[1])
local oldBurst = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local el = now - ts
if el < 0 then el = 0 end
tokens = math.min(oldBurst, burst, tokens + el * oldRate / 1000)
if tokens >= burst then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'tk', string.format('%.6f', tokens), 'ts', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return 1
`

const COMMAND = 'sluiceTokenBucketTake'
const RESCALE = 'sluiceTokenBucketRescale'
type WithTake = {
  [COMMAND]: (key: string, rate: number, burst: number, maxWait: number) => Promise<number>
  [RESCALE]: (key: string, oldRate: number, oldBurst: number, rate: number, burst: number) => Promise<number>
}

/** `s` with the glob characters of SCAN MATCH escaped. */
const globEscape = (s: string): string => s.replace(/[*?[\]\\]/g, (c) => '\\' + c)

/** Client statuses after a connection was lost (as opposed to the first connect, 'wait'/'connecting'/'connect'). */
const LOST = new Set(['reconnecting', 'end', 'close'])

export class RedisUnavailableError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RedisUnavailableError'
  }
}

export class RedisBucketStore implements BucketStore {
  readonly kind = 'redis' as const
  private readonly client: RedisClient & WithTake

  constructor (client: RedisClient, readonly prefix: string, private readonly commandTimeoutMs = 250) {
    // defineCommand sends EVALSHA and falls back to EVAL on NOSCRIPT (a restarted server).
    if (typeof (client as Partial<WithTake>)[COMMAND] !== 'function') {
      client.defineCommand(COMMAND, { numberOfKeys: 1, lua: TAKE_LUA })
    }
    if (typeof (client as Partial<WithTake>)[RESCALE] !== 'function') {
      client.defineCommand(RESCALE, { numberOfKeys: 1, lua: RESCALE_LUA })
    }
    this.client = client as RedisClient & WithTake
  }

  /** The Redis key of a bucket: the prefix, then the bucket's name in a hash tag. */
  key (name: string): string {
    return `${this.prefix}{${name}}`
  }

  /** true when a command can be sent now (sending otherwise would queue or fail). */
  get ready (): boolean { return this.client.status === 'ready' }

  /** true when the connection was lost (not merely still opening for the first time). */
  get lost (): boolean { return LOST.has(this.client.status) }

  take (key: string, ratePerSecond: number, burst: number, maxWaitMs: number): Promise<number> {
    return withTimeout(this.client[COMMAND](this.key(key), ratePerSecond, burst, maxWaitMs), this.commandTimeoutMs)
  }

  /**
   * A reload changed the rate or burst of the bucket `name`, or (keyed) of every bucket whose
   * name starts with `name`: bring those in Redis to the new rate and burst at once (see
   * RESCALE_LUA). Keys are found with SCAN, on every master of a Cluster. Rejects when Redis
   * fails; what was not rescaled then follows the new rate from its next take on.
   */
  async rescale (name: string, keyed: boolean, old: { rate: number; burst: number }, ratePerSecond: number, burst: number): Promise<void> {
    const one = (key: string): Promise<number> => this.client[RESCALE](key, old.rate, old.burst, ratePerSecond, burst)
    if (!keyed) {
      await one(this.key(name))
      return
    }
    const head = `${this.prefix}{${name}`
    const match = globEscape(head) + '*'
    const nodes: Array<Pick<Redis, 'scan'>> = 'nodes' in this.client && typeof this.client.nodes === 'function' && this.client.isCluster
      ? this.client.nodes('master')
      : [this.client as Redis]
    for (const node of nodes) {
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000)
        cursor = next
        await Promise.all(keys.filter((k) => k.startsWith(head) && k.endsWith('}')).map(one))
      } while (cursor !== '0')
    }
  }

  /**
   * The round trip used to notice that Redis answers again: a take on a probe bucket, not a
   * PING. A Redis that answers PING but fails the take script (out of memory with noeviction,
   * a read-only replica after a failover) is still down for the limiters; probed with PING it
   * was declared back and down again every probe interval.
   */
  ping (): Promise<unknown> {
    if (!this.ready) return Promise.reject(new RedisUnavailableError(`redis is ${this.client.status}`))
    return this.take('\u0000probe', 1000, 1, 0)
  }
}

function withTimeout<T> (p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      if (done) return
      done = true
      reject(new RedisUnavailableError(`redis did not answer within ${ms} ms`))
    }, ms)
    timer.unref()
    // The command may settle after the timeout; both handlers swallow that late answer.
    p.then((v) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve(v)
    }, (err: unknown) => {
      if (done) return
      done = true
      clearTimeout(timer)
      reject(err instanceof Error ? err : new RedisUnavailableError(String(err)))
    })
  })
}
