// On-demand profiling through node:inspector, for POST /admin/profile and
// POST /admin/heap-snapshot: a CPU profile (.cpuprofile, opens in Chrome DevTools or
// speedscope) or a heap snapshot, without a restart. One at a time.
import { Session } from 'node:inspector'
import { PassThrough, type Readable } from 'node:stream'

let busy = false

/**
 * With workers, how long the primary waits for a worker's heap snapshot to send anything (its
 * first chunk, then each next one) before it gives up: 504 SLUICE_ERR_ADMIN_TIMEOUT before
 * the first chunk, a cut stream after it. ?timeout=S of POST /admin/heap-snapshot (1..600 s)
 * overrides it. Building the snapshot of a large heap comes before the first chunk and can
 * take tens of seconds, hence a minute.
 */
export const HEAP_SNAPSHOT_TIMEOUT_MS = 60_000

function post<T> (session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => {
    session.post(method, params ?? {}, (err, res) => err ? reject(err) : resolve(res as T))
  })
}

export async function cpuProfile (ms: number): Promise<string> {
  if (busy) throw Object.assign(new Error('a profile is already running'), { statusCode: 409 })
  busy = true
  const session = new Session()
  session.connect()
  try {
    await post(session, 'Profiler.enable')
    await post(session, 'Profiler.setSamplingInterval', { interval: 100 })
    await post(session, 'Profiler.start')
    await new Promise((r) => setTimeout(r, ms))
    const { profile } = await post<{ profile: unknown }>(session, 'Profiler.stop')
    return JSON.stringify(profile)
  } finally {
    session.disconnect()
    busy = false
  }
}

/** Whether a CPU profile or heap snapshot is being taken in this process now. */
export function profilerBusy (): boolean { return busy }

export function heapSnapshot (): Readable {
  const out = new PassThrough()
  if (busy) { out.destroy(Object.assign(new Error('a profile is already running'), { statusCode: 409 })); return out }
  busy = true
  const session = new Session()
  session.connect()
  session.on('HeapProfiler.addHeapSnapshotChunk', (m) => { out.write((m.params as { chunk: string }).chunk) })
  post(session, 'HeapProfiler.takeHeapSnapshot', { reportProgress: false }).then(
    () => { session.disconnect(); busy = false; out.end() },
    (err) => { session.disconnect(); busy = false; out.destroy(err) })
  return out
}
