"""``python -m gateway``: serve the app with uvicorn (HOST, PORT from the environment).

SIGTERM or SIGINT: SSE streams end with a retry hint, requests in flight get
up to 5 s, then the process exits 0. LOG_FORMAT=json logs JSON lines.
"""

import os
import signal

import uvicorn

from infra.logs import configure_logging

from .shutdown import Server

# uvicorn re-raises the signal it shut down on once it is done, which would make
# a clean shutdown look like a kill (exit -15); a no-op handler absorbs it.
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: None)

as_json = configure_logging()
config = uvicorn.Config(
    "gateway.app:create_app",
    factory=True,
    host=os.environ.get("HOST", "127.0.0.1"),
    port=int(os.environ.get("PORT", "8000")),
    timeout_graceful_shutdown=5,
    # JSON: uvicorn's loggers go through our handler instead of its own text ones.
    log_config=None if as_json else uvicorn.config.LOGGING_CONFIG,
)
Server(config).run()
