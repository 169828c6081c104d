# syntax=docker/dockerfile:1
# Sluice container image: build with `docker build -t sluice .`, run with
#   docker run -p 8080:8080 -p 127.0.0.1:9901:9901 -e SLUICE_ADMIN_TOKEN=... \
#     -e ORIGIN_URL=http://host.docker.internal:3000 sluice
# Mount your own config over /etc/sluice/sluice.yaml (or the /etc/sluice directory).

# ---- build stage: all dependencies, compile TypeScript to dist/ ----
FROM node:22-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the `prepare` script runs tsc, and the sources are not copied yet.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && chmod +x dist/src/cli.js

# ---- runtime stage: production dependencies only, non-root ----
FROM node:22-slim AS runtime
ENV NODE_ENV=production \
    SLUICE_CONFIG=/etc/sluice/sluice.yaml
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY config ./config
# The example origin, so the image alone can run the demo: docker run sluice node examples/origin.mjs
COPY examples ./examples
COPY deploy/sluice.docker.yaml /etc/sluice/sluice.yaml
# `docker exec <container> sluice status` (the admin CLI) works inside the container.
RUN ln -s /app/dist/src/cli.js /usr/local/bin/sluice
# The image's own `node` user (uid 1000); the app files stay root-owned and read-only to it.
USER node
VOLUME ["/etc/sluice"]
EXPOSE 8080 9901
# `sluice health` probes GET /healthz (no token needed) on the admin address the running
# gateway of $SLUICE_CONFIG noted in /tmp when it started, else on the admin port that config
# sets (admin.host 0.0.0.0 is probed on 127.0.0.1): a mounted config that moves the admin port
# moves the check at the restart, and a file being edited (invalid, or a new port not yet
# applied) does not fail the check of the running process. A CMD that runs another config file should set
# SLUICE_CONFIG to it (or SLUICE_ADMIN_URL=http://127.0.0.1:PORT). node:22-slim has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "dist/src/cli.js", "health"]
# PID 1 is node itself (exec form, no shell in between): Sluice installs its own SIGTERM
# handler, which stops accepting, drains in-flight requests within shutdownGraceMs and
# exits 0. It starts no child processes other than its own cluster workers (workers > 1),
# which it supervises and reaps itself, so no init (tini) is needed; `docker run --init`
# remains harmless if you prefer one.
STOPSIGNAL SIGTERM
# V8 flags: the list in src/node-flags.ts (a smaller young generation and a slower-growing old one keep RSS down under cache churn; no idle-time memory reducer, which slowed a gateway that idled before its traffic).
CMD ["node", "--max-semi-space-size=8", "--heap-growing-percent=25", "--no-memory-reducer", "dist/src/cli.js", "--config", "/etc/sluice/sluice.yaml"]
