# The image docker-compose.yml builds: the project and its console script `saga`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY saga_app ./saga_app
COPY topics ./topics
COPY participants ./participants
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["saga", "worker"]
