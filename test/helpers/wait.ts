// Test helper: the one polling loop of the test suite.

/**
 * Poll `check` every `intervalMs` until it returns true, at most `tries` times; then throw
 * `timed out waiting for <what> (<tries> tries, every <intervalMs> ms)`, with the last error
 * `check` threw (a throw counts as "not yet") and `detail()` when given.
 */
export async function until (
  what: string,
  check: () => boolean | Promise<boolean>,
  opts: { tries?: number; intervalMs?: number; detail?: () => unknown } = {}
): Promise<void> {
  const tries = opts.tries ?? 200
  const intervalMs = opts.intervalMs ?? 50
  let lastError: unknown
  for (let i = 0; i < tries; i++) {
    try {
      if (await check()) return
    } catch (err) { lastError = err }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  let msg = `timed out waiting for ${what} (${tries} tries, every ${intervalMs} ms)`
  if (lastError !== undefined) msg += `; last error: ${(lastError as Error)?.message ?? String(lastError)}`
  if (opts.detail) {
    let d: unknown
    try { d = await opts.detail() } catch (err) { d = `(detail failed: ${(err as Error).message})` }
    msg += `; ${typeof d === 'string' ? d : JSON.stringify(d)}`
  }
  throw new Error(msg)
}
