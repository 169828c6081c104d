// Test helper: a loopback TCP port number known BEFORE anything listens on it.
//
// Prefer port 0 everywhere a server can report the port it got (startOrigin, startTestGateway,
// the `sluice` CLI's "sluice started" log line: see startedUrls in ./cli.ts). This helper exists
// only for the cases that cannot: a `redis-server --port N` (port 0 there disables TCP), the
// cluster primary and its workers (`workers: N`, which report no bound port), and an address
// that must have NOTHING listening on it (a refused connection, a Redis that is down).
//
// It is racy by nature: the OS picks a free port, the probe socket closes, and another process
// may take the number before the caller binds it. Use it only where port 0 cannot work.

import { createServer } from 'node:net'
import { once } from 'node:events'

/** True when nothing listens on 127.0.0.1:port right now. */
async function bindable (port: number): Promise<boolean> {
  const srv = createServer()
  srv.listen(port, '127.0.0.1')
  try {
    await once(srv, 'listening')
  } catch {
    return false
  }
  await new Promise((resolve) => srv.close(resolve))
  return true
}

/**
 * A port on 127.0.0.1 that was free a moment ago (see the race above). It is drawn at random
 * below Linux's ephemeral range (32768-60999): a port the OS hands out for port 0 is also one
 * it may give any outgoing connection of the busy test suite, which then holds it when the
 * caller binds ("address already in use").
 */
export async function reservePort (): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    if (await bindable(port)) return port
  }
  const srv = createServer()
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  const port = (srv.address() as { port: number }).port
  await new Promise((resolve) => srv.close(resolve))
  return port
}
