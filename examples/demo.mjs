// `npm start`: the example origin on 127.0.0.1:3000 and Sluice on :8080 (admin :9901) with
// config/sluice.yaml, in-memory defaults. Ctrl-C stops both.
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
const port = process.env.SLUICE_PORT ?? '8080'
console.error(`\nSluice on http://localhost:${port} (try: curl -i http://localhost:${port}/api/products), admin on http://127.0.0.1:9901/metrics\n`)
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
