# The dashboard image (ECS Fargate, ARM64 or x86). Only requirements.txt: no torch / transformers,
# captioning runs on SageMaker (CAPTIONER=sagemaker or sagemaker-async).
# Base pinned to an exact Python patch release and Debian release; bump both on purpose.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-virtualenv -r requirements.txt
COPY pyproject.toml ./
COPY pipeline ./pipeline
COPY dashboard ./dashboard
RUN /opt/venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Streamlit runs the page files from here; the library comes from the installed package.
COPY dashboard ./dashboard
COPY .streamlit ./.streamlit
RUN mkdir -p /app/data && chown app:app /app/data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/app/data \
    AUTH_MODE=alb \
    CAPTIONER=sagemaker \
    LOG_LEVEL=INFO \
    LOG_FORMAT=json \
    METRICS_FORMAT=emf
USER 10001:10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"]
# `streamlit run dashboard/app.py` through dashboard/serve.py: with LOG_FORMAT=json every line it writes (Streamlit's
# own start-up and shutdown text included) is one JSON object for CloudWatch Logs Insights.
CMD ["python", "-m", "dashboard.serve", "--server.port=8501", "--server.address=0.0.0.0"]
