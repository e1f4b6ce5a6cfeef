# The bus as a container: gateway + workers (`databus up`), configured entirely by environment.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install .
RUN useradd --system --uid 10001 databus && mkdir -p /data && chown databus /data
USER databus
ENV BUS_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["databus", "up", "--host", "0.0.0.0", "--port", "8000"]
