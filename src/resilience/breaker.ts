// One circuit breaker per upstream behind a two-call seam, allow() before an attempt and
// record() after it.
//
// opossum 9 owns the state machine: open, the reset timer, half-open, the probe's verdict,
// and the events that move sluice_circuit_state. It is kept off the hot path: while the
// circuit is closed, allow() and record() only count, in a rolling window of 10 buckets of
// integers (Window below), and the first failure that takes the window over the threshold
// calls opossum's open(). Firing every request through opossum cost a promise, three events
// and its own bucket arrays per request (about 6 % of a pass-through request; see
// docs/benchmarks.md). Half-open probes, which are few, are fired through opossum as before.
//
// - Opening: as opossum decides it: at least volumeThreshold attempts in the window and a
//   failure rate above errorThresholdPercent (attempts counted when admitted, failures when
//   recorded). The window starts empty on every open and close.
// - allow() decides synchronously: open → SLUICE_ERR_CIRCUIT_OPEN with Retry-After = time
//   until half-open. Half-open admits halfOpenMaxRequests probes at once (the first through
//   opossum, the others beside it); the first probe to finish decides: success closes,
//   failure reopens; an attempt admitted before this half-open round that finishes during it
//   decides nothing. A probe never reported within max(resetTimeoutMs, 1 s) is presumed lost
//   and its slot freed, so a caller that forgets record() cannot wedge the breaker half-open.
// - record() classifies: connect errors, resets, timeouts and failureStatuses are failures;
//   a 4xx never is; a client abort is not the upstream's fault and counts as a success while
//   closed. A half-open probe that ends that way (or with no target in rotation) decides
//   nothing: its slot is freed for the next probe.
// - Transitions set sluice_circuit_state, count sluice_circuit_transitions_total and log once.
// - A reload that changes the settings rebuilds opossum with the state it had (reconfigure());
//   a probe in flight then reports to the new one and still decides its round.
import CircuitBreaker from 'opossum'
import type { Logger } from 'pino'
import { SluiceError, isSluiceError, type ErrorCode } from '../errors.js'
import type { Metrics } from '../observability/metrics.js'
import type { CircuitBreakerConfig } from './config.js'
import { retryAfterSeconds } from './headers.js'

export type BreakerState = 'closed' | 'half-open' | 'open'
const GAUGE: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 }

export interface Outcome {
  /** The upstream's response status, when it answered. */
  status?: number
  /** Why the attempt failed, when it did. */
  error?: unknown
  /** Nothing was sent on the ticket (its deadline passed while it waited): not the upstream's doing. */
  unsent?: boolean
}

/** What allow() hands out; pass it back to record() exactly once. */
export interface Ticket {
  /** @internal */ settle: ((failure: Error | null) => void) | null
  /** @internal */ probeGen: number
  /** @internal */ shadow: boolean
}

const NOOP: Ticket = Object.freeze({ settle: null, probeGen: -1, shadow: false }) as Ticket
const noop = () => {}
const RECORDED = -2

/** opossum 9's `state` option (restores a breaker's state; missing from @types/opossum 8). */
interface OpossumState { enabled?: boolean; closed?: boolean; halfOpen?: boolean; warmUp?: boolean; shutdown?: boolean; lastTimerAt?: number }

/** Error codes of src/errors.ts that mean the upstream itself failed. */
const UPSTREAM_FAILURES = new Set<ErrorCode>([
  'SLUICE_ERR_UPSTREAM_CONNECT', 'SLUICE_ERR_UPSTREAM_RESET', 'SLUICE_ERR_UPSTREAM_DNS',
  'SLUICE_ERR_UPSTREAM_TLS', 'SLUICE_ERR_UPSTREAM_PROTOCOL', 'SLUICE_ERR_UPSTREAM_TIMEOUT'
])

function isAbort (err: unknown): boolean {
  const e = err as { name?: string; code?: string } | null
  return e !== null && typeof e === 'object' && (e.name === 'AbortError' || e.code === 'UND_ERR_ABORTED' || e.code === 'ABORT_ERR')
}

/** Whether an error is the upstream's failure (vs the client going away, or a gateway-side refusal). */
export function isUpstreamFailure (err: unknown): boolean {
  if (isSluiceError(err)) return UPSTREAM_FAILURES.has(err.code)
  return !isAbort(err)
}

/** Rolling counts of the closed state: 10 buckets over windowMs, rotated lazily by the clock. */
class Window {
  private readonly fires = new Int32Array(10)
  private readonly fails = new Int32Array(10)
  private idx = 0
  private start = 0
  totalFires = 0
  totalFails = 0
  private readonly bucketMs: number
  constructor (windowMs: number) { this.bucketMs = Math.max(1, Math.floor(windowMs / 10)) }

  private rotate (now: number): void {
    if (now < this.start + this.bucketMs) return
    const steps = Math.floor((now - this.start) / this.bucketMs)
    if (steps >= 10) { this.reset(now); return }
    for (let i = 0; i < steps; i++) {
      this.idx = (this.idx + 1) % 10
      this.totalFires -= this.fires[this.idx]
      this.totalFails -= this.fails[this.idx]
      this.fires[this.idx] = 0
      this.fails[this.idx] = 0
    }
    this.start += steps * this.bucketMs
  }

  fire (now: number): void { this.rotate(now); this.fires[this.idx]++; this.totalFires++ }
  fail (now: number): void { this.rotate(now); this.fails[this.idx]++; this.totalFails++ }
  reset (now: number): void {
    this.fires.fill(0); this.fails.fill(0)
    this.totalFires = 0; this.totalFails = 0; this.idx = 0; this.start = now
  }
  /** The counts as of `now` (old buckets dropped). */
  read (now: number): { fires: number; failures: number } { this.rotate(now); return { fires: this.totalFires, failures: this.totalFails } }
}

export class Breaker {
  private cb!: CircuitBreaker<[Ticket], unknown>
  private cfg!: CircuitBreakerConfig
  private failureStatuses = new Set<number>()
  private openedAt = 0
  private halfOpenGen = 0
  private probesInFlight = 0
  private lastProbeAt = 0
  /** The last probe fired through opossum: a reload that rebuilds opossum hands it over (reconfigure()). */
  private fired: Ticket | null = null
  /**
   * How long a half-open probe may run before its slot is taken for lost (never reported): the
   * longest an attempt to this upstream may wait for its answer, plus a second. Before that, a
   * slow probe (an upstream that hangs is a common way to fail) keeps its slot, so no more than
   * halfOpenMaxRequests probes run at once.
   */
  private probeLostMs = 11_000
  private win!: Window
  private readonly gauge: { set(v: number): void }
  /** Removes this breaker's state series (its upstream left the config). */
  private readonly forget: () => void
  private readonly transitions: Record<BreakerState, { inc(): void }>
  private readonly log: Logger

  constructor (readonly name: string, cfg: CircuitBreakerConfig, metrics: Metrics, log: Logger) {
    const label = metrics.upstreamLabel(name) // bounded label values (metrics.ts LabelGuard)
    this.gauge = metrics.circuitState.labels(label)
    // The overflow label is shared by every upstream past the cardinality guard: never removed.
    this.forget = label === '_other' ? () => {} : () => metrics.circuitState.remove(label)
    this.transitions = {
      closed: metrics.circuitTransitions.labels(label, 'closed'),
      'half-open': metrics.circuitTransitions.labels(label, 'half-open'),
      open: metrics.circuitTransitions.labels(label, 'open')
    }
    this.log = log
    this.build(cfg, undefined)
    if (cfg.enabled) this.gauge.set(GAUGE[this.state])
  }

  get state (): BreakerState {
    return this.cb.opened ? 'open' : this.cb.halfOpen ? 'half-open' : 'closed'
  }

  /** The longest an attempt may wait for the upstream's answer (its timeoutMs, or a route's longer one). */
  setLongestAttemptMs (ms: number): void {
    this.probeLostMs = ms + 1000
  }

  /** Since the last probe began, have the probes in flight had time to be reported? */
  private probesLost (now: number): boolean {
    return now - this.lastProbeAt >= Math.max(this.cfg.resetTimeoutMs, 1000, this.probeLostMs)
  }

  /**
   * Apply changed settings, keeping the state (open stays open, half-open stays half-open with
   * its probes in flight, closed stays closed). Disabling drops the state and the state series;
   * enabled again, it starts closed.
   */
  reconfigure (cfg: CircuitBreakerConfig): void {
    const old = this.cb
    // The probe fired through the old opossum would settle a promise nobody listens to any
    // more: it reports as a probe beside the new one instead, and still decides the round.
    const probe = this.fired
    this.fired = null
    if (probe !== null && probe.settle !== null) { probe.settle = null; probe.shadow = true }
    if (!cfg.enabled) {
      // Disabled: no state and no state series, as a breaker disabled from the start (an open
      // breaker's 2, or the 1 its reset timer would set, would otherwise stay and alert).
      this.halfOpenGen++ // what is in flight decides nothing
      this.probesInFlight = 0
      this.build(cfg, undefined)
      old.shutdown()
      this.forget()
      return
    }
    const state = (old.toJSON() as unknown as { state: OpossumState }).state
    // An open breaker keeps its schedule: it goes half-open resetTimeoutMs (the new value)
    // after it opened, not a whole resetTimeoutMs after the reload. opossum restores an open
    // state by starting a full resetTimeout timer, so it is built with the time left (or told
    // the time is up), and given the configured value for every later open.
    // (opossum's own lastTimerAt is when it registered its timer, not when it opened.)
    let firstTimeout: number | undefined
    const wasOpen = old.opened
    if (wasOpen) {
      const left = this.openedAt + cfg.resetTimeoutMs - Date.now()
      if (left > 0) { firstTimeout = left; state.lastTimerAt = Date.now() } else state.lastTimerAt = 0
    }
    this.build(cfg, state, firstTimeout)
    old.shutdown()
    // Restored past its time, it went half-open inside opossum's constructor, before the
    // listeners were attached: start the probe round here.
    if (wasOpen && this.cb.halfOpen) this.enterHalfOpen()
    else this.gauge.set(GAUGE[this.state])
  }

  private build (cfg: CircuitBreakerConfig, state: OpossumState | undefined, firstTimeout?: number): void {
    this.cfg = cfg
    this.failureStatuses = new Set(cfg.failureStatuses)
    this.win = new Window(cfg.windowMs) // a reconfigured breaker keeps its state, and starts its window empty
    this.win.reset(Date.now())
    const options: CircuitBreaker.Options<[Ticket]> & { state?: OpossumState } = {
      name: this.name,
      timeout: false, // the upstream stage owns timeouts; one arrives here as a failure
      resetTimeout: firstTimeout ?? cfg.resetTimeoutMs,
      errorThresholdPercentage: cfg.errorThresholdPercent,
      volumeThreshold: cfg.volumeThreshold,
      rollingCountTimeout: cfg.windowMs,
      rollingCountBuckets: 10,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      ...(state ? { state } : {})
    }
    const cb = new CircuitBreaker<[Ticket], unknown>((t: Ticket) => new Promise<void>((resolve, reject) => {
      t.settle = (failure) => { if (failure === null) resolve(); else reject(failure) }
    }), options)
    // opossum reads options.resetTimeout each time it opens; the restored open used firstTimeout.
    ;(cb as unknown as { options: { resetTimeout: number } }).options.resetTimeout = cfg.resetTimeoutMs
    // Listeners are attached after construction, so restoring a state is not a transition.
    cb.on('open', () => { this.openedAt = Date.now(); this.win.reset(this.openedAt); this.transition('open') })
    cb.on('halfOpen', () => this.enterHalfOpen())
    cb.on('close', () => { this.win.reset(Date.now()); this.transition('closed') })
    this.cb = cb
  }

  private enterHalfOpen (): void {
    this.halfOpenGen++
    this.probesInFlight = 0
    this.transition('half-open')
  }

  private transition (to: BreakerState): void {
    this.gauge.set(GAUGE[to])
    this.transitions[to].inc()
    const w = this.win
    const line = { upstream: this.name, to, window: w.totalFires, failures: w.totalFails }
    if (to === 'open') this.log.warn(line, `circuit of upstream ${this.name} opened`)
    else this.log.info(line, `circuit of upstream ${this.name} is ${to}`)
  }

  /** The error allow() would throw now, without admitting anything (null: it would admit). */
  refusal (): SluiceError | null {
    if (!this.cfg.enabled) return null
    if (this.cb.opened) return this.openError(this.openedAt + this.cfg.resetTimeoutMs - Date.now())
    if (this.cb.halfOpen && this.probesInFlight >= this.cfg.halfOpenMaxRequests && !this.probesLost(Date.now())) return this.openError(1000)
    return null
  }

  /** Admit one attempt, or throw SLUICE_ERR_CIRCUIT_OPEN (503) at once. */
  allow (): Ticket {
    if (!this.cfg.enabled) return NOOP
    const cb = this.cb
    if (cb.opened) throw this.openError(this.openedAt + this.cfg.resetTimeoutMs - Date.now())
    if (cb.halfOpen) {
      const now = Date.now()
      if (this.probesInFlight >= this.cfg.halfOpenMaxRequests) {
        if (!this.probesLost(now)) throw this.openError(1000)
        this.log.warn({ upstream: this.name, probes: this.probesInFlight }, 'half-open probes were never reported; admitting new ones')
        this.probesInFlight = 0
      }
      this.probesInFlight++
      this.lastProbeAt = now
      // opossum admits one call while half-open (pendingClose); the extra probes go beside it.
      if (!cb.pendingClose) return { settle: null, probeGen: this.halfOpenGen, shadow: true }
      return this.fire(this.halfOpenGen)
    }
    // Closed: count the attempt; opossum is not called.
    this.win.fire(Date.now())
    return { settle: null, probeGen: -1, shadow: false }
  }

  private fire (probeGen: number): Ticket {
    const t: Ticket = { settle: null, probeGen, shadow: false }
    this.cb.fire(t).then(noop, noop) // its rejection is the failure we reported; nothing to handle
    this.fired = t
    return t
  }

  /** Report how an admitted attempt ended. Idempotent per ticket. */
  record (ticket: Ticket, outcome: Outcome): void {
    if (ticket === NOOP || ticket.probeGen === RECORDED) return
    const failure = this.classify(outcome)
    const gen = ticket.probeGen
    if (gen >= 0 && gen === this.halfOpenGen && this.probesInFlight > 0) this.probesInFlight--
    ticket.probeGen = RECORDED
    // A probe that tested nothing (its client left, its body was too large or too slow, no
    // target was in rotation) decides nothing: its slot is free and the next probe decides.
    // Counted as a success, it would close the breaker on an upstream that never answered.
    if (gen >= 0 && gen === this.halfOpenGen && this.cb.halfOpen && outcome.error !== undefined && outcome.error !== null && failure === null) {
      ticket.settle = null
      ticket.shadow = false
      return
    }
    // Half-open is decided by this round's probes only. An attempt admitted earlier (while
    // closed, or an earlier round's probe) that finishes now is dropped: through opossum any
    // success would close the breaker and any failure reopen it, with no probe having run.
    if (gen !== this.halfOpenGen && this.cb.halfOpen) {
      ticket.settle = null
      ticket.shadow = false
      return
    }
    if (ticket.shadow) {
      ticket.shadow = false
      if (this.cb.halfOpen) {
        if (failure !== null) this.cb.open()
        else this.cb.close()
      }
      return
    }
    const settle = ticket.settle
    if (settle === null) {
      // A closed-state attempt: count a failure, and open when the window is over the threshold.
      if (gen === -1 && failure !== null && !this.cb.opened && !this.cb.halfOpen) this.countFailure(failure)
      return
    }
    ticket.settle = null
    settle(failure)
  }

  private countFailure (failure: Error): void {
    if (!this.cfg.enabled) return // an attempt admitted before a reload disabled the breaker
    const w = this.win
    w.fail(Date.now())
    if (w.totalFires < this.cfg.volumeThreshold) return
    if ((w.totalFails / w.totalFires) * 100 > this.cfg.errorThresholdPercent) {
      this.log.debug({ upstream: this.name, err: failure.message }, 'failure rate over the threshold')
      this.cb.open()
    }
  }

  /** null when the outcome is a success (or not the upstream's fault). */
  private classify (o: Outcome): Error | null {
    if (o.unsent === true) return null
    if (o.error !== undefined && o.error !== null) {
      if (!isUpstreamFailure(o.error)) return null
      return o.error instanceof Error ? o.error : new Error(String(o.error))
    }
    if (o.status !== undefined && this.failureStatuses.has(o.status)) return new Error(`upstream answered ${o.status}`)
    return null
  }

  private openError (ms: number): SluiceError {
    return new SluiceError('SLUICE_ERR_CIRCUIT_OPEN', undefined, { headers: { 'retry-after': String(retryAfterSeconds(ms)) } })
  }

  status () {
    const s = this.win.read(Date.now())
    const state = this.state
    return {
      enabled: this.cfg.enabled,
      state,
      retryAfterSeconds: state === 'open' ? retryAfterSeconds(this.openedAt + this.cfg.resetTimeoutMs - Date.now()) : 0,
      probesInFlight: state === 'half-open' ? this.probesInFlight : 0,
      window: { requests: s.fires, failures: s.failures, successes: Math.max(0, s.fires - s.failures) }
    }
  }

  /** The upstream left the config: stop, and drop the state series (an open breaker's 2 would otherwise stay, and alert, until a restart). */
  close (): void {
    this.cb.shutdown()
    this.forget()
  }
}
