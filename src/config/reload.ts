// Config reloads: SIGHUP, a change to the file (debounced; the directory is watched too, so
// atomic renames and mounted ConfigMaps work) and POST /admin/reload. A reload loads and
// compiles the whole new snapshot, reconciles the registries, then swaps one reference.
// A file that fails changes nothing: the old snapshot keeps serving.
import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import type { Logger } from 'pino'
import { loadConfigFile, ConfigError } from './load.js'
import { compile, type Snapshot } from './compile.js'
import type { Metrics } from '../observability/metrics.js'
import { diffSnapshots } from './diff.js'

export interface ReloadResult {
  ok: boolean
  version: string
  changed: boolean
  errors?: string[]
  warnings?: string[]
  diff?: string[]
}

export class SnapshotHolder {
  constructor (private snap: Snapshot) {}
  current (): Snapshot { return this.snap }
  swap (next: Snapshot): Snapshot { const old = this.snap; this.snap = next; return old }
}

export interface ReloaderDeps {
  file: string
  holder: SnapshotHolder
  log: Logger
  metrics: Metrics
  /** Create and update state that outlives the snapshot (pools, breakers, limiters) before the swap. */
  reconcile: (next: Snapshot, prev: Snapshot) => void
  debounceMs?: number
}

export class Reloader {
  private watchers: FSWatcher[] = []
  private timer: NodeJS.Timeout | null = null
  private running: Promise<ReloadResult> | null = null
  lastError: string[] | null = null

  constructor (private readonly deps: ReloaderDeps) {}

  /** Load, compile, reconcile, swap. Never throws: a failure is logged, counted and returned. */
  reload (trigger: string): Promise<ReloadResult> {
    // Serialise reloads: one at a time, the last trigger wins.
    const run = async (): Promise<ReloadResult> => {
      const { holder, log, metrics, file } = this.deps
      const prev = holder.current()
      try {
        const loaded = loadConfigFile(file)
        const next = compile(loaded.config, loaded.raw, file)
        if (next.version === prev.version) {
          log.info({ trigger, version: next.version }, 'config unchanged')
          metrics.configReloads.labels('success').inc()
          metrics.configLastReloadSuccess.set(Date.now() / 1000)
          this.lastError = null
          return { ok: true, version: next.version, changed: false, warnings: loaded.warnings }
        }
        for (const w of loaded.warnings) log.warn(w)
        const diff = diffSnapshots(prev, next)
        this.deps.reconcile(next, prev)
        holder.swap(next)
        metrics.configReloads.labels('success').inc()
        metrics.configLastReloadSuccess.set(Date.now() / 1000)
        this.lastError = null
        log.info({ trigger, version: next.version, previous: prev.version, routes: next.routes.length, diff }, 'config reloaded')
        return { ok: true, version: next.version, changed: true, warnings: loaded.warnings, diff }
      } catch (err) {
        metrics.configReloads.labels('failure').inc()
        const errors = err instanceof ConfigError ? err.issues.map((i) => `${i.file}:${i.line}:${i.col} ${i.path || '(file)'}: ${i.message}`) : [(err as Error).message]
        this.lastError = errors
        log.error({ trigger, errors, version: prev.version }, 'config reload failed; the previous config keeps serving')
        return { ok: false, version: prev.version, changed: false, errors }
      }
    }
    const p = (this.running ?? Promise.resolve()).then(run, run)
    this.running = p
    return p
  }

  /** Watch the file and its directory; reload after `debounceMs` of quiet. */
  watch (): void {
    const file = resolve(this.deps.file)
    const dir = dirname(file)
    const name = basename(file)
    const schedule = () => {
      if (this.timer) clearTimeout(this.timer)
      this.timer = setTimeout(() => { this.timer = null; void this.reload('file') }, this.deps.debounceMs ?? 250)
      this.timer.unref()
    }
    try {
      const w = watch(dir, { persistent: false }, (_event, changed) => {
        // Atomic renames and Kubernetes ..data symlink swaps show up as other names in the directory.
        if (changed === null || changed === name || String(changed).startsWith('..') || String(changed).startsWith('.' + name)) schedule()
      })
      w.on('error', (err) => this.deps.log.warn({ err: err.message }, 'config directory watch failed'))
      this.watchers.push(w)
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message, dir }, 'cannot watch the config directory; use SIGHUP or POST /admin/reload')
    }
  }

  close (): void {
    for (const w of this.watchers) w.close()
    this.watchers = []
    if (this.timer) clearTimeout(this.timer)
  }
}
