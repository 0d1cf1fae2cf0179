"""``python -m gateway``: serve the app with uvicorn (settings: GatewaySettings, from the env).

SIGTERM or SIGINT: SSE streams end with a retry hint, requests in flight get
up to 5 s, then the process exits 0. LOG_FORMAT=json logs JSON lines.

Around the app, the server holds every connection to the HTTP limits
(``http_guard``), answers only the hosts in ALLOWED_HOSTS, and marks every
response ``X-Content-Type-Options: nosniff`` (as a server default header, so
it costs a stream nothing per event).
"""

import signal

import uvicorn
from starlette.types import ASGIApp

from infra.logs import configure_logging
from infra.metrics import serve_metrics

from .app import create_app
from .http_guard import HttpGuard, HttpLimits, guarded_protocol
from .settings import GatewaySettings
from .shutdown import Server

# uvicorn re-raises the signal it shut down on once it is done, which would make
# a clean shutdown look like a kill (exit -15); a no-op handler absorbs it.
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: None)

settings = GatewaySettings.from_env()
as_json = configure_logging(settings.log_format)
serve_metrics(settings.metrics_port, settings.metrics_host)


def guarded_app() -> ASGIApp:
    return HttpGuard(create_app(settings), settings.allowed_hosts)


limits = HttpLimits(
    max_header_bytes=settings.max_header_bytes,
    header_timeout_s=settings.header_timeout_s,
    body_timeout_s=settings.body_timeout_s,
)
config = uvicorn.Config(
    guarded_app,
    factory=True,
    # HttpGuard.__call__ returns a coroutine without being one: uvicorn cannot tell ASGI 3.
    interface="asgi3",
    host=settings.host,
    port=settings.port,
    http=guarded_protocol(limits),
    headers=[("X-Content-Type-Options", "nosniff")],
    timeout_graceful_shutdown=5,
    # JSON: uvicorn's loggers go through our handler instead of its own text ones.
    log_config=None if as_json else uvicorn.config.LOGGING_CONFIG,
)
Server(config).run()
