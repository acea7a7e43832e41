# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then a slim non-root runtime image.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PARETO_CONFIG=/etc/pareto/demo.yaml
RUN groupadd --system --gid 10001 pareto && useradd --system --uid 10001 --gid pareto --home /home/pareto pareto
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels pareto-gateway && rm -rf /wheels
COPY config /etc/pareto
USER pareto
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["pareto"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
