// `workers: N` (N > 1): a node:cluster primary that forks N workers sharing the proxy port.
// The primary supervises (a crashed worker is replaced, with backoff), owns the admin port,
// and fans reloads and purges out to every worker. /metrics is aggregated across workers by
// prom-client's AggregatorRegistry.aggregate over each worker's registry, collected over IPC
// (counters and histograms summed exactly; see aggregateMetrics for the gauges). A reload is
// validated once, here: a bad file changes no worker. Workers never read the file: each one
// starts from, and reloads to, the text the primary last validated (a worker replaced after a
// refused reload starts on the config that is running, not on the bad file). A reload is
// answered once every worker has answered its own: ok only when all of them applied it (the
// primary's snapshot is swapped only then, so a retry asks every worker again); when some
// did not, the ones that did are sent back to the running text. Without Redis, the primary
// holds the rate-limit buckets for every worker (ipc-buckets.ts).
import cluster, { type Worker } from 'node:cluster'
import { availableParallelism } from 'node:os'
import { randomUUID } from 'node:crypto'
import { PassThrough, type Readable } from 'node:stream'
import { AggregatorRegistry, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import type { Logger } from 'pino'
import { loadConfigFile } from '../config/load.js'
import { compile } from '../config/compile.js'
import { SnapshotHolder, Reloader, ReloadError, type ReloadResult } from '../config/reload.js'
import { createMetrics, type Metrics } from '../observability/metrics.js'
import { latencyByRoute, cacheRatios, historyOf, mergeHistories, type HistoryAnswer } from '../observability/status.js'
import { logDrained } from '../observability/logger.js'
import { buildAdmin } from '../admin.js'
import { mergeUpstreams, type UpstreamView } from './upstreams.js'
import { cpuProfile, heapSnapshot, profilerBusy, HEAP_SNAPSHOT_TIMEOUT_MS } from '../observability/profile.js'
import type { Config } from '../config/schema.js'
import { MemoryBucketStore } from '../resilience/bucket-memory.js'
import { serveBuckets } from './ipc-buckets.js'
import { VERSION } from '../version.js'
import { withNodeFlags } from '../node-flags.js'
import { tlsFiles } from '../config/tls-files.js'

export type WorkerMessage =
  | { type: 'sluice:reload'; id: string; text: string }
  | { type: 'sluice:config'; text: string }
  | { type: 'sluice:purge'; id: string; sel: { key?: string; prefix?: string; tag?: string } }
  | { type: 'sluice:status'; id: string }
  | { type: 'sluice:history'; id: string; since?: number }
  | { type: 'sluice:upstreams'; id: string }
  | { type: 'sluice:profile'; id: string; ms: number }
  | { type: 'sluice:heap-snapshot'; id: string }
  | { type: 'sluice:metrics'; id: string }
  | { type: 'sluice:readiness'; id: string }
  | { type: 'sluice:shutdown' }

export type WorkerReply =
  | { type: 'sluice:ready'; pid: number; version?: string }
  | { type: 'sluice:config?' }
  | { type: 'sluice:reply'; id: string; value: unknown }
  /** A piece of a heap snapshot, before the reply that ends it. */
  | { type: 'sluice:chunk'; id: string; chunk: string }

type MetricJSON = MetricObjectWithValues<MetricValue<string>>

/** Families the primary reports itself (a reload happens once, in the primary): workers' copies are dropped. */
const PRIMARY_OWNED = new Set(['sluice_config_reloads_total', 'sluice_config_last_reload_success_timestamp_seconds', 'sluice_build_info'])
/** Gauges that must not be summed across workers. */
const GAUGE_AGGREGATOR: Record<string, 'max' | 'min' | 'first'> = {
  sluice_circuit_state: 'max', // the worst state any worker's breaker is in
  // 1 only while every worker has the target in rotation (each checks and ejects on its own),
  // as /admin/upstreams's `healthy` (src/cluster/upstreams.ts); summed it read N, or 1 of N.
  sluice_upstream_target_healthy: 'min',
  nodejs_version_info: 'first'
}
/** Gauges whose `tier="redis"` series describe one shared store: every worker samples the same L2. */
const SHARED_TIER = new Set(['sluice_cache_bytes', 'sluice_cache_entries'])

/**
 * One exposition from every worker's registry (as JSON) plus the primary's own families.
 * Counters and histograms are summed exactly (prom-client's AggregatorRegistry.aggregate).
 * Gauges are summed too (in-flight requests, L1 bytes and the L1 bound: each worker has an L1
 * of cache.memory.maxBytes), except the breaker state (max), target health (min), the shared
 * L2 tier (one worker's sample) and the families the primary owns.
 */
export function aggregateMetrics (workers: MetricJSON[][], primary: MetricJSON[]): Registry {
  const parts: MetricJSON[][] = workers.map((list, i) => list.filter((m) => !PRIMARY_OWNED.has(m.name)).map((m) => {
    let out = m
    if (GAUGE_AGGREGATOR[m.name]) out = { ...out, aggregator: GAUGE_AGGREGATOR[m.name] } as MetricJSON
    if (i > 0 && SHARED_TIER.has(m.name)) out = { ...out, values: out.values.filter((v) => v.labels.tier !== 'redis') }
    return out
  }))
  parts.push(primary.filter((m) => PRIMARY_OWNED.has(m.name)))
  return AggregatorRegistry.aggregate(parts as never) as unknown as Registry
}

/**
 * `into` plus a dead worker's last exposition: its counters and histograms (each series summed
 * by name and labels), so the totals of the primary's /metrics never go backwards when a worker
 * is replaced (Prometheus's rate() reads a drop as a counter reset). Gauges and summaries are
 * not kept: they describe a process that is gone.
 */
export function foldRetired (into: MetricJSON[], dead: MetricJSON[]): MetricJSON[] {
  const out = new Map(into.map((m) => [m.name, { ...m, values: m.values.map((v) => ({ ...v })) }]))
  const key = (v: MetricValue<string>) => `${(v as { metricName?: string }).metricName ?? ''}\n${JSON.stringify(Object.entries(v.labels).sort((a, b) => a[0] < b[0] ? -1 : 1))}`
  for (const m of dead) {
    const type = String(m.type)
    if ((type !== 'counter' && type !== 'histogram') || PRIMARY_OWNED.has(m.name)) continue
    let f = out.get(m.name)
    if (!f) { f = { ...m, values: [] }; out.set(m.name, f) }
    const at = new Map(f.values.map((v) => [key(v), v]))
    for (const v of m.values) {
      const mine = at.get(key(v))
      if (mine) mine.value += v.value
      else { const c = { ...v }; f.values.push(c); at.set(key(v), c) }
    }
  }
  return [...out.values()]
}

export function workerCount (w: Config['workers']): number {
  return w === 'auto' ? availableParallelism() : w
}

export interface WorkerState { id: number; pid: number | undefined; ready: boolean }

export async function runPrimary (file: string, log: Logger): Promise<{ stop (): Promise<void>; workers (): WorkerState[]; admin: import('node:net').AddressInfo }> {
  const loaded = loadConfigFile(file)
  const first = compile(loaded.config, loaded.raw, file, loaded.ca, loaded.listenTls ?? null)
  /** The config text the primary last validated and every worker runs: a new worker starts from it. */
  let runningText = loaded.text
  const n = workerCount(first.config.workers)
  const holder = new SnapshotHolder(first)
  // The primary's own families: reload results and build info (see aggregateMetrics).
  const own = createMetrics({ processMetrics: false, version: VERSION, maxLabelValues: first.config.metrics.maxLabelValues })
  own.configLastReloadSuccess.set(Date.now() / 1000)
  // Rate-limit buckets for workers without Redis: shared by every worker. Upstream budgets
  // (`up:` keys) have a store of their own, so a flood of per-client keys can never evict one.
  const buckets = new MemoryBucketStore()
  const budgets = new MemoryBucketStore()
  const ready = new Set<number>()
  /** The config version each worker last reported running (when ready, and after each reload it applied). */
  const versions = new Map<number, string>()
  /** Questions to workers: who has not answered yet, and the answers by worker id. */
  const pending = new Map<string, { waiting: Set<number>; answers: Map<number, unknown>; exited: number[]; done: () => void }>()
  /** Each live worker's metrics as last read (a scrape or /admin/status), by worker id. */
  const lastMetrics = new Map<number, MetricJSON[]>()
  /** The counters and histograms of the workers that exited, summed (see foldRetired). */
  let retired: MetricJSON[] = []
  let stopping = false
  let restarts = 0
  let quickExits = 0

  // Workers run with Sluice's V8 flags even when the primary was started without them.
  cluster.setupPrimary({ execArgv: withNodeFlags(process.execArgv) })
  const fork = (): Worker => {
    const w = cluster.fork({ SLUICE_WORKER: '1' })
    const started = Date.now()
    serveBuckets(w, buckets, budgets)
    w.on('message', (m: WorkerReply) => {
      if (m?.type === 'sluice:config?') w.send({ type: 'sluice:config', text: runningText } satisfies WorkerMessage, undefined, () => {})
      if (m?.type === 'sluice:ready') {
        // Still starting when the primary began to stop, it could not take the shutdown message
        // (a worker listens for it only once it serves): tell it now, or it would serve until
        // the grace period's SIGKILL.
        if (stopping) {
          log.info({ worker: w.id, pid: m.pid }, 'worker ready while stopping; draining it')
          w.send({ type: 'sluice:shutdown' } satisfies WorkerMessage, undefined, () => {})
          return
        }
        ready.add(w.id)
        if (m.version !== undefined) versions.set(w.id, m.version)
        log.info({ worker: w.id, pid: m.pid }, 'worker ready')
        // It fetched its config before a reload committed (and, not ready yet, was not asked to
        // apply it): bring it to the running config. (One that becomes ready while a reload is
        // in progress runs the config still committed; the reload asks it before answering.)
        const running = holder.current().version
        if (m.version !== undefined && m.version !== running) {
          log.info({ worker: w.id, version: m.version, running }, 'worker started on an older config; sending it the running one')
          void catchUp((x) => x.id === w.id)
        }
      }
      if (m?.type === 'sluice:reply') {
        const p = pending.get(m.id)
        if (p && p.waiting.delete(w.id)) { p.answers.set(w.id, m.value); if (p.waiting.size === 0) p.done() }
      }
    })
    w.once('exit', () => {
      // A worker that ran a while resets the backoff; one that dies at once makes it grow.
      if (Date.now() - started > 30_000) quickExits = 0
      else quickExits++
    })
    return w
  }

  type Ask = { type: 'sluice:reload'; text: string } | { type: 'sluice:purge'; sel: { key?: string; prefix?: string; tag?: string } } | { type: 'sluice:status' } | { type: 'sluice:history'; since?: number } | { type: 'sluice:metrics' } | { type: 'sluice:upstreams' } | { type: 'sluice:readiness' }
  interface Asked { asked: Worker[]; answers: Map<number, unknown>; exited: number[]; missing: number[] }
  /** Ask every ready worker (that `only` keeps); resolve once all have answered (or exited), or after timeoutMs with what came. */
  const askEach = (msg: Ask, timeoutMs = 5000, only: (w: Worker) => boolean = () => true): Promise<Asked> => {
    const asked = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected() && ready.has(w.id) && only(w))
    if (asked.length === 0) return Promise.resolve({ asked, answers: new Map(), exited: [], missing: [] })
    const id = randomUUID()
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined
      const entry = {
        waiting: new Set(asked.map((w) => w.id)),
        answers: new Map<number, unknown>(),
        exited: [] as number[],
        done: () => {
          if (!pending.delete(id)) return
          clearTimeout(timer)
          resolve({ asked, answers: entry.answers, exited: entry.exited, missing: [...entry.waiting] })
        }
      }
      pending.set(id, entry)
      for (const w of asked) w.send({ ...msg, id }, undefined, () => {})
      timer = setTimeout(entry.done, timeoutMs)
      timer.unref()
    })
  }
  /** Ask every ready worker; resolve with their answers (or what came within 5 s). */
  const ask = async (msg: Ask): Promise<unknown[]> => [...(await askEach(msg)).answers.values()]

  /**
   * Every ready worker reloads the file the primary validated; resolves when all have applied
   * it, throws a ReloadError listing each worker that failed, exited or did not answer in time.
   */
  const RELOAD_TIMEOUT_MS = 10_000
  /**
   * The workers' answers to a reload: each that applied it has its version noted; the result
   * is one line per worker that refused it (with its errors), exited or did not answer.
   */
  const reloadErrors = ({ asked, answers, exited, missing }: Asked): string[] => {
    const pid = (id: number) => asked.find((w) => w.id === id)?.process.pid
    const errors: string[] = []
    for (const [id, r] of answers) {
      const res = r as ReloadResult | null
      if (res?.ok === true) { versions.set(id, res.version); continue }
      for (const e of res?.errors?.length ? res.errors : ['no result']) errors.push(`worker ${id} (pid ${pid(id)}): ${e}`)
    }
    for (const id of exited) errors.push(`worker ${id} (pid ${pid(id)}): exited before answering`)
    for (const id of missing) errors.push(`worker ${id} (pid ${pid(id)}): did not answer within ${RELOAD_TIMEOUT_MS / 1000} s`)
    return errors
  }
  const reloadWorkers = async (text: string): Promise<void> => {
    const asked: Worker[] = []
    const answers = new Map<number, unknown>()
    const exited: number[] = []
    const missing: number[] = []
    // A worker that becomes ready while the others apply the text (a crashed one's replacement)
    // started on the config still running, and was not asked: ask it too, before the answer,
    // so that every worker runs the config a 200 reports. The primary commits in the same turn
    // as the last round's answer, so no other worker can become ready in between.
    for (;;) {
      const round = await askEach({ type: 'sluice:reload', text }, RELOAD_TIMEOUT_MS, (w) => !asked.includes(w))
      if (round.asked.length === 0) break
      asked.push(...round.asked)
      for (const [id, r] of round.answers) answers.set(id, r)
      exited.push(...round.exited)
      missing.push(...round.missing)
    }
    const pid = (id: number) => asked.find((w) => w.id === id)?.process.pid
    const errors = reloadErrors({ asked, answers, exited, missing })
    if (errors.length) {
      const applied = [...answers.values()].filter((r) => (r as ReloadResult | null)?.ok === true).length
      log.error({ workers: asked.length, applied, errors }, 'not every worker applied the reload; the primary keeps the previous config (retry the reload)')
      // Every worker goes back to the running config (those that applied it, and any that did
      // not answer in time but may apply it late), so every worker runs one config.
      if (applied > 0 || missing.length > 0) {
        const back = await askEach({ type: 'sluice:reload', text: runningText }, RELOAD_TIMEOUT_MS)
        for (const [id, r] of back.answers) if ((r as ReloadResult | null)?.ok === true) versions.set(id, (r as ReloadResult).version)
        const failed = [...back.answers].filter(([, r]) => (r as ReloadResult | null)?.ok !== true).map(([id]) => id)
        const stuck = [...failed, ...back.missing]
        if (stuck.length) {
          log.error({ workers: stuck }, 'a worker could not go back to the running config')
          for (const id of stuck) errors.push(`worker ${id} (pid ${pid(id)}): could not go back to the running config; it may run the refused one until it is replaced`)
        } else log.info({ workers: applied }, 'the workers that applied the refused reload are back on the running config')
      }
      throw new ReloadError(errors)
    }
  }

  /**
   * Sends the running config to the ready workers `only` keeps whose reported version is not the
   * running one (a worker that missed a reload). Resolves with an error for each that did not
   * apply it, which is logged: the next reload, even of an unchanged file, tries again.
   */
  const catchUp = async (only: (w: Worker) => boolean = () => true): Promise<string[]> => {
    const running = holder.current().version
    const round = await askEach({ type: 'sluice:reload', text: runningText }, RELOAD_TIMEOUT_MS, (w) => only(w) && versions.get(w.id) !== running)
    if (round.asked.length === 0) return []
    const errors = reloadErrors(round)
    const asked = round.asked
    if (errors.length) log.error({ version: running, errors }, 'a worker could not catch up with the running config; it runs an older one until the next reload')
    else log.info({ workers: asked.map((w) => w.id), version: running }, 'workers caught up with the running config')
    return errors
  }

  cluster.on('exit', (w, code, signal) => {
    ready.delete(w.id)
    versions.delete(w.id)
    // Its counters stay in /metrics's totals, as of the last time they were read.
    const last = lastMetrics.get(w.id)
    if (last) { retired = foldRetired(retired, last); lastMetrics.delete(w.id) }
    // A worker that exits will not answer: stop waiting for it.
    for (const p of pending.values()) {
      if (p.waiting.delete(w.id)) { p.exited.push(w.id); if (p.waiting.size === 0) p.done() }
    }
    if (stopping) return
    restarts++
    const delay = Math.min(10_000, 100 * 2 ** Math.min(quickExits, 7))
    log.error({ worker: w.id, code, signal, restartInMs: delay }, 'worker exited; replacing it')
    setTimeout(() => { if (!stopping) fork() }, delay).unref()
  })

  const reloader = new Reloader({
    file,
    holder,
    log,
    metrics: own,
    // Validated here, once (a bad file is logged, counted and changes no worker); then every
    // worker loads the same file, and the primary swaps (and answers ok) only when all did.
    prepare: async (next, _prev, loaded) => {
      const text = loaded.text
      await reloadWorkers(text)
      return {
        commit: () => {
          runningText = text
          reloader.watchFiles(tlsFiles(next)) // a rotated certificate reloads every worker through here
          // Every ready worker was asked above; one that still reports another version gets it now.
          void catchUp()
        }
      }
    },
    // The file is the running config, but a worker may not run it (its catch-up failed): a
    // retry of the reload is the way to bring it over, so it is not a no-op here.
    unchanged: async () => {
      const errors = await catchUp()
      if (errors.length) throw new ReloadError(errors)
    }
  })

  const aggregated = async (): Promise<Registry> => {
    const { asked, answers } = await askEach({ type: 'sluice:metrics' })
    const workers: MetricJSON[][] = []
    const answered = new Set<number>()
    for (const w of asked) {
      const m = answers.get(w.id)
      // One that exited since it answered was folded into `retired` with the values read before
      // (adding these too would count it twice); the counts it made in between are lost.
      if (!Array.isArray(m) || w.isDead()) continue
      lastMetrics.set(w.id, m as MetricJSON[])
      workers.push(m as MetricJSON[])
      answered.add(w.id)
    }
    // A live worker that did not answer in time (busy or stalled), or was not asked (its channel
    // is closing): its values as last read stand in, so the counter totals do not dip for this
    // scrape (Prometheus's rate() would take the dip for a reset).
    for (const [id, last] of lastMetrics) {
      const w = cluster.workers?.[id]
      if (!answered.has(id) && w !== undefined && !w.isDead()) workers.push(last)
    }
    if (retired.length) workers.push(retired)
    return aggregateMetrics(workers, await own.registry.getMetricsAsJSON() as MetricJSON[])
  }
  /** The ready worker at `index` (?worker=N of /admin/profile and /admin/heap-snapshot; default the first). */
  const readyWorker = (index: number | undefined): Worker => {
    const live = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected() && ready.has(w.id))
    const w = live[index ?? 0]
    if (w === undefined) throw new Error(index === undefined ? 'no worker is ready' : `no worker ${index} (${live.length} ready: 0..${live.length - 1})`)
    return w
  }
  const workerStates = (): WorkerState[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w)
    .map((w) => ({ id: w.id, pid: w.process.pid, ready: ready.has(w.id) }))

  const admin = buildAdmin({
    current: () => holder.current(),
    metrics: { registry: { contentType: own.registry.contentType, metrics: async () => (await aggregated()).metrics() } } as unknown as Metrics,
    log,
    reload: () => reloader.reload('admin'),
    purge: async (sel) => {
      const { asked, answers, missing, exited } = await askEach({ type: 'sluice:purge', sel })
      const list = [...answers.values()] as ({ purged: number; incomplete?: string } | null)[]
      const purged = list.reduce((a, b) => a + (b?.purged ?? 0), 0)
      // A worker that failed, did not answer or exited may still hold the entry in its memory.
      const unreached = [...new Set([
        ...list.map((r) => r === null ? 'worker' : r.incomplete).filter((x): x is string => x !== undefined),
        ...(missing.length || exited.length || asked.length === 0 ? ['worker'] : [])
      ])]
      return unreached.length ? { purged, incomplete: unreached.join(',') } : { purged }
    },
    readiness: async () => {
      // Draining (SIGTERM): not ready, at once, so a load balancer stops sending, as a single
      // process does. The workers are not asked: they are draining too (one stuck in its drain
      // held every probe for the whole second below), and their reasons change nothing.
      if (stopping) {
        return {
          ready: false,
          degraded: [...(ready.size < n ? ['workers'] : []), ...(reloader.lastError ? ['config'] : [])],
          details: { draining: true, workers: { configured: n, ready: ready.size, restarts } }
        }
      }
      // Redis and the rate limits are each worker's own: their reasons (redis, ratelimit) are
      // merged in, as /admin/status does. A worker that does not answer within a second is left
      // out rather than holding up a load balancer's probe.
      const { asked, answers } = await askEach({ type: 'sluice:readiness' }, 1000)
      const each = asked.map((w) => ({ pid: w.process.pid, r: answers.get(w.id) as { degraded?: string[]; details?: Record<string, unknown> } | null | undefined }))
      const degraded = [...new Set([
        ...each.flatMap(({ r }) => r?.degraded ?? []),
        ...(ready.size < n ? ['workers'] : []),
        ...(reloader.lastError ? ['config'] : [])
      ])]
      const first = each.find(({ r }) => r)?.r
      return {
        ready: ready.size > 0 && !stopping, // a SIGTERM that came while the workers answered
        degraded,
        details: {
          workers: { configured: n, ready: ready.size, restarts },
          ...(reloader.lastError ? { lastReloadErrors: reloader.lastError } : {}),
          // Redis is shared: the first worker's view of it (each worker's reasons are below).
          ...(first?.details?.redis !== undefined ? { redis: first.details.redis } : {}),
          perWorker: each.map(({ pid, r }) => ({ pid, degraded: r?.degraded ?? null }))
        }
      }
    },
    // Pools, breakers and target health are per worker: merged here (src/cluster/upstreams.ts).
    upstreams: async () => {
      const { asked, answers } = await askEach({ type: 'sluice:upstreams' })
      return mergeUpstreams(asked.map((w) => ({ pid: w.process.pid, upstreams: answers.get(w.id) as Record<string, UpstreamView> | undefined })))
    },
    // The primary serves no traffic: profile a worker (?worker=N, by index; default the first ready one).
    profile: async (ms, index) => {
      const w = readyWorker(index)
      const id = randomUUID()
      return await new Promise((resolve, reject) => {
        const timer = setTimeout(() => { pending.delete(id); reject(Object.assign(new Error('the worker did not answer'), { statusCode: 504 })) }, ms + 10_000)
        const entry = { waiting: new Set([w.id]), answers: new Map<number, unknown>(), exited: [] as number[], done: () => { pending.delete(id); clearTimeout(timer); resolve(entry.answers.get(w.id)) } }
        pending.set(id, entry)
        w.send({ type: 'sluice:profile', id, ms }, undefined, () => {})
      })
    },
    // As a profile: a worker's heap (?worker=N), streamed as the worker sends it. It resolves on
    // the first chunk, so a busy worker (or a bad index) is still answered with an error status.
    // A worker that sends nothing for `timeoutMs` (wedged, or stopped) ends it: a 504 before the
    // first chunk, else the stream is cut (it was answered 200 already). Without this bound the
    // admin request hung for as long as the worker did.
    heapSnapshot: async (index, timeoutMs = HEAP_SNAPSHOT_TIMEOUT_MS) => {
      const w = readyWorker(index)
      const id = randomUUID()
      const out = new PassThrough()
      return await new Promise<Readable>((resolve, reject) => {
        let started = false
        let timer: NodeJS.Timeout | undefined
        const arm = () => {
          clearTimeout(timer)
          timer = setTimeout(() => {
            pending.delete(id)
            w.off('message', onChunk)
            const err = Object.assign(new Error(`worker ${index ?? 0} sent no heap snapshot data for ${timeoutMs / 1000} s`), { statusCode: 504 })
            log.error({ worker: w.id, pid: w.process.pid, timeoutMs, started }, 'heap snapshot timed out')
            if (started) out.destroy(err)
            else reject(err)
          }, timeoutMs)
          timer.unref()
        }
        const onChunk = (m: WorkerReply) => {
          if (m?.type !== 'sluice:chunk' || m.id !== id) return
          arm()
          if (!started) { started = true; resolve(out) }
          out.write(m.chunk)
        }
        w.on('message', onChunk)
        arm()
        const entry = {
          waiting: new Set([w.id]),
          answers: new Map<number, unknown>(),
          exited: [] as number[],
          done: () => {
            pending.delete(id)
            clearTimeout(timer)
            w.off('message', onChunk)
            const r = entry.answers.get(w.id) as { done?: boolean; busy?: boolean; error?: string } | null | undefined
            if (r?.done === true) { if (!started) resolve(out); out.end(); return }
            const err = r?.busy === true
              ? Object.assign(new Error('a profile is already running in that worker'), { statusCode: 409 })
              : new Error(r?.error ?? 'the worker exited before its heap snapshot was complete')
            if (started) out.destroy(err)
            else reject(err)
          }
        }
        pending.set(id, entry)
        w.send({ type: 'sluice:heap-snapshot', id } satisfies WorkerMessage, undefined, () => {})
      })
    },
    // The charts' history: every worker samples its own metrics; samples of the same instant
    // are merged (rates summed, hit ratio from summed counts, p50 and p99 from the summed histograms).
    history: async (since) => mergeHistories((await ask({ type: 'sluice:history', since }) as HistoryAnswer[]).filter((a) => a && Array.isArray(a.samples))),
    status: async () => {
      const [all, reg] = await Promise.all([ask({ type: 'sluice:status' }) as Promise<Record<string, unknown>[]>, aggregated()])
      const json = await reg.getMetricsAsJSON()
      const family = (name: string) => ({ get: async () => json.find((m) => m.name === name) ?? { values: [] } })
      const view = { httpDuration: family('sluice_http_request_duration_seconds'), httpRequests: family('sluice_http_requests_total') } as unknown as Metrics
      const [latency, ratios] = await Promise.all([latencyByRoute(view), cacheRatios(view)])
      const base = (all.find((s) => s) ?? {}) as Record<string, unknown>
      // Routes: latency and hit ratio from every worker's histograms together.
      const routes = (base.routes as { name: string }[] | undefined)?.map((r) => ({ ...r, latency: latency[r.name] ?? { count: 0, p50: null, p95: null, p99: null }, cacheHitRatio: ratios[r.name]?.ratio ?? null }))
      const degraded = [...new Set(all.flatMap((s) => (s?.degraded as string[] | undefined) ?? []))]
      if (ready.size < n) degraded.push('workers')
      return {
        ...base,
        ...(routes ? { routes } : {}),
        // Draining (SIGTERM): not ready, as /readyz says, though the workers still answer.
        status: ready.size === 0 || stopping ? 'not-ready' : degraded.length ? 'degraded' : 'ready',
        degraded,
        workers: { configured: n, ready: ready.size, restarts },
        // Breakers, pools and L1 are per worker: `upstreams` and `cache` above are the first worker's.
        perWorker: all.map((s) => ({
          pid: s?.pid,
          requests: ((s?.routes as { latency?: { count?: number } }[] | undefined) ?? []).reduce((a, r) => a + (r.latency?.count ?? 0), 0),
          degraded: s?.degraded,
          memory: s?.memory
        }))
      }
    }
  })
  const cfg = first.config
  await admin.listen({ host: cfg.admin.host, port: cfg.admin.port })
  for (let i = 0; i < n; i++) fork()
  reloader.watch()
  reloader.watchFiles(tlsFiles(first))
  process.on('SIGHUP', () => { void reloader.reload('SIGHUP') })
  log.info({ workers: n, admin: `${cfg.admin.host}:${cfg.admin.port}` }, 'sluice primary started')

  return {
    workers: workerStates,
    /** Where the admin port listens (the CLI notes it for `sluice health`). */
    admin: admin.server.address() as import('node:net').AddressInfo,
    async stop () {
      stopping = true
      reloader.close()
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w)
      await Promise.all(workers.map((w) => new Promise<void>((resolve) => {
        if (w.isDead()) { resolve(); return }
        w.once('exit', () => resolve())
        try { w.send({ type: 'sluice:shutdown' }, undefined, () => {}) } catch { w.kill('SIGTERM') }
        setTimeout(() => { w.process.kill('SIGKILL') }, holder.current().config.shutdownGraceMs + 3000).unref()
      })))
      await admin.close()
    }
  }
}

/**
 * In a worker, before it starts: the config text the primary runs. Falls back to the file
 * (undefined) if the primary does not answer within 10 s (it always does; this only guards
 * against a wedged IPC channel).
 */
export function configFromPrimary (timeoutMs = 10_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const done = (text: string | undefined) => { clearTimeout(timer); process.off('message', onMessage); resolve(text) }
    const onMessage = (m: WorkerMessage) => { if (m?.type === 'sluice:config' && typeof m.text === 'string' && m.text !== '') done(m.text) }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    process.on('message', onMessage)
    process.send?.({ type: 'sluice:config?' } satisfies WorkerReply, undefined, undefined, () => {})
  })
}

/** In a worker: answer the primary's messages from this worker's gateway. */
export function serveWorker (gw: { holder: { current (): { version: string } }; readiness (): { degraded: string[]; details: Record<string, unknown> }; reloader: { reload (t: string, text?: string): Promise<ReloadResult> }; cache: { purge (s: object): Promise<{ purged: number; incomplete?: string }> }; metrics: Metrics; close (): Promise<void> }, status: () => Promise<unknown>, log: Logger, upstreams: () => unknown = () => ({})): void {
  const reply = (id: string, value: unknown) => { if (process.connected) process.send?.({ type: 'sluice:reply', id, value }, undefined, undefined, () => {}) }
  process.on('message', (m: WorkerMessage) => {
    if (m?.type === 'sluice:reload') void gw.reloader.reload('primary', m.text).then((r) => reply(m.id, r))
    else if (m?.type === 'sluice:purge') void gw.cache.purge(m.sel).then((r) => reply(m.id, r), () => reply(m.id, null))
    else if (m?.type === 'sluice:status') void status().then((s) => reply(m.id, { ...(s as object), pid: process.pid }), () => reply(m.id, null))
    else if (m?.type === 'sluice:history') {
      const h = historyOf(gw.metrics)
      reply(m.id, h ? h.answer(typeof m.since === 'number' ? m.since : undefined, true) : null)
    } else if (m?.type === 'sluice:upstreams') void Promise.resolve(upstreams()).then((u) => reply(m.id, u), () => reply(m.id, null))
    else if (m?.type === 'sluice:profile') void cpuProfile(m.ms).then((p) => reply(m.id, p), () => reply(m.id, null))
    else if (m?.type === 'sluice:heap-snapshot') {
      if (profilerBusy()) { reply(m.id, { busy: true }); return }
      // Sent on as it is taken, in the order of the channel; the reply after the last chunk ends it.
      const snap = heapSnapshot().setEncoding('utf8')
      snap.on('data', (chunk: string) => { if (process.connected) process.send?.({ type: 'sluice:chunk', id: m.id, chunk } satisfies WorkerReply, undefined, undefined, () => {}) })
      snap.on('end', () => reply(m.id, { done: true }))
      snap.on('error', (err) => reply(m.id, { error: err.message }))
    } else if (m?.type === 'sluice:readiness') { try { reply(m.id, gw.readiness()) } catch { reply(m.id, null) } }
    else if (m?.type === 'sluice:metrics') void gw.metrics.registry.getMetricsAsJSON().then((j) => reply(m.id, j), () => reply(m.id, []))
    else if (m?.type === 'sluice:shutdown') {
      log.info('worker draining')
      gw.close().then(async () => { await logDrained(log); process.exit(0) }, () => process.exit(1))
    }
  })
  process.send?.({ type: 'sluice:ready', pid: process.pid, version: gw.holder.current().version } satisfies WorkerReply)
}
