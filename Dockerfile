# The image `fly deploy` builds. Two stages: the builder installs exactly what uv.lock pins
# (no dev tools); the runtime holds only that venv and the code that runs. The seller's
# invoicehook.toml is not in the image: fly.toml's [[files]] writes it at start from the
# INVOICEHOOK_TOML secret, so changing the address is `fly secrets set`, not a rebuild.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# The uv the Makefile uses (UV_VERSION), so the lock is read the same way here.
RUN pip install --no-cache-dir "uv==0.13.9"
COPY pyproject.toml uv.lock README.md ./
# Dependencies first: their layer is reused until uv.lock changes.
RUN uv sync --frozen --no-dev --no-install-project
COPY app.py ./
COPY invoicing ./invoicing
COPY integrations ./integrations
COPY exports ./exports
COPY templates ./templates
RUN uv sync --frozen --no-dev && rm -rf /root/.cache

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH \
    INVOICEHOOK_CONFIG=/app/invoicehook.toml
# The service's own user; /app/var is where the embedded defaults write without a volume.
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home invoicehook \
    && mkdir -p /app/var && chown invoicehook:invoicehook /app/var
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/app.py /app/app.py
COPY --from=builder /app/invoicing /app/invoicing
COPY --from=builder /app/integrations /app/integrations
COPY --from=builder /app/exports /app/exports
COPY --from=builder /app/templates /app/templates
COPY entrypoint.sh /app/entrypoint.sh
RUN chmod 0755 /app/entrypoint.sh
# Fly mounts a new volume owned by root (flyctl#632, no owner option): the entrypoint
# starts as root only to hand /data to the invoicehook user, then runs CMD as that user.
# With `docker run --user 10001` (or any non-root start) it simply runs CMD.
USER root
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["/app/entrypoint.sh"]
CMD ["invoicehook", "serve", "--host", "0.0.0.0", "--port", "8080"]
