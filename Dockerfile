# One image for the worker, the web API, Flower and migrations (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY tasks ./tasks
COPY alembic ./alembic
RUN pip install --no-cache-dir -e .
RUN useradd --create-home pipeline
USER pipeline
CMD ["celery", "-A", "workers.app", "worker", "--loglevel", "INFO"]
