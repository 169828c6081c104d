// `--name value` from argv, else the environment variable, else the default.
export function arg (name, env, def) {
  const i = process.argv.indexOf(`--${name}`)
  if (i > 0 && process.argv[i + 1] !== undefined) return process.argv[i + 1]
  return process.env[env] ?? def
}
