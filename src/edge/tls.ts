// The proxy port's certificate pair, read and checked when the config loads (at start and at
// every reload), so a pair that does not load is a config error naming its key, and the old
// pair keeps serving. A change to either file is a config change (the bytes are hashed into
// the snapshot's version), and the live server takes the new pair for new connections.
import { readFileSync } from 'node:fs'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { createSecureContext, type SecureContextOptions } from 'node:tls'
import type { ListenTlsConfig } from './config.js'

/** What the listener needs: the bytes of the files, read at load. */
export interface TlsMaterial {
  cert: Buffer
  key: Buffer
  ca?: Buffer
  minVersion: 'TLSv1.2' | 'TLSv1.3'
  /** The certificate's notAfter, for the admin view. */
  validTo: string
  subject: string
}

type Report = (key: 'certFile' | 'keyFile' | 'caFile', message: string) => void

function read (file: string, key: 'certFile' | 'keyFile' | 'caFile', error: Report): Buffer | null {
  try {
    return readFileSync(file)
  } catch (err) {
    error(key, `cannot read ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    return null
  }
}

/**
 * Read and check listen.tls: both files readable, a PEM certificate and key, the key matching
 * the certificate, and a context Node accepts. An expired or not-yet-valid certificate is a
 * warning (it still loads: refusing it would take the port down).
 */
export function readListenTls (cfg: ListenTlsConfig, error: Report, warn: Report, now = Date.now()): TlsMaterial | null {
  const cert = read(cfg.certFile, 'certFile', error)
  const key = read(cfg.keyFile, 'keyFile', error)
  const ca = cfg.caFile !== undefined ? read(cfg.caFile, 'caFile', error) : undefined
  if (cert === null || key === null || ca === null) return null
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(cert)
  } catch (err) {
    error('certFile', `not a PEM certificate: ${(err as Error).message}`)
    return null
  }
  let pk
  try {
    pk = createPrivateKey(key)
  } catch (err) {
    error('keyFile', `not a usable PEM private key: ${(err as Error).message}`)
    return null
  }
  if (!x509.checkPrivateKey(pk)) {
    error('keyFile', `the key does not match the certificate in ${JSON.stringify(cfg.certFile)}`)
    return null
  }
  const from = Date.parse(x509.validFrom)
  const to = Date.parse(x509.validTo)
  if (to < now) warn('certFile', `the certificate expired on ${x509.validTo}: clients will refuse it`)
  else if (from > now) warn('certFile', `the certificate is not valid before ${x509.validFrom}`)
  const m: TlsMaterial = { cert, key, minVersion: cfg.minVersion, validTo: new Date(to).toISOString(), subject: x509.subject.replace(/\n/g, ', ') }
  if (ca !== undefined) m.ca = ca
  try {
    createSecureContext(secureOptions(m))
  } catch (err) {
    error(ca !== undefined ? 'caFile' : 'certFile', `Node cannot use this pair: ${(err as Error).message}`)
    return null
  }
  return m
}

/** The secure-context options of a pair (for createServer and setSecureContext). */
export function secureOptions (m: TlsMaterial): SecureContextOptions {
  const o: SecureContextOptions = { cert: m.cert, key: m.key, minVersion: m.minVersion }
  if (m.ca !== undefined) o.ca = m.ca
  return o
}
