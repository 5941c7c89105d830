# chatapp: docs/deploy.md, "Docker", shows how to build and run it.
# Python 3.11: on 3.12+ Hypercorn 0.18 ignores graceful_timeout on shutdown.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user that owns nothing but the data directory.
RUN groupadd --system --gid 10001 chatapp \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin chatapp \
    && mkdir /data && chown 10001:10001 /data

WORKDIR /app
# The dependencies first, in a layer of their own: it is built again only when pyproject.toml
# changes, not on every change to the code.
COPY pyproject.toml .
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# Then the app itself (.dockerignore keeps .env, databases, tests and the git history out);
# templates/ and static/ ship inside the package.
COPY . .
RUN pip install --no-cache-dir --no-deps . && rm -rf build *.egg-info

# Production defaults; pass SECRET_KEY (32+ characters) and OPENAI_API_KEY with `docker run -e`.
ENV CHATAPP_ENV=production \
    CHATAPP_DATABASE=/data/chatapp.db \
    PORT=8000

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# slim has no curl: ask /healthz with Python's urllib (any error or non-2xx exits non-zero).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# Binds 0.0.0.0:$PORT; the same command as the Procfile and render.yaml.
CMD ["chatapp", "hypercorn.toml"]
