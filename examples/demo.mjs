// `npm start`: the example origin on 127.0.0.1:3000 and Sluice on :8080 (admin :9901) with
// config/sluice.yaml (or $SLUICE_CONFIG: the ports it names are printed), in-memory defaults.
// Ctrl-C stops both.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const cli = join(root, 'dist/src/cli.js')
if (!existsSync(cli)) {
  console.error('dist/ is missing: run `npm ci` (it builds) or `npm run build` first')
  process.exit(1)
}
const config = process.env.SLUICE_CONFIG ?? join(root, 'config/sluice.yaml')
const originPort = process.env.ORIGIN_PORT ?? '3000'
const origin = spawn(process.execPath, [join(root, 'examples/origin.mjs')], { stdio: 'inherit', env: { ...process.env, PORT: originPort } })
const { NODE_FLAGS } = await import(join(root, 'dist/src/node-flags.js'))
// The gateway reaches the origin where it was started (ORIGIN_PORT), unless ORIGIN_URL says otherwise.
const gateway = spawn(process.execPath, [...NODE_FLAGS, cli, '--config', config], { stdio: 'inherit', env: { ...process.env, ORIGIN_URL: process.env.ORIGIN_URL ?? `http://127.0.0.1:${originPort}` } })
// The addresses as the config gives them (the gateway itself reports a config it cannot load).
let port = '8080'; let admin = 'http://127.0.0.1:9901'
try {
  const { loadConfigFile } = await import(join(root, 'dist/src/config/load.js'))
  const c = loadConfigFile(config, { ...process.env, ORIGIN_URL: process.env.ORIGIN_URL ?? `http://127.0.0.1:${originPort}` }).config
  port = String(c.listen.port)
  const h = c.admin.host === '0.0.0.0' ? '127.0.0.1' : c.admin.host === '::' ? '[::1]' : c.admin.host.includes(':') ? `[${c.admin.host}]` : c.admin.host
  admin = `http://${h}:${c.admin.port}`
} catch { /* the defaults above */ }
console.error(`\nSluice on http://localhost:${port} (try: curl -i http://localhost:${port}/api/products), admin on ${admin}/metrics\n`)
let stopping = false
const stop = (code) => {
  if (stopping) return
  stopping = true
  gateway.kill('SIGTERM')
  origin.kill('SIGTERM')
  setTimeout(() => process.exit(code), 200).unref()
}
process.on('SIGINT', () => stop(0))
process.on('SIGTERM', () => stop(0))
gateway.on('exit', (code) => stop(code ?? 0))
origin.on('exit', (code) => { if (!stopping) { console.error('example origin exited'); stop(code ?? 1) } })
