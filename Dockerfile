# syntax=docker/dockerfile:1
# The pgrelay image. Untested here: the machines this project is built on have no Docker engine.
#
#   docker build -t pgrelay .
#   docker run -v $PWD/my.yaml:/etc/pgrelay/pgrelay.yaml:ro -p 6432:6432 -p 9930:9930 pgrelay
#
# The configuration must listen on 0.0.0.0 (listen.host, admin.host) to be reachable from outside
# the container; docker/pgrelay.yaml does. `pgrelay demo` is not for this image: it needs the
# PostgreSQL server binaries, which the image does not carry.

# ---- build: the TypeScript compiler and dev dependencies, then dist/ ----
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: the optional Docker test backend (testcontainers) is not needed to compile,
# and nothing the build uses has one.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and dist/ only, as the unprivileged `node` user ----
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
  && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY config/pgrelay.example.yaml /etc/pgrelay/pgrelay.example.yaml
USER node
# client connections (PostgreSQL protocol) and the admin HTTP port (/metrics, /health, /status)
EXPOSE 6432 9930
ENTRYPOINT ["node","dist/main.js"]
CMD ["start","--config","/etc/pgrelay/pgrelay.yaml"]
