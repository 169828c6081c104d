// Token buckets held by the cluster primary, for workers without Redis. One MemoryBucketStore
// lives in the primary; every worker's limiter takes from it over the cluster IPC channel, so
// a limit holds across workers exactly as if one process served every request.
//
// - Worker side: IpcBucketStore implements the shared-store seam of src/resilience/limiter.ts
//   (the same one RedisBucketStore fills). Takes made while one event-loop turn runs go out in
//   one message (flushed on setImmediate), and the primary answers each batch with one message.
// - Primary side: serveBuckets(endpoint, store) answers the takes of one worker (or of any
//   process with an IPC channel: a test forks a child that runs it).
// - A take the primary does not answer within timeoutMs rejects; the limiter then decides with
//   its local bucket (rate / expectedReplicas), as it does when Redis fails.
import type { BucketStore } from '../resilience/bucket-store.js'
import type { MemoryBucketStore } from '../resilience/bucket-memory.js'

/** What both ends need of an IPC channel: `process` in a worker, a cluster Worker or ChildProcess in the primary. */
export interface IpcEndpoint {
  send (message: unknown, callback?: (error: Error | null) => void): boolean
  on (event: 'message', listener: (message: unknown) => void): unknown
  off? (event: 'message', listener: (message: unknown) => void): unknown
  readonly connected?: boolean
  isConnected? (): boolean
}

/** One take: [id, key, ratePerSecond, burst, maxWaitMs]. */
type Take = [number, string, number, number, number]
export interface TakeBatch { type: 'sluice:bucket:take'; t: Take[] }
/** Answers: [id, result] pairs, flattened. */
export interface TakeReply { type: 'sluice:bucket:took'; r: number[] }
export interface PingMsg { type: 'sluice:bucket:ping'; i: number }
export interface PongMsg { type: 'sluice:bucket:pong'; i: number }
/** A reload changed the rate or burst of the buckets named n (k: every key starting with n). */
export interface RescaleMsg { type: 'sluice:bucket:rescale'; n: string; k: boolean; r: number; b: number }

export class PrimaryUnavailableError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'PrimaryUnavailableError'
  }
}

function connected (e: IpcEndpoint): boolean {
  if (typeof e.isConnected === 'function') return e.isConnected()
  return e.connected !== false
}

// Ids are unique within the process, so two stores on one channel never settle each other's takes.
let nextId = 1
const newId = (): number => {
  const id = nextId++
  if (nextId > 0x3fffffff) nextId = 1
  return id
}

export class IpcBucketStore implements BucketStore {
  readonly kind = 'primary' as const
  private readonly pending = new Map<number, { resolve: (v: number) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private queue: Take[] = []
  private flushScheduled = false
  private readonly onMessage = (m: unknown): void => { this.receive(m) }

  constructor (private readonly endpoint: IpcEndpoint, private readonly timeoutMs = 250) {
    endpoint.on('message', this.onMessage)
  }

  /** The channel is open (a take can be sent now). */
  get ready (): boolean { return connected(this.endpoint) }
  /** The channel was closed: the primary is gone. */
  get lost (): boolean { return !connected(this.endpoint) }

  take (key: string, ratePerSecond: number, burst: number, maxWaitMs: number): Promise<number> {
    if (!this.ready) return Promise.reject(new PrimaryUnavailableError('the cluster primary is not connected'))
    const id = newId()
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new PrimaryUnavailableError(`the cluster primary did not answer within ${this.timeoutMs} ms`))
      }, this.timeoutMs)
      timer.unref()
      this.pending.set(id, { resolve, reject, timer })
      this.queue.push([id, key, ratePerSecond, burst, maxWaitMs])
      if (!this.flushScheduled) {
        this.flushScheduled = true
        setImmediate(() => this.flush())
      }
    })
  }

  /** A round trip without a take, to notice that the primary answers again. */
  ping (): Promise<unknown> {
    if (!this.ready) return Promise.reject(new PrimaryUnavailableError('the cluster primary is not connected'))
    const id = newId()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new PrimaryUnavailableError('the cluster primary did not answer a ping'))
      }, this.timeoutMs)
      timer.unref()
      this.pending.set(id, { resolve, reject, timer })
      this.send({ type: 'sluice:bucket:ping', i: id } satisfies PingMsg, [id])
    })
  }

  /**
   * A reload changed the rate or burst of the bucket `name` (keyed: of every bucket under it):
   * the primary's buckets take them at once, as Redis's do (see Limiter.update). Resolves once
   * sent; the primary answers nothing.
   */
  rescale (name: string, keyed: boolean, _old: { rate: number; burst: number }, ratePerSecond: number, burst: number): Promise<void> {
    if (!this.ready) return Promise.reject(new PrimaryUnavailableError('the cluster primary is not connected'))
    return new Promise((resolve, reject) => {
      const msg: RescaleMsg = { type: 'sluice:bucket:rescale', n: name, k: keyed, r: ratePerSecond, b: burst }
      try {
        this.endpoint.send(msg, (err) => { if (err) reject(new PrimaryUnavailableError('cannot send to the cluster primary')); else resolve() })
      } catch { reject(new PrimaryUnavailableError('cannot send to the cluster primary')) }
    })
  }

  private flush (): void {
    this.flushScheduled = false
    const batch = this.queue
    this.queue = []
    if (batch.length === 0) return
    this.send({ type: 'sluice:bucket:take', t: batch } satisfies TakeBatch, batch.map((t) => t[0]))
  }

  private send (msg: TakeBatch | PingMsg, ids: number[]): void {
    const fail = () => { for (const id of ids) this.settle(id, new PrimaryUnavailableError('cannot send to the cluster primary')) }
    // With a callback, a closed channel reports here instead of emitting 'error' on the process.
    try { this.endpoint.send(msg, (err) => { if (err) fail() }) } catch { fail() }
  }

  private settle (id: number, v: number | Error): void {
    const p = this.pending.get(id)
    if (p === undefined) return
    this.pending.delete(id)
    clearTimeout(p.timer)
    if (typeof v === 'number') p.resolve(v)
    else p.reject(v)
  }

  private receive (m: unknown): void {
    const msg = m as TakeReply | PongMsg | null
    if (msg?.type === 'sluice:bucket:took') {
      const r = msg.r
      for (let i = 0; i + 1 < r.length; i += 2) this.settle(r[i], r[i + 1])
    } else if (msg?.type === 'sluice:bucket:pong') this.settle(msg.i, 0)
  }

  /** Stop listening and fail whatever is still waiting (the limiter falls back locally). */
  close (): void {
    this.endpoint.off?.('message', this.onMessage)
    for (const id of [...this.pending.keys()]) this.settle(id, new PrimaryUnavailableError('closed'))
  }
}

const ignore = (): void => {}

/**
 * In the primary: answer one worker's takes from `store` (one store shared by every worker),
 * and upstream budgets' (`up:` keys) from `budgets`. Returns a function that stops answering.
 */
export function serveBuckets (endpoint: IpcEndpoint, store: MemoryBucketStore, budgets: MemoryBucketStore = store): () => void {
  const onMessage = (m: unknown): void => {
    const msg = m as TakeBatch | PingMsg | RescaleMsg | null
    if (msg?.type === 'sluice:bucket:rescale') {
      try { (msg.n.startsWith('up:') ? budgets : store).rescale(msg.n, msg.k, msg.r, msg.b) } catch { /* a bad message changes nothing */ }
    } else if (msg?.type === 'sluice:bucket:take') {
      const r: number[] = []
      for (const [id, key, rate, burst, maxWait] of msg.t) {
        let v: number
        try { v = (key.startsWith('up:') ? budgets : store).take(key, rate, burst, maxWait) } catch { v = -1000 }
        r.push(id, v)
      }
      if (connected(endpoint)) endpoint.send({ type: 'sluice:bucket:took', r } satisfies TakeReply, ignore)
    } else if (msg?.type === 'sluice:bucket:ping') {
      if (connected(endpoint)) endpoint.send({ type: 'sluice:bucket:pong', i: msg.i } satisfies PongMsg, ignore)
    }
  }
  endpoint.on('message', onMessage)
  return () => { endpoint.off?.('message', onMessage) }
}
