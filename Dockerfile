# dbfleet image: one entrypoint (`dbfleet`) for the API (serve), the workers (worker) and the
# store migrations (migrate). Runs as uid 10001 on a read-only root filesystem; only /tmp
# (an emptyDir in the Helm chart) is writable.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dbfleet
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY collectors ./collectors
COPY migrations ./migrations
# Every dependency of .[all] ships a manylinux wheel for CPython 3.11, so no compiler is needed.
RUN /opt/dbfleet/bin/pip install ".[all]"
# app/db.py finds Alembic's scripts at <site-packages>/migrations, beside the app package;
# the distribution does not package them, so put them there.
RUN cp -r migrations "$(/opt/dbfleet/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/migrations"

FROM python:3.11-slim
# libodbc for pyodbc (SQL Server through aioodbc). The Microsoft "ODBC Driver 18 for SQL
# Server" is not redistributable here: add it in a derived image if you monitor SQL Server.
RUN apt-get update \
 && apt-get install -y --no-install-recommends unixodbc \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 dbfleet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin dbfleet
COPY --from=build /opt/dbfleet /opt/dbfleet
ENV PATH=/opt/dbfleet/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 9108
ENTRYPOINT ["dbfleet"]
CMD ["serve"]
