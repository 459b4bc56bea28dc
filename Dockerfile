FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install ".[otlp]" \
    && groupadd --system --gid 10001 exporter \
    && useradd --system --no-create-home --uid 10001 --gid 10001 exporter

USER 10001:10001
EXPOSE 8748
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8748/healthz', timeout=2)"]
ENTRYPOINT ["litellm-exporter"]
# No file needed: the database from LITELLM_DATABASE_URL (or DATABASE_URL, or --dsn), every other
# setting from its default or a LITELLM_EXPORTER_* variable. Arguments of your own replace these:
# keep a --listen (or web.listen) on every interface, as a container needs.
CMD ["--listen", "0.0.0.0:8748"]
