// Client certificates (listen.tls.caFile) across a reload: adding or removing caFile changes
// whether clients must present a certificate, which takes effect at the next restart (the
// reload says so). Until then the listener keeps checking client certificates against the CA
// it started with: a reload that removed caFile must not check them against Node's public
// roots instead (which refuses every client certificate of a private CA).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { request as httpsRequest } from 'node:https'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway } from '../helpers/gateway.js'
import { haveOpenssl, makePrivateCa } from '../core/private-ca.js'

const skip = haveOpenssl ? false : 'openssl is not installed'
const ca = haveOpenssl ? makePrivateCa() : null
after(() => ca?.remove())

/** A GET over TLS, with the CA's certificate as the client's certificate when `withCert`: the status, or the error's code. */
function get (url: string, withCert: boolean): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpsRequest(url + '/x', {
      ca: ca!.cert, // the server certificate is the CA's; it is also a fine client certificate
      ...(withCert ? { key: ca!.key, cert: ca!.cert } : {}),
      rejectUnauthorized: false,
      agent: false
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
    req.end()
  })
}

test('a reload that removes tls.caFile keeps checking client certificates against the CA the listener started with, until the restart', { skip }, async () => {
  const origin = await startOrigin()
  const yaml = (withCa: boolean) => `listen:
  tls: { certFile: "${join(ca!.dir, 'server.pem')}", keyFile: "${join(ca!.dir, 'server.key')}"${withCa ? `, caFile: "${ca!.caFile}"` : ''} }
upstreams:
  api: { url: "${origin.url}" }
routes:
  - name: pass
    match: { pathPrefix: / }
    upstream: api
`
  const g = await startTestGateway(yaml(true))
  try {
    assert.equal(await get(g.url, true), 200)
    assert.notEqual(await get(g.url, false), 200, 'no client certificate: refused')
    g.write(yaml(false))
    const r = await fetch(g.adminUrl + '/admin/reload', { method: 'POST' })
    assert.equal(r.status, 200, await r.text())
    assert.ok(g.logs.some((l) => l.key === 'listen' && /next restart/.test(String(l.msg))), 'the reload says the listen change waits for a restart')
    assert.equal(await get(g.url, true), 200, 'a client certificate of the private CA is still accepted')
    assert.notEqual(await get(g.url, false), 200, 'and one is still required')
  } finally { await g.close(); await origin.close() }
})
