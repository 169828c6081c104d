// Test helper: a scripted HTTP origin on a loopback port chosen by the OS.
// Each test registers handlers per path; the origin records every request it saw.
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http'
import { once } from 'node:events'
import type { Socket } from 'node:net'

export interface SeenRequest {
  method: string
  url: string
  headers: IncomingMessage['headers']
  rawHeaders: string[]
  body: Buffer
}

export type OriginHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void | Promise<void>

export interface Origin {
  url: string
  port: number
  server: Server
  /** Every request the origin received, in order. */
  seen: SeenRequest[]
  /** Count of requests seen for a path (exact match on url). */
  count(url: string): number
  /** Register a handler for an exact path (without the query string) or for every path with '*'. */
  on(path: string, handler: OriginHandler): void
  /** Do not read the body before calling the handler (for streaming-upload tests). */
  streamBodies: boolean
  /** Close every socket at once (simulates the origin dying). */
  kill(): Promise<void>
  close(): Promise<void>
}

export async function startOrigin(opts: { port?: number } = {}): Promise<Origin> {
  const handlers = new Map<string, OriginHandler>()
  const sockets = new Set<Socket>()
  const seen: SeenRequest[] = []
  const origin = {} as Origin
  const server = createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    const handler = handlers.get(path) ?? handlers.get('*')
    let body = Buffer.alloc(0)
    if (!origin.streamBodies) {
      const chunks: Buffer[] = []
      try {
        for await (const c of req) chunks.push(c as Buffer)
      } catch {
        return // the request was aborted mid-body (the gateway gave up on it): nothing to answer
      }
      body = Buffer.concat(chunks)
    }
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body })
    if (!handler) {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`origin ${req.method} ${req.url}`)
      return
    }
    try {
      await handler(req, res, body)
    } catch (err) {
      if (!res.headersSent) res.writeHead(500)
      res.end(String(err))
    }
  })
  server.keepAliveTimeout = 5000
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)) })
  server.listen(opts.port ?? 0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as { port: number }).port
  Object.assign(origin, {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    seen,
    streamBodies: false,
    count: (url: string) => seen.filter((r) => r.url === url).length,
    on: (path: string, handler: OriginHandler) => { handlers.set(path, handler) },
    kill: async () => {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
    close: async () => {
      for (const s of sockets) s.destroy()
      if (server.listening) await new Promise((resolve) => server.close(resolve))
    }
  })
  return origin
}
