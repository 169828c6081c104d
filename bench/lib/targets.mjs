// What the bench scripts (run.mjs, instr.mjs, cpu.mjs, h2.mjs) share to start a target: a free
// loopback port, a config's ${VAR} placeholders filled in, and a Sluice build's V8 flags.
import { existsSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'

/** A port nothing listens on now (the OS's choice on 127.0.0.1). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

/** ${VAR} / ${VAR:-default}: `vars` first, then `fallback` (run.mjs passes the environment), then the default. */
export const interpolate = (text, vars, fallback = {}) => text.replace(/\$\{(\w+)(?::-([^}]*))?\}/g, (_, k, d) => vars[k] ?? fallback[k] ?? d ?? '')

/** The V8 flags the Sluice build of `cli` (its dist/src/cli.js) ships with: its node-flags.js, none before that file existed. */
export async function nodeFlags (cli) {
  const f = path.join(path.dirname(cli), 'node-flags.js')
  return existsSync(f) ? [...(await import(f)).NODE_FLAGS] : []
}
