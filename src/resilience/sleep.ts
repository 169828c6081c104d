// A timer-backed wait that an AbortSignal cancels, leaving no timer and no listener behind.

export function abortReason (signal: AbortSignal): Error {
  const r: unknown = signal.reason
  return r instanceof Error ? r : new DOMException('The operation was aborted', 'AbortError')
}

export function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortReason(signal))
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer)
      reject(abortReason(signal as AbortSignal))
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
