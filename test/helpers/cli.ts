// How to run the `sluice` CLI from a test: the compiled dist/src/cli.js when the tests run
// compiled (npm test), or src/cli.ts through tsx when a developer runs one file with tsx.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import type { TestContext } from 'node:test'

const here = dirname(fileURLToPath(import.meta.url))
const compiled = import.meta.url.endsWith('.js')

export function cliCommand (args: string[]): [string, string[]] {
  if (compiled) return [process.execPath, [join(here, '../../src/cli.js'), ...args]]
  return [process.execPath, ['--import', 'tsx', join(here, '../../src/cli.ts'), ...args]]
}

/** A `sluice` CLI child process, everything it wrote (stdout and stderr), and its exit. */
export interface CliChild { child: ChildProcess; out: string[]; exited: Promise<unknown[]> }

/** Spawn the CLI with `args`; killed (SIGKILL) by `t.after` if it is still running. */
export function spawnCli (t: TestContext, args: string[]): CliChild {
  const [cmd, argv] = cliCommand(args)
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const out: string[] = []
  child.stdout!.on('data', (d) => out.push(String(d)))
  child.stderr!.on('data', (d) => out.push(String(d)))
  return { child, out, exited: once(child, 'exit') }
}

/**
 * The proxy and admin URLs a `sluice` CLI process (single process, not `workers:`) reports in
 * its "sluice started" log line, or null while that line has not been printed. With
 * `listen.port: 0` and `admin.port: 0` this is how a test learns the ports the OS chose.
 */
export function startedUrls (out: string[]): { url: string; adminUrl: string } | null {
  for (const line of out.join('').split('\n')) {
    if (!line.includes('sluice started')) continue
    try {
      const rec = JSON.parse(line) as { msg?: string; proxy?: string; admin?: string }
      if (rec.msg === 'sluice started' && rec.proxy && rec.admin) {
        return { url: rec.proxy.replace('0.0.0.0', '127.0.0.1'), adminUrl: rec.admin.replace('0.0.0.0', '127.0.0.1') }
      }
    } catch { /* a partial line: not yet */ }
  }
  return null
}
