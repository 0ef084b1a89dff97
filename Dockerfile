# sidegate as a container: the wheel in a venv on a slim Python base, run as a non-root user.
#   docker build -t sidegate:0.1.0 .          (or: podman build / buildah bud)
#   docker run --rm -p 9191:9191 -p 9192:9192 sidegate:0.1.0
# With no config it serves the embedded default (the shipped policies and example rate limits,
# package data). Mount a config and point SIDEGATE_CONFIG at it for a real deployment; see
# deploy/kubernetes/. Debian bookworm's glibc (2.36) has regopy wheels (needs >= 2.34).
# Without registry access, any Debian bookworm image with python3 and python3-venv serves as
# the base: --build-arg PYTHON_IMAGE=<it> (this is how the image was built and run here, with
# buildah from Debian's packages).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY sidegate/ sidegate/
COPY extauthz/ extauthz/
COPY ratelimit/ ratelimit/
COPY common/ common/
COPY policies/ policies/
COPY examples/ examples/
# The venv's own pip builds and installs the wheel (a base image's Python may have no pip).
RUN python3 -m venv /opt/sidegate \
 && /opt/sidegate/bin/pip install --no-cache-dir 'setuptools>=77' \
 && /opt/sidegate/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /dist . \
 && /opt/sidegate/bin/pip install --no-cache-dir /dist/sidegate-*.whl \
 && /opt/sidegate/bin/pip uninstall -y pip setuptools

FROM ${PYTHON_IMAGE}
# regopy's librego needs libatomic.so.1, which slim Debian images do not carry.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libatomic1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sidegate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sidegate
COPY --from=build /opt/sidegate /opt/sidegate
# In a container the listeners must take the container's interface to be published;
# Kubernetes pods override these (gRPC on a Unix socket shared with Envoy).
ENV PATH=/opt/sidegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIDEGATE_GRPC_ADDRESS=0.0.0.0:9191 \
    SIDEGATE_ADMIN_ADDRESS=0.0.0.0:9192
USER 10001:10001
WORKDIR /tmp
EXPOSE 9191 9192
# Readiness from the admin endpoint (no curl in the slim image; the venv's Python is there).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["python3", "-c", \
  "import os, urllib.request; port = os.environ.get('SIDEGATE_ADMIN_ADDRESS', ':9192').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sidegate"]
CMD ["serve"]
