// A private CA and a server certificate for 127.0.0.1 made with the machine's openssl (Node
// cannot create X.509 itself), and an HTTPS origin using it. Shared by the TLS reload and
// WebSocket tests; not a test file itself.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const haveOpenssl = spawnSync('openssl', ['version']).status === 0

export interface PrivateCa { dir: string; caFile: string; key: Buffer; cert: Buffer; remove (): void }

export function makePrivateCa (): PrivateCa {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-ca-'))
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=sluice-test-ca')
  ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  ossl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext')
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    key: readFileSync(join(dir, 'server.key')),
    cert: readFileSync(join(dir, 'server.pem')),
    remove: () => rmSync(dir, { recursive: true, force: true })
  }
}

export interface TlsOrigin { url: string; server: Server; close (): Promise<void> }

/**
 * An HTTPS origin on 127.0.0.1 with the CA's server certificate: `handler` answers requests;
 * an upgrade is answered with 101 and every byte after it is echoed back.
 */
export async function startTlsOrigin (ca: PrivateCa, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TlsOrigin> {
  const server = createServer({ key: ca.key, cert: ca.cert }, handler)
  const sockets = new Set<Socket>()
  server.on('secureConnection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)) })
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `X-Echo-Path: ${req.url}\r\nSec-WebSocket-Accept: test\r\n\r\n`)
    if (head.length) socket.write(head)
    socket.pipe(socket)
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    url: `https://127.0.0.1:${port}`,
    server,
    close: async () => {
      for (const s of sockets) s.destroy()
      server.close()
      await once(server, 'close').catch(() => {})
    }
  }
}
