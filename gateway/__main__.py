"""``python -m gateway``: serve the app with uvicorn (HOST, PORT from the environment)."""

import os

import uvicorn

uvicorn.run(
    "gateway.app:create_app",
    factory=True,
    host=os.environ.get("HOST", "127.0.0.1"),
    port=int(os.environ.get("PORT", "8000")),
    timeout_graceful_shutdown=5,
)
