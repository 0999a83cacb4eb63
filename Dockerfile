# syntax=docker/dockerfile:1
#
# The example extension as a container image. Two stages: the build stage compiles TypeScript with
# the dev dependencies; the runtime stage holds only production dependencies and the compiled
# runtime, workers and example, and runs as the unprivileged `node` user (uid 1000).
#
#   docker build -t actionkit-example .
#   docker run --rm -p 8080:8080 -p 8081:8081 actionkit-example
#
# Ports: 8080 extension HTTP(S) (STEADYBIT_EXTENSION_PORT), 8081 probes
# (STEADYBIT_EXTENSION_HEALTH_PORT); the defaults of src/config.ts.

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Dependencies first: this layer is reused while only sources change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY workers ./workers
COPY example ./example
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's prepack build must not run here (no TypeScript in this stage).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
# package.json stays: the example imports the runtime by its own package name ('actionkit-runtime'),
# which Node resolves through its "exports". Only what runs is copied; dist/test stays behind.
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/workers ./dist/workers
COPY --from=build /app/dist/example ./dist/example
# The default upload folder (ACTIONKIT_UPLOAD_DIR), owned by the user the extension runs as. With a
# read-only root file system, mount a writable volume here (see deploy/kubernetes.yaml).
RUN mkdir -p /tmp/steadybit && chown node:node /tmp/steadybit
USER node
EXPOSE 8080 8081
# Exec form, node itself as PID 1: SIGTERM/SIGINT reach the runtime's handlers directly, which stop
# every execution and exit 143/130. (`npm start` or a shell in between would swallow or delay them.)
CMD ["node", "dist/example/main.js"]
