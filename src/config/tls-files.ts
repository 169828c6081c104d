// The files of listen.tls, watched so a rotated certificate loads without a signal (by the
// single process, or by a cluster's primary, which reloads its workers). The Reloader watches
// their directories and stat()s them with the config file (Reloader.watchFiles in reload.ts).
import type { Snapshot } from './compile.js'

export function tlsFiles (snap: Snapshot): string[] {
  const t = snap.config.listen.tls
  return t ? [t.certFile, t.keyFile, ...(t.caFile !== undefined ? [t.caFile] : [])] : []
}
