// The replicas' cache messages, over Redis pub/sub:
// - `<prefix>purge`: a purge or an unsafe-method invalidation, so every replica's L1 drops it;
// - `<prefix>filled`: a leased fill is done (miss coalescing across replicas, coalesce.ts).
// On a database other than 0 the names end in `@<db>` (`<prefix>purge@2`).
// Messages carry the sender's instance id; a replica ignores its own.
import { randomUUID } from 'node:crypto'
import type { Redis, Cluster } from 'ioredis'
import type { PurgeSelector } from './store.js'
import type { BypassReason } from './policy.js'

/** What a purge message names: a selector, or every variant of one base key. */
export type PurgeMessage = PurgeSelector | { base: string }
/**
 * A fill is done: `e` is the stored entry's key, `r` why nothing was stored, `s` the status the
 * origin answered when that is known (a failed fill's 5xx: the waiting replicas' stale answers
 * name it as fwd-status). `s` is optional: a message from an older replica has none.
 */
export interface FilledMessage { k: string; e?: string; r?: BypassReason | 'ERROR'; s?: number }

export class CacheBus {
  readonly instance = randomUUID()
  onPurge: (m: PurgeMessage) => void = () => {}
  onFilled: (m: FilledMessage) => void = () => {}
  /**
   * The subscriber is subscribed again after losing its connection at `lostAt` (ms since the
   * epoch): messages published meanwhile are lost, so the purges since then are read from the
   * purge log (stage.ts). Also called on its first subscription when its first connection
   * attempts failed, with `lostAt` the time this bus was made (with the cache stage): L1 may
   * have filled from the origin meanwhile, and purges ran without it hearing them.
   */
  onResubscribed: (lostAt: number) => void = () => {}
  private readonly purgeChannel: string
  private readonly filledChannel: string
  private readonly sub: Redis | Cluster

  constructor (private readonly redis: Redis | Cluster, prefix: string, private readonly onError: (op: string, err: Error) => void, listenFilled: boolean) {
    // Channels are server-wide, keys are per database: a gateway on another database of the
    // same server (redis://host/2) is another cache, and must not hear these. Database 0 keeps
    // the plain names; a cluster has no other.
    const db = redis.isCluster ? 0 : Number((redis as Redis).options?.db ?? 0)
    const ns = db === 0 ? '' : `@${db}`
    this.purgeChannel = `${prefix}purge${ns}`
    this.filledChannel = `${prefix}filled${ns}`
    // The subscriber queues its SUBSCRIBE until connected (the shared client fails fast instead),
    // and ioredis re-subscribes after every reconnect.
    this.sub = redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined } as never)
    this.sub.on('error', () => {})
    // When the subscription was lost (null while subscribed, or before the first connection):
    // a first connection that fails counts as lost since the start.
    const startedAt = Date.now()
    let ready = false
    let lostAt: number | null = null
    this.sub.on('close', () => { if (lostAt === null) lostAt = ready ? Date.now() : startedAt })
    this.sub.on('ready', () => {
      ready = true
      const since = lostAt
      lostAt = null
      if (since === null) return
      // ioredis sent the SUBSCRIBE again just before 'ready': a PING after it answers once it
      // is in effect, so no purge falls between the subscription and the log read.
      this.sub.ping().then(() => this.onResubscribed(since), () => this.onResubscribed(since))
    })
    this.sub.subscribe(this.purgeChannel, ...(listenFilled ? [this.filledChannel] : [])).catch((err: Error) => onError('cache_subscribe', err))
    this.sub.on('message', (ch: string, text: string) => {
      let m: { from?: string } & Record<string, unknown>
      try { m = JSON.parse(text) } catch { return } // not ours
      if (m === null || typeof m !== 'object' || m.from === this.instance) return
      if (ch === this.purgeChannel) this.onPurge(m as PurgeMessage)
      else if (ch === this.filledChannel && typeof m.k === 'string') this.onFilled(m as unknown as FilledMessage)
    })
  }

  publishPurge (m: PurgeMessage): void {
    this.send(this.purgeChannel, m)
  }

  publishFilled (m: FilledMessage): Promise<void> {
    return this.send(this.filledChannel, m)
  }

  private send (channel: string, m: object): Promise<void> {
    return this.redis.publish(channel, JSON.stringify({ ...m, from: this.instance })).then(() => {}, (err: Error) => this.onError('cache_publish', err))
  }

  close (): void {
    this.sub.disconnect()
  }
}
