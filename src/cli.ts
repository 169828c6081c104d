#!/usr/bin/env -S node --max-semi-space-size=8 --heap-growing-percent=25 --no-memory-reducer
// sluice [run] [--config FILE | FILE]    run the gateway (SLUICE_CONFIG, default config/sluice.yaml)
// sluice validate [--config FILE | FILE] check a file; exit 1 on an error, 2 on a usage error
// sluice schema                  print the config's JSON Schema
// sluice health                  probe the running gateway's /healthz (the container HEALTHCHECK)
//
// Only node:util is imported up front: everything else is loaded once the command is known,
// after `run` has installed its signal handlers. Loading the config modules takes a good part
// of a second on a busy host; a SIGTERM in that time, before any handler, killed the process
// by the signal (and node as PID 1 in a container ignored it: Docker waited its stop timeout).
import { parseArgs } from 'node:util'
import type { AddressInfo } from 'node:net'

const USAGE = `usage:
  sluice [run] [--config FILE | FILE]     run the gateway (default: $SLUICE_CONFIG or config/sluice.yaml)
  sluice validate [--config FILE | FILE]  check a config file; prints each error with its line and key path
  sluice schema                    print the config's JSON Schema (for YAML editors)
  sluice status [--json]           summary of a running gateway (admin API)
  sluice health                    exit 0 if the running gateway's /healthz answers 2xx, else 1
  sluice purge --key K | --prefix P | --tag T    purge the cache of a running gateway
  sluice config diff FILE          what a reload of FILE would change in the running gateway
Admin commands find the admin port from --admin URL, SLUICE_ADMIN_URL, the address the running
gateway of the config file noted (in the temporary directory), or the config file;
the token from SLUICE_ADMIN_TOKEN or the config file.
`

function parse (argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      admin: { type: 'string' },
      key: { type: 'string' },
      prefix: { type: 'string' },
      tag: { type: 'string' },
      json: { type: 'boolean' }
    },
    allowPositionals: true,
    strict: true
  })
}

/** Below the image's HEALTHCHECK --timeout (3 s), so a hung admin port is a failed check, not a timed-out one. */
const HEALTH_TIMEOUT_MS = 2500

/** A command line that cannot be run as written: the message and the usage on stderr, exit 2. */
function usageError (message: string): number {
  process.stderr.write(`sluice: ${message}\n${USAGE}`)
  return 2
}

async function main (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parse(argv)
  } catch (err) {
    // An unknown option or one without its value is the caller's mistake, not a crash.
    if ((err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS_') === true) return usageError((err as Error).message)
    throw err
  }
  const { values, positionals } = parsed
  if (values.help) { process.stdout.write(USAGE); return 0 }
  const command = positionals[0] ?? 'run'
  // `sluice validate FILE` (as `nginx -t -c FILE`) checks FILE. A file named only by position
  // must never be dropped: the default config would then be checked (and pass) in its place.
  let fileArg = values.config
  if (command === 'run' || command === 'validate') {
    if (positionals.length > 2) return usageError(`${command} takes one config file, got ${positionals.length - 1}: ${positionals.slice(1).join(' ')}`)
    const pos = positionals[1]
    if (pos !== undefined && fileArg !== undefined && pos !== fileArg) return usageError(`${command}: two config files given (--config ${fileArg} and ${pos})`)
    fileArg ??= pos
  }
  const file = fileArg ?? process.env.SLUICE_CONFIG ?? 'config/sluice.yaml'
  // `run` first: its signal handlers go in before any other module is loaded.
  if (command === 'run') return run(file)
  const { ConfigError, formatIssue, loadConfigFile } = await import('./config/load.js')

  switch (command) {
    case 'schema': {
      // The same text as config/sluice.schema.json (npm run schema), from one function.
      const { renderJsonSchema } = await import('./config/reference.js')
      process.stdout.write(renderJsonSchema())
      return 0
    }
    case 'validate': {
      const { compile } = await import('./config/compile.js')
      try {
        const loaded = loadConfigFile(file)
        const snap = compile(loaded.config, loaded.raw, file)
        for (const w of loaded.warnings) process.stderr.write(`warning: ${w}\n`)
        process.stdout.write(`${file}: OK (${snap.routes.length} routes, ${Object.keys(snap.upstreams).length} upstreams, version ${snap.version})\n`)
        return 0
      } catch (err) {
        if (err instanceof ConfigError) {
          for (const i of err.issues) process.stderr.write(formatIssue(i) + '\n')
          process.stderr.write(`${file}: ${err.issues.length} error${err.issues.length === 1 ? '' : 's'}\n`)
          return 1
        }
        throw err
      }
    }
    case 'status': {
      const { adminTarget, adminCall, formatStatus } = await import('./admin-client.js')
      const { status, json } = await adminCall(adminTarget({ admin: values.admin, config: file }), 'GET', '/admin/status')
      if (status !== 200) { process.stderr.write(`admin API answered ${status}: ${JSON.stringify(json)}\n`); return 1 }
      process.stdout.write((values.json ? JSON.stringify(json, null, 2) : formatStatus(json as Record<string, unknown>)) + '\n')
      return 0
    }
    case 'health': {
      // The container's HEALTHCHECK: GET /healthz on the admin address the gateway uses (from
      // --admin, SLUICE_ADMIN_URL, the running gateway's state file or the config file, as the
      // other admin commands), so a config that moves the admin port moves the check with it,
      // and a config file being edited (invalid, or naming another port until the restart)
      // does not fail the check of the process that runs. Exit 0 healthy, 1 not.
      const { adminTarget } = await import('./admin-client.js')
      let url: string
      try {
        url = adminTarget({ admin: values.admin, config: file }).url + '/healthz'
      } catch (err) {
        if (err instanceof ConfigError) {
          for (const i of err.issues) process.stderr.write(formatIssue(i) + '\n')
          process.stderr.write('sluice health: unhealthy: cannot find the admin address\n')
          return 1
        }
        throw err
      }
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) })
        await res.body?.cancel()
        if (res.ok) { process.stdout.write(`${url}: ${res.status}\n`); return 0 }
        process.stderr.write(`sluice health: unhealthy: ${url} answered ${res.status}\n`)
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message
        process.stderr.write(`sluice health: unhealthy: ${url}: ${cause}\n`)
      }
      return 1
    }
    case 'purge': {
      const which = (['key', 'prefix', 'tag'] as const).filter((k) => values[k] !== undefined)
      if (which.length !== 1) { process.stderr.write('purge needs exactly one of --key, --prefix or --tag\n'); return 2 }
      const { adminTarget, adminCall } = await import('./admin-client.js')
      const { status, json } = await adminCall(adminTarget({ admin: values.admin, config: file }), 'POST', '/admin/purge', { [which[0]]: values[which[0]] })
      process.stdout.write(JSON.stringify(json) + '\n')
      return status === 200 ? 0 : 1
    }
    case 'config': {
      if (positionals[1] !== 'diff' || !positionals[2]) { process.stderr.write('usage: sluice config diff FILE\n'); return 2 }
      const { adminTarget, configDiff } = await import('./admin-client.js')
      try {
        const diff = await configDiff(adminTarget({ admin: values.admin, config: values.config ?? positionals[2] }), positionals[2])
        process.stdout.write(diff.length ? diff.join('\n') + '\n' : 'no changes\n')
        return 0
      } catch (err) {
        if (err instanceof ConfigError) { for (const i of err.issues) process.stderr.write(formatIssue(i) + '\n'); return 1 }
        throw err
      }
    }
    default:
      process.stderr.write(`unknown command "${command}"\n${USAGE}`)
      return 2
  }
}

/**
 * A second SIGTERM or SIGINT during the drain (Ctrl-C twice): stop at once, without waiting for
 * in-flight requests, exit code 1. The log lines held so far are written first.
 */
function now (signal: string, log: { warn (o: object, m: string): void, flush?: () => void }): void {
  log.warn({ signal }, 'second signal while draining: exiting now, in-flight requests are cut')
  void import('./observability/logger.js').then(({ logDrained }) => logDrained(log as never, 500)).finally(() => process.exit(1))
}

/**
 * SIGTERM and SIGINT are handled from the first moment of `run`: until the gateway (or the
 * cluster primary) has started, by ending start-up (nothing is served yet, so there is nothing
 * to drain: a log line, then exit 0); once it runs, by the drain that `started` installs.
 * Without this a signal during start-up (the wait for Redis, a certificate, the listeners)
 * killed the process without a clean exit, and node as PID 1 in a container ignored it: Docker
 * then waited its whole stop timeout.
 */
function startupSignals (file: string): { started (stop: (signal: string) => void): void } {
  let stop: ((signal: string) => void) | null = null
  let ending = false
  const onSignal = (signal: string) => {
    if (stop !== null) { stop(signal); return }
    if (ending) return
    ending = true
    void (async () => {
      const { createLogger, logDrained } = await import('./observability/logger.js')
      let level = 'info'
      try { level = (await import('./config/load.js')).loadConfigFile(file).config.log.level } catch { /* the default level */ }
      const log = createLogger(level)
      log.info({ signal }, 'signal during start-up: not starting; exiting')
      await logDrained(log, 500)
    })().finally(() => process.exit(0))
  }
  process.on('SIGTERM', () => onSignal('SIGTERM'))
  process.on('SIGINT', () => onSignal('SIGINT'))
  return { started (s) { stop = s } }
}

async function run (file: string): Promise<number> {
  const signals = startupSignals(file)
  // Until the gateway runs, a SIGHUP (the default action ends the process) is noted, and served
  // as a reload once it has started: starting can wait seconds for Redis or a certificate.
  let hupWhileStarting = false
  const early = () => { hupWhileStarting = true }
  process.on('SIGHUP', early)
  const { loadConfigFile, ConfigError, formatIssue } = await import('./config/load.js')
  const { startGateway } = await import('./main.js')
  const { workerCount } = await import('./cluster/primary.js')
  const cluster = (await import('node:cluster')).default
  let workers = 1
  try { workers = workerCount(loadConfigFile(file).config.workers) } catch { /* startGateway reports it */ }
  // A worker is one the primary forked (it sets SLUICE_WORKER), whatever the file now says.
  const isWorker = cluster.isWorker && process.env.SLUICE_WORKER === '1'
  if (workers > 1 && !isWorker) {
    // The primary installs its own SIGHUP (a reload of every worker) once it has started.
    const code = await runPrimaryProcess(file, signals)
    process.off('SIGHUP', early)
    if (hupWhileStarting && code === -1) process.emit('SIGHUP', 'SIGHUP')
    return code
  }
  let gw
  try {
    // A worker takes rate-limit tokens from the primary's buckets when there is no Redis.
    const sharedBuckets = isWorker ? new (await import('./cluster/ipc-buckets.js')).IpcBucketStore(process as never) : null
    // A worker runs the config its primary validated, never the file as it is now.
    const configText = isWorker ? await (await import('./cluster/primary.js')).configFromPrimary() : undefined
    gw = await startGateway({ configFile: file, configText, adminListen: !isWorker, watch: !isWorker, sharedBuckets })
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const i of err.issues) process.stderr.write(formatIssue(i) + '\n')
      process.stderr.write('sluice: not started: the configuration is not valid\n')
      return 1
    }
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number }
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
      process.stderr.write(`sluice: not started: cannot listen on ${e.address ?? ''}:${e.port ?? ''}: ${e.code === 'EADDRINUSE' ? 'the address is already in use' : e.message}\n`)
      return 1
    }
    throw err
  }
  const log = gw.log
  // From here a signal drains the running gateway.
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) { now(signal, log); return }
    stopping = true
    log.info({ signal }, 'draining: no new connections; in-flight requests may finish')
    gw.close().then(async () => {
      log.info('stopped')
      // Every line out before exit (a stdout nobody reads is waited for at most 2 s).
      const { logDrained } = await import('./observability/logger.js')
      await logDrained(log)
      process.exit(0)
    }, (err) => {
      log.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  }
  signals.started(stop)
  if (isWorker) {
    const { serveWorker } = await import('./cluster/primary.js')
    serveWorker(gw, () => gw.status(), log, () => gw.upstreams())
    process.on('SIGHUP', () => {}) // the primary reloads every worker; a HUP to the process group must not end one
  } else {
    process.on('SIGHUP', () => { void gw.reloader.reload('SIGHUP') })
    if (hupWhileStarting) void gw.reloader.reload('SIGHUP')
  }
  process.off('SIGHUP', early)
  process.on('unhandledRejection', (reason) => { log.error({ err: reason }, 'unhandled rejection') })
  // A throw nothing caught leaves the process in an unknown state: it is logged, with every
  // held line written out, and the process exits 1 for its supervisor (or primary) to restart.
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception; exiting')
    void import('./observability/logger.js').then(({ logDrained }) => logDrained(log)).finally(() => process.exit(1))
  })
  if (!isWorker) await noteAdmin(file, gw.admin.server.address() as AddressInfo, log)
  return -1 // keep running
}

async function runPrimaryProcess (file: string, signals: { started (stop: (signal: string) => void): void }): Promise<number> {
  const { loadConfigFile, ConfigError, formatIssue } = await import('./config/load.js')
  const { runPrimary } = await import('./cluster/primary.js')
  const { createLogger } = await import('./observability/logger.js')
  const log = createLogger(loadConfigFile(file).config.log.level)
  let primary
  try {
    primary = await runPrimary(file, log)
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const i of err.issues) process.stderr.write(formatIssue(i) + '\n')
      return 1
    }
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number }
    if (e.code === 'EADDRINUSE') { process.stderr.write(`sluice: not started: cannot listen on ${e.address ?? ''}:${e.port ?? ''}: the address is already in use\n`); return 1 }
    throw err
  }
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) { now(signal, log); return }
    stopping = true
    log.info({ signal }, 'draining every worker')
    primary.stop().then(async () => {
      log.info('stopped')
      const { logDrained } = await import('./observability/logger.js')
      await logDrained(log)
      process.exit(0)
    }, () => process.exit(1))
  }
  signals.started(stop)
  await noteAdmin(file, primary.admin, log)
  return -1
}

/** The admin address, where `sluice health` (and the other admin commands) find it first. */
async function noteAdmin (file: string, admin: AddressInfo, log: { warn (o: object, m: string): void }): Promise<void> {
  const { writeAdminState, adminStateFile } = await import('./admin-client.js')
  const err = writeAdminState(file, admin)
  if (err !== null) log.warn({ file: adminStateFile(file), err: err.message }, 'cannot write the admin state file; `sluice health` finds the admin port in the config file')
}

main(process.argv.slice(2)).then((code) => {
  // A cluster worker that could not start must end (its IPC channel would keep it alive with
  // nothing to serve): the primary sees the exit and replaces it, with backoff.
  if (code > 0 && process.env.SLUICE_WORKER === '1' && process.connected) process.exit(code)
  if (code >= 0) process.exitCode = code
}, (err) => {
  process.stderr.write(`sluice: ${(err as Error).stack ?? err}\n`)
  process.exit(1)
})
