// Config reloads: SIGHUP, a change to the file (debounced; the directory is watched too, so
// atomic renames and mounted ConfigMaps work) and POST /admin/reload. A reload is
// all-or-nothing, in three steps: (1) load, compile and prepare everything the new snapshot
// needs (new upstream pools built but not in use; CA files were read at load) — any failure
// here throws, the prepared parts are discarded and nothing live has changed; (2) swap one
// reference; (3) commit: install the new pools, retire the old ones, reconcile the guards
// (steps that cannot fail). A file that fails changes nothing: the old snapshot keeps serving.
import { stat, statSync, watch, type FSWatcher, type Stats } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import type { Logger } from 'pino'
import { loadConfigFile, parseConfig, ConfigError, formatIssue, type LoadedConfig } from './load.js'
import { compile, type Snapshot } from './compile.js'
import type { Metrics } from '../observability/metrics.js'
import { diffSnapshots, listenNeedsRestart, restartKeys, LISTEN_RESTART_WARNING } from './diff.js'

export interface ReloadResult {
  ok: boolean
  version: string
  changed: boolean
  errors?: string[]
  warnings?: string[]
  diff?: string[]
}

/** A reload failure that is not in the file (for example a cluster worker that did not apply it). */
export class ReloadError extends Error {
  constructor (readonly errors: string[]) {
    super(errors.join('\n'))
    this.name = 'ReloadError'
  }
}

export class SnapshotHolder {
  constructor (private snap: Snapshot) {}
  current (): Snapshot { return this.snap }
  swap (next: Snapshot): Snapshot { const old = this.snap; this.snap = next; return old }
}

/** What prepare() built for a new snapshot, not yet in use. */
export interface ReloadPlan {
  /** Right after the swap: put the prepared state in use and release the old. Must not throw. */
  commit (): void
}

export interface ReloaderDeps {
  file: string
  holder: SnapshotHolder
  log: Logger
  metrics: Metrics
  /**
   * Before the swap: build and check the state that outlives the snapshot (pools, guards)
   * without changing what serves. Throwing (or rejecting) fails the reload with nothing changed.
   */
  prepare: (next: Snapshot, prev: Snapshot, loaded: LoadedConfig) => ReloadPlan | Promise<ReloadPlan>
  /**
   * The file is the running config: nothing to swap. The cluster primary brings over any worker
   * that does not run it yet; throwing fails the reload (the running snapshot stays, as always).
   */
  unchanged?: () => Promise<void>
  debounceMs?: number
  /**
   * How often the file (and the certificate files given to watchFiles) is also stat()ed, for
   * changes no directory event reports (symlinks to elsewhere).
   */
  pollMs?: number
}

/** What the poll compares: a new inode (a rename or symlink swap), size or modification time. */
function statKey (s: Stats): string {
  return `${s.ino}:${s.size}:${s.mtimeMs}`
}

/** statKey() of a file now, through its symlinks; undefined when it cannot be stat()ed. */
function statKeyNow (file: string): string | undefined {
  try { return statKey(statSync(file)) } catch { return undefined }
}

/**
 * What the poll compares each file with, taken as a load reads the files (by absolute path):
 * the gateway's first load hands these to Reloader.seed(), so a change saved between that
 * read and the start of watching (the listener binding, a Redis that is slow to answer) is
 * reloaded by the first poll instead of being taken for what was read.
 */
export function statKeysNow (files: readonly string[]): Map<string, string> {
  const keys = new Map<string, string>()
  for (const f of files) {
    const abs = resolve(f)
    const k = statKeyNow(abs)
    if (k !== undefined) keys.set(abs, k)
  }
  return keys
}

export class Reloader {
  private watchers: FSWatcher[] = []
  private timer: NodeJS.Timeout | null = null
  private running: Promise<ReloadResult> | null = null
  lastError: string[] | null = null
  /**
   * statKey() of each polled file (the config file, the certificate files) when it was last
   * read (or watched from), by absolute path.
   */
  private seen = new Map<string, string>()
  private poll: NodeJS.Timeout | null = null
  /** The config file, once watch() polls it. */
  private polledConfig: string | null = null
  /** The certificate files of watchFiles(), absolute. */
  private certFiles: string[] = []

  constructor (private readonly deps: ReloaderDeps) {}

  /**
   * Load, compile, prepare, swap, commit. Never throws: a failure is logged, counted and returned.
   * `text`: apply this config text instead of reading the file (a cluster worker applies the
   * text its primary validated, so a file saved in between never reaches a worker unchecked).
   */
  reload (trigger: string, text?: string): Promise<ReloadResult> {
    // Serialise reloads: one at a time, the last trigger wins.
    const run = async (): Promise<ReloadResult> => {
      const { holder, log, metrics, file } = this.deps
      const prev = holder.current()
      try {
        if (text === undefined) {
          let st: Stats | null = null
          let statError: NodeJS.ErrnoException | null = null
          try { st = statSync(file) } catch (err) { statError = err as NodeJS.ErrnoException } // loadConfigFile reports a file it cannot read
          // A missing file forgets the last one seen, so the poll reloads whatever comes back.
          if (st !== null) this.seen.set(resolve(file), statKey(st))
          else this.seen.delete(resolve(file))
          // The certificate files too, before the load reads them: a change after this stat is
          // one the poll still sees (a key rotated after its certificate, and read in between as
          // a pair that does not match, reloads again when the key changes). Before the empty
          // file check, so a rotation during a save is not polled again every second: the
          // write that follows reads the new pair.
          for (const f of this.certFiles) this.note(f)
          // An editor or a tool that truncates the file and then writes it: the empty file
          // between the two is not a config with errors, and the write that follows reloads.
          if (trigger === 'file' && st !== null && st.size === 0) {
            log.warn({ trigger, version: prev.version }, 'config file is empty (a save in progress?); the previous config keeps serving until it is written')
            return { ok: false, version: prev.version, changed: false, errors: [`${file}: the file is empty`] }
          }
          // The same for a file saved by rename (write a temp file, unlink, rename) or a swapped
          // symlink: the path can be missing for a moment. The old config keeps serving, as
          // nginx's would, and the file's return (the directory watch or the stat poll) reloads.
          // Only a change the watcher saw: SIGHUP and POST /admin/reload asked for this file,
          // and fail naming it.
          if (trigger === 'file' && statError?.code === 'ENOENT') {
            log.warn({ trigger, file, version: prev.version }, 'config file is missing (a save by rename in progress?); the previous config keeps serving until it is back')
            return { ok: false, version: prev.version, changed: false, errors: [`${file}: the file is missing (ENOENT)`] }
          }
        }
        const loaded = text === undefined ? loadConfigFile(file) : parseConfig(text, file)
        const next = compile(loaded.config, loaded.raw, file, loaded.ca, loaded.listenTls ?? null)
        if (next.version === prev.version) {
          await this.deps.unchanged?.()
          log.info({ trigger, version: next.version }, 'config unchanged')
          metrics.configReloads.labels('success').inc()
          metrics.configLastReloadSuccess.set(Date.now() / 1000)
          this.lastError = null
          return { ok: true, version: next.version, changed: false, warnings: loaded.warnings }
        }
        for (const w of loaded.warnings) log.warn(w)
        const diff = diffSnapshots(prev, next)
        const prepared = this.deps.prepare(next, prev, loaded)
        const plan = prepared instanceof Promise ? await prepared : prepared
        // Swap and commit in one synchronous step: no request sees the new snapshot before its pools.
        holder.swap(next)
        plan.commit()
        metrics.configReloads.labels('success').inc()
        metrics.configLastReloadSuccess.set(Date.now() / 1000)
        this.lastError = null
        log.info({ trigger, version: next.version, previous: prev.version, routes: next.routes.length, diff }, 'config reloaded')
        // The keys read only at start (each is logged by the commit): the answer says so too.
        const restart = [...(listenNeedsRestart(prev.config, next.config) ? ['listen'] : []), ...restartKeys(prev.config, next.config)]
        const warnings = [...loaded.warnings, ...restart.map((k) => k === 'listen' ? LISTEN_RESTART_WARNING : `a change to "${k}" takes effect at the next restart`)]
        return { ok: true, version: next.version, changed: true, warnings, diff }
      } catch (err) {
        // A listener certificate or key that is missing when the watcher saw a change: the
        // files are being swapped by rename (write, unlink, rename), as the config file can be.
        // The old certificate keeps serving and the file's return reloads (the poll: `note`
        // kept what was last seen of it). Only files this process already watches: a new path
        // the edited config names, or a reload asked for, fails as any other error.
        const missing = trigger === 'file' && err instanceof ConfigError ? this.missingCertFiles(err) : null
        if (missing !== null) {
          const { log, holder } = this.deps
          log.warn({ trigger, files: missing, version: holder.current().version }, 'a certificate file is missing (a rotation in progress?); the previous certificate keeps serving until it is back')
          return { ok: false, version: holder.current().version, changed: false, errors: missing.map((f) => `${f}: the file is missing (ENOENT)`) }
        }
        metrics.configReloads.labels('failure').inc()
        const errors = err instanceof ConfigError
          ? err.issues.map(formatIssue)
          : err instanceof ReloadError ? err.errors : [(err as Error).message]
        this.lastError = errors
        log.error({ trigger, errors, version: prev.version }, 'config reload failed; the previous config keeps serving')
        return { ok: false, version: prev.version, changed: false, errors }
      }
    }
    const p = (this.running ?? Promise.resolve()).then(run, run)
    this.running = p
    return p
  }

  /** What the files were when they were read, before watch() and watchFiles() (see statKeysNow). */
  seed (keys: ReadonlyMap<string, string>): void {
    for (const [f, k] of keys) this.seen.set(f, k)
  }

  /** Watch the file and its directory; reload after `debounceMs` of quiet. */
  watch (): void {
    const file = resolve(this.deps.file)
    const dir = dirname(file)
    const name = basename(file)
    try {
      const w = watch(dir, { persistent: false }, (_event, changed) => {
        // Atomic renames and Kubernetes ..data symlink swaps show up as other names in the directory.
        if (changed === null || changed === name || String(changed).startsWith('..') || String(changed).startsWith('.' + name)) this.schedule()
      })
      w.on('error', (err) => this.deps.log.warn({ err: err.message }, 'config directory watch failed'))
      this.watchers.push(w)
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message, dir }, 'cannot watch the config directory; use SIGHUP or POST /admin/reload')
    }
    this.polledConfig = file
    if (!this.seen.has(file)) this.note(file)
    this.startPoll()
  }

  /**
   * The watched certificate files a load could not read for ENOENT (edge/tls.ts's `cannot read
   * "<file>": ENOENT`), when that is every issue it has; else null.
   */
  private missingCertFiles (err: ConfigError): string[] | null {
    const files: string[] = []
    for (const issue of err.issues) {
      const m = /^cannot read (".*"): ENOENT$/.exec(issue.message)
      const f = m === null ? null : resolve(JSON.parse(m[1]) as string)
      if (f === null || !this.certFiles.includes(f)) return null
      files.push(f)
    }
    return files.length > 0 ? files : null
  }

  /** Record what the file's stat() is now (nothing when it cannot be stat()ed). */
  private note (file: string): void {
    const k = statKeyNow(file)
    if (k !== undefined) this.seen.set(file, k)
  }

  /**
   * The directory's events miss a file that is a symlink into another directory (edited
   * there), or that sits under a symlinked directory that is swapped (a release symlink,
   * live -> v2/): the directory watched is where the links pointed at start. So the config
   * file and the certificate files are also stat()ed, which follows the links now, and a
   * change reloads as a directory event does. Compared with each file as it was last read
   * (fs.watchFile would compare with its own first stat, taken later: a change in between
   * would never be seen). One timer for all of them.
   */
  private startPoll (): void {
    if (this.poll !== null) return
    this.poll = setInterval(() => {
      const files = this.polledConfig !== null ? [this.polledConfig, ...this.certFiles] : this.certFiles
      for (const f of files) {
        stat(f, (err, st) => { if (!err && this.poll !== null && statKey(st) !== this.seen.get(f)) this.schedule() })
      }
    }, this.deps.pollMs ?? 1000)
    this.poll.unref()
  }

  private fileWatchers: FSWatcher[] = []
  private watchedFiles = ''

  /**
   * Also reload when one of these files changes (the listener's certificate and key): a
   * rotated Let's Encrypt or cert-manager secret loads without a signal. Their directories are
   * watched, and the files are polled with the config file (startPoll). Replaces the list.
   */
  watchFiles (files: readonly string[]): void {
    const key = files.map((f) => resolve(f)).join('\0')
    if (key === this.watchedFiles) return
    this.watchedFiles = key
    // A file still watched keeps what was seen of it (as last read); a new one starts from now.
    const next = [...new Set(files.map((f) => resolve(f)))]
    for (const f of this.certFiles) if (!next.includes(f) && f !== this.polledConfig) this.seen.delete(f)
    this.certFiles = next
    for (const f of next) if (!this.seen.has(f)) this.note(f)
    if (this.certFiles.length > 0) this.startPoll()
    for (const w of this.fileWatchers) w.close()
    this.fileWatchers = []
    const byDir = new Map<string, Set<string>>()
    for (const f of files) {
      const abs = resolve(f)
      const names = byDir.get(dirname(abs)) ?? new Set<string>()
      names.add(basename(abs))
      byDir.set(dirname(abs), names)
    }
    for (const [dir, names] of byDir) {
      try {
        const w = watch(dir, { persistent: false }, (_event, changed) => {
          if (changed === null || names.has(String(changed)) || String(changed).startsWith('..')) this.schedule()
        })
        w.on('error', (err) => this.deps.log.warn({ err: err.message, dir }, 'certificate directory watch failed'))
        this.fileWatchers.push(w)
      } catch (err) {
        this.deps.log.warn({ err: (err as Error).message, dir }, 'cannot watch the certificate directory; use SIGHUP or POST /admin/reload after a rotation')
      }
    }
  }

  /** Reload after `debounceMs` of quiet (every watched change restarts the wait). */
  private schedule (): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => { this.timer = null; void this.reload('file') }, this.deps.debounceMs ?? 250)
    this.timer.unref()
  }

  close (): void {
    if (this.poll !== null) { clearInterval(this.poll); this.poll = null }
    for (const w of this.watchers) w.close()
    this.watchers = []
    for (const w of this.fileWatchers) w.close()
    this.fileWatchers = []
    this.watchedFiles = ''
    this.certFiles = []
    this.polledConfig = null
    if (this.timer) clearTimeout(this.timer)
  }
}
