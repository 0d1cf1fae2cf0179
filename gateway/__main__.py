"""``python -m gateway``: serve the app with uvicorn (settings: GatewaySettings, from the env).

SIGTERM or SIGINT: SSE streams end with a retry hint, requests in flight get
up to 5 s, then the process exits 0. LOG_FORMAT=json logs JSON lines.
"""

import functools
import signal

import uvicorn

from infra.logs import configure_logging
from infra.metrics import serve_metrics

from .app import create_app
from .settings import GatewaySettings
from .shutdown import Server

# uvicorn re-raises the signal it shut down on once it is done, which would make
# a clean shutdown look like a kill (exit -15); a no-op handler absorbs it.
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: None)

settings = GatewaySettings.from_env()
as_json = configure_logging(settings.log_format)
serve_metrics(settings.metrics_port, settings.metrics_host)
config = uvicorn.Config(
    functools.partial(create_app, settings),
    factory=True,
    host=settings.host,
    port=settings.port,
    timeout_graceful_shutdown=5,
    # JSON: uvicorn's loggers go through our handler instead of its own text ones.
    log_config=None if as_json else uvicorn.config.LOGGING_CONFIG,
)
Server(config).run()
