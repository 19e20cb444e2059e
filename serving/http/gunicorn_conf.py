"""gunicorn configuration of the candidate service, for a plain `gunicorn` launch:

    CANDIDATES_MODEL=/srv/publish gunicorn -c python:serving.http.gunicorn_conf \\
        'serving.http.app:create_app_from_environment(preload=True)'

Settings come from CANDIDATES_* variables (serving/http/settings.py: CANDIDATES_HOST, CANDIDATES_PORT,
CANDIDATES_WORKERS, ...); gunicorn's own options given on its command line (-b, -w) win. The
processes are set up as `candidates serve --workers N` sets them up (serving/http/workers.py).
"""

from serving.http.settings import ServiceSettings
from serving.http.workers import gunicorn_options, limit_openmp_threads, prepare_multiprocess_metrics

prepare_multiprocess_metrics()  # before the app imports prometheus_client
limit_openmp_threads(ServiceSettings())  # before the app imports FAISS
globals().update(gunicorn_options(ServiceSettings()))
