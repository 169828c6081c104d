#!/usr/bin/env bash
# `npm run bench` entry point: installs the load generator and the anchors when
# they are missing, builds Sluice when dist/ is missing or stale, then runs bench/run.mjs
# with the same arguments (e.g. `npm run bench -- --scenario hit1k --duration 7`).
# A missing anchor or an unbuilt Sluice only skips the targets that need it.
set -uo pipefail
cd "$(dirname "$0")/.."

case " $* " in
  *" --list "*|*" --help "*|*" -h "*) exec node bench/run.mjs "$@" ;;
esac

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v varnishd >/dev/null 2>&1 || [ -x /usr/sbin/varnishd ] || missing+=(varnish)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]} from Debian's packages"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    # Debian starts nginx/varnish services on install when it can; stop them again.
    for svc in nginx varnish; do
      if [[ " ${missing[*]} " == *" ${svc} "* ]] && command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
    done
  else
    echo "bench: could not install ${missing[*]}; the targets that need them will be skipped"
  fi
fi

# Build when dist/ is missing, or older than a source file (so a stale build is never measured).
if [ ! -f dist/src/cli.js ]; then
  echo "bench: dist/src/cli.js missing, running npm run build"
  npm run build --silent || echo "bench: build failed; Sluice targets will be skipped if dist/src/cli.js is still missing"
elif [ -n "$(find src -newer dist/src/cli.js -type f -print -quit 2>/dev/null)" ]; then
  echo "bench: src/ is newer than dist/, running npm run build"
  npm run build --silent || echo "bench: build reported errors; measuring whatever tsc emitted in dist/"
fi

exec node bench/run.mjs "$@"
