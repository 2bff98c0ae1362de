# proofpoint-shipper: the ppship command in a slim image, run as a non-root user.
#   docker build -t proofpoint-shipper:0.1.0 .
#   docker run --rm proofpoint-shipper:0.1.0 --help
# The wheel is built in a first stage; the final image holds only the installed package.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md CHANGELOG.md ./
COPY plugins ./plugins
COPY grammars ./grammars
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /dist

FROM python:3.11-slim
RUN groupadd --gid 10001 ppship && useradd --create-home --uid 10001 --gid 10001 ppship
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
# By number: Kubernetes' runAsNonRoot can check a number, not a name.
USER 10001:10001
WORKDIR /home/ppship
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["ppship"]
CMD ["--help"]
