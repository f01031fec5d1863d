# The image `fly deploy` builds: the locked dependencies, the code, the seller's config.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH

WORKDIR /app
RUN pip install --no-cache-dir "uv==0.13.9"
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev && rm -rf /root/.cache

# Your invoicehook.toml is copied with the code (it is in .gitignore, not in .dockerignore).
ENV INVOICEHOOK_CONFIG=/app/invoicehook.toml
EXPOSE 8080
CMD ["invoicehook", "serve", "--host", "0.0.0.0", "--port", "8080"]
