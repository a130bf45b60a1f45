# Daifuku API image: the package installed into a slim Python, served on port 8000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --system --no-create-home --home-dir /app daifuku \
    && rm -rf /app/build

USER daifuku
EXPOSE 8000
# gunicorn, with the scheduler and the projection worker (api/server.py); SIGTERM stops it cleanly.
CMD ["daifuku", "serve", "--host", "0.0.0.0", "--port", "8000"]
