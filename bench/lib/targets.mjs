// What the bench scripts (run.mjs, instr.mjs, cpu.mjs, h2.mjs) share to start a target: a free
// loopback port, a config's ${VAR} placeholders filled in, and a Sluice build's V8 flags.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

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

/**
 * nginx's access log for the bench's access-log anchor (run.mjs scenario metrics, instr.mjs
 * --target nginx-cache-log): a line with what Sluice's access line carries, in the same JSON
 * shape (escape=json), and the `log_format` / `access_log` directives that write it. Lines go
 * to a FIFO that a `cat` drains, as a log collector drains a container's stdout; nginx cannot
 * open /dev/stdout when that is the socket Node gives a child. `buffer` is nginx's own option
 * (buffer=4k flush=1s matches Sluice's 4 KB chunks); '' writes each line at once, as the
 * official nginx image does (its access.log is a link to /dev/stdout).
 */
const NGINX_LOG_FORMAT = `log_format sluicejson escape=json '{"level":30,"time":"$time_iso8601","service":"nginx","reqId":"$request_id","route":"cached","upstream":"origin","method":"$request_method","url":"$request_uri","status":$status,"bytes":$body_bytes_sent,"ms":$request_time,"cache":"$upstream_cache_status","ip":"$remote_addr","msg":"request"}';`

/** Makes `dir`/access.fifo and a `cat` that drains it; returns the access_log directive and the reader (kill it when done). */
function nginxAccessLog (dir, buffer) {
  const fifo = path.join(dir, 'access.fifo')
  spawnSync('mkfifo', ['-m', '666', fifo])
  const reader = spawn('sh', ['-c', `exec cat "${fifo}" > /dev/null`], { stdio: 'ignore', detached: true })
  reader.unref()
  process.once('exit', () => { try { process.kill(-reader.pid, 'SIGKILL') } catch {} })
  return { directive: `access_log ${fifo} sluicejson${buffer ? ' ' + buffer : ''};`, reader }
}

const NGINX_TMPL_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'anchors', 'nginx.conf.tmpl')

/**
 * The nginx anchor's config (bench/anchors/nginx.conf.tmpl) for one variant, in `dir`:
 * `cache` (proxy_cache with an X-Cache header), `gzip`, `requestId` (X-Request-Id on every
 * answer, as Sluice sends), `accessLog` (null: off; else nginxAccessLog's buffer option), `user`
 * (run the worker as www-data: the bench runs as root), `masterProcess` (off for valgrind, which
 * then sees the one process that serves).
 */
export function nginxConf ({ dir, port, originPort, user = false, cache = false, gzip = false, requestId = false, accessLog = null, masterProcess = true }) {
  const vars = {
    PREFIX: dir,
    PORT: String(port),
    ORIGIN_PORT: String(originPort),
    USER: user ? 'user www-data;' : '',
    CACHE_PATH: (cache ? `  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=bench:16m max_size=256m inactive=10m use_temp_path=off;` : '') +
      (accessLog !== null ? `\n  ${NGINX_LOG_FORMAT}` : ''),
    CACHE: (cache ? '      proxy_cache bench;\n      add_header X-Cache $upstream_cache_status;' : '') +
      (requestId ? '\n      add_header X-Request-Id $request_id;' : '') +
      (accessLog !== null ? '\n      ' + nginxAccessLog(dir, accessLog).directive : ''),
    GZIP: gzip ? '      gzip on;\n      gzip_types application/json;' : ''
  }
  const text = readFileSync(NGINX_TMPL_FILE, 'utf8').replace(/\{\{(\w+)\}\}/g, (_, k) => vars[k] ?? '')
  return masterProcess ? text : text.replace('master_process on;', 'master_process off;')
}
