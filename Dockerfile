# The hub's container image: what helm/isthmus runs (`isthmus serve --config ...`).
#   docker build -t ghcr.io/your-org/isthmus:0.1.0 .
# Runs as uid 10001 on a read-only root file system (the chart mounts /tmp as an emptyDir).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY federation federation
COPY connectors connectors
COPY policies policies
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# xmlsec1 verifies and decrypts SAML messages (through pysaml2).
RUN apt-get update \
 && apt-get install -y --no-install-recommends xmlsec1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin isthmus
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["isthmus"]
CMD ["serve", "--config", "/etc/isthmus/isthmus.yaml"]
