"""The Starlette application: ``uvicorn --factory gateway.app:create_app``."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route

from infra import presence
from infra.database import open_database
from infra.storage import open_storage
from workers import claims, kinds, task_records

from . import autoscale, task_inputs
from .admin import overview as admin_overview
from .admin.dead_letters import discard_dead, list_dead_queues, replay_dead, show_dead_queue
from .admin.history import HistorySampler, get_history
from .admin.overview import Overview, get_overview
from .admin.page import admin_page
from .admin.retry import retry_task
from .admin.stream import admin_stream
from .admin.throughput import Throughput
from .admin.timeline import task_timeline
from .asyncapi import asyncapi_json
from .auth import Authenticating, Credentials, close_session, get_session, open_session
from .autoscale import AutoscaleSignal, Bounds
from .broker import BrokerLink
from .errors import EXCEPTION_HANDLERS
from .feed import LiveFeed
from .health import Readiness, healthz, readyz
from .hub import Hub
from .idempotency import UPLOAD_KEY_MIGRATIONS
from .limits import StreamLimiter
from .metrics import SSE_CONNECTIONS, metrics
from .notifications import (
    NotificationFeed,
    NotificationHub,
    announce_sign_out,
    notification_stream,
    send_notification,
)
from .openapi import openapi_json
from .order_store import OrderStore
from .orders import create_order, get_order
from .outbox import OUTBOX_MIGRATIONS
from .outbox_relay import OutboxRelay
from .pages import page, static_files
from .publisher import Publisher
from .rate_limit import RateLimiter
from .recorder import Recorder
from .retention import Retention
from .rpc_proxy import call_method
from .sessions import Sessions
from .settings import GatewaySettings
from .shutdown import on_exit_signal
from .streams import task_events
from .stuck import StuckTaskSweeper
from .sweeper import OrphanSweeper
from .task_cancel import cancel_task
from .task_list import list_tasks
from .task_store import DatabaseTaskStore
from .tasks import get_file, get_task
from .tokens import check_secret
from .upload_limits import limit_uploads
from .uploads import create_upload

logger = logging.getLogger(__name__)


def tune_garbage_collector() -> None:
    """Keep full collections rare and short; each one pauses every stream at once.

    What exists once the app has started (modules, settings, the store) lives as
    long as the process: frozen, no collection scans it again. Thousands of open
    streams are long-lived too, so full collections, which scan them all, are
    allowed less often (gen0 10x the default; a full one after 50 gen1 runs).
    bench/sse.py: p99 at 5,000 streams was 250-270 ms with the defaults, from
    full collections; 10 ms with collection off.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(7_000, 10, 50)


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    """Build the app; settings come from the environment unless given."""
    settings = settings or GatewaySettings.from_env()
    check_secret(settings.secret_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        storage = open_storage(settings.storage_config())
        if settings.storage_config().is_local:
            settings.storage_dir.mkdir(parents=True, exist_ok=True)
        database = await open_database(
            settings.database, write_timeout_s=settings.store_write_timeout_s
        )
        store = await DatabaseTaskStore.open(database)
        orders = await OrderStore.open(database)
        await database.migrate("outbox", OUTBOX_MIGRATIONS)
        await database.migrate("upload_keys", UPLOAD_KEY_MIGRATIONS)
        await database.migrate(task_inputs.COMPONENT, task_inputs.MIGRATIONS)
        await task_records.migrate(database)
        await database.migrate(kinds.COMPONENT, kinds.MIGRATIONS)
        await database.migrate(autoscale.COMPONENT, autoscale.MIGRATIONS)
        await database.migrate(admin_overview.COMPONENT, admin_overview.MIGRATIONS)
        await database.migrate(presence.COMPONENT, presence.MIGRATIONS)
        hub = Hub(capacity=settings.sse_buffer_events)
        notifications = NotificationHub(capacity=settings.sse_buffer_events)
        publisher = Publisher(
            queue_max_length=settings.queue_max_length, timeout_s=settings.publish_timeout_s
        )
        sessions = await Sessions.open(
            database,
            cache_s=settings.session_cache_s,
            announce=functools.partial(announce_sign_out, publisher),
        )
        feed = LiveFeed(hub)
        recorder = Recorder(
            store,
            shards=settings.status_shards,
            records=settings.recorder_records,
            linger_s=settings.recorder_linger_ms / 1000,
        )
        notification_feed = NotificationFeed(notifications, sessions)
        autoscale_signal = AutoscaleSignal(
            database,
            Bounds(
                window_s=settings.autoscale_window_s,
                drain_s=settings.autoscale_drain_s,
                min_workers=settings.autoscale_min_workers,
                max_workers=settings.autoscale_max_workers,
            ),
            interval_s=settings.autoscale_interval_s,
        )
        # Ticks of at most a second, a whole number of them per history step.
        step_s = settings.admin_history_step_s
        throughput = Throughput(tick_s=step_s / math.ceil(step_s))
        hub.taps.append(throughput.count)
        overview = Overview(
            database,
            throughput,
            sample_s=settings.admin_sample_s,
            presence_interval_s=settings.presence_interval_s,
        )
        history = HistorySampler(database, overview, throughput, step_s=step_s)
        broker = BrokerLink(
            settings,
            attach=[
                feed.start,
                recorder.start,
                notification_feed.start,
                publisher.start,
                autoscale_signal.start,
                overview.start,
            ],
        )
        relay = OutboxRelay(
            database,
            publisher,
            lease_s=settings.outbox_lease_s,
            poll_s=settings.outbox_poll_s,
            retry_max_s=settings.outbox_retry_max_s,
        )
        sweeper = OrphanSweeper(
            database,
            storage,
            grace_s=settings.orphan_grace_s,
            interval_s=settings.orphan_sweep_s,
            retention=Retention(
                database,
                storage,
                retention_s=settings.task_retention_s,
                batch=settings.task_retention_batch,
            ),
        )
        stuck_tasks = StuckTaskSweeper(
            database,
            relay,
            publisher,
            lease_s=settings.task_lease_s,
            name=claims.new_holder("gateway"),
        )
        app.state.autoscale = autoscale_signal
        app.state.admin_overview = overview
        app.state.admin_history = history
        app.state.database = database
        app.state.storage = storage
        app.state.relay = relay
        app.state.settings = settings
        app.state.store = store
        app.state.orders = orders
        app.state.hub = hub
        app.state.notifications = notifications
        app.state.feed = feed
        app.state.recorder = recorder
        app.state.publisher = publisher
        app.state.broker = broker
        app.state.sessions = sessions
        app.state.credentials = Credentials.from_settings(settings, sessions)
        app.state.notification_limiter = RateLimiter(
            per_minute=settings.notifications_per_minute, burst=settings.notification_burst
        )
        readiness = Readiness(
            links=(broker, publisher, feed, recorder),
            publisher=publisher,
            store=store,
            recording=recorder,
            max_lag_s=settings.recorder_max_lag_s,
            max_backlog=settings.recorder_max_backlog,
            timeout_s=settings.ready_timeout_s,
            cache_s=settings.ready_cache_s,
        )
        app.state.readiness = readiness
        limiter = StreamLimiter(
            per_user=settings.sse_max_per_user, per_process=settings.sse_max_streams
        )
        app.state.stream_limiter = limiter
        SSE_CONNECTIONS.set_function(lambda: limiter.open_streams)
        broker.start()
        relay.start()
        sweeper.start()
        stuck_tasks.start()
        history.start()

        def end_streams() -> None:
            hub.end_all("shutdown")
            notifications.end_all("shutdown")

        forget_signal = on_exit_signal(end_streams)
        tune_garbage_collector()
        try:
            yield
        finally:
            forget_signal()
            await history.close()
            await overview.close()
            await stuck_tasks.close()
            await autoscale_signal.close()
            await sweeper.close()
            await relay.close()
            await readiness.close()
            hub.end_all("shutdown")
            notifications.end_all("shutdown")
            await feed.close()
            await recorder.close()
            await notification_feed.close()
            await publisher.close()
            await broker.close()
            await store.close()
            await database.close()
            await storage.close()

    routes = [
        Route("/", page),
        Route("/admin", admin_page),
        Mount("/static", static_files(), name="static"),
        Route("/openapi.json", openapi_json),
        Route("/asyncapi.json", asyncapi_json),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/session", open_session, methods=["POST"]),
        Route("/session", get_session, methods=["GET"]),
        Route("/session", close_session, methods=["DELETE"]),
        Route("/uploads", limit_uploads(create_upload, settings), methods=["POST"]),
        Route("/tasks", list_tasks),
        Route("/tasks/{task_id}", get_task),
        Route("/tasks/{task_id}", cancel_task, methods=["DELETE"]),
        Route("/tasks/{task_id}/events", task_events),
        Route("/tasks/{task_id}/retry", retry_task, methods=["POST"]),
        Route("/files/{task_id}/{name}", get_file),
        Route("/admin/api/tasks/{task_id}/timeline", task_timeline),
        Route("/admin/api/dead", list_dead_queues),
        Route("/admin/api/dead/{queue}", show_dead_queue),
        Route("/admin/api/dead/{queue}/replay", replay_dead, methods=["POST"]),
        Route("/admin/api/dead/{queue}/discard", discard_dead, methods=["POST"]),
        Route("/orders", create_order, methods=["POST"]),
        Route("/orders/{order_id}", get_order),
        Route("/rpc/{method}", call_method, methods=["POST"]),
        Route("/notifications", send_notification, methods=["POST"]),
        Route("/notifications/stream", notification_stream),
        Route("/admin/api/overview", get_overview),
        Route("/admin/api/history", get_history),
        Route("/admin/stream", admin_stream),
    ]
    middleware = []
    if settings.cors_origins:
        # A front-end on another origin sends the session cookie: credentials on, origins
        # listed (a wildcard is not allowed with credentials).
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
                expose_headers=["Location", "Retry-After"],
            )
        )
    return Authenticating(
        streams={
            r"/tasks/(?P<task_id>[^/]+)/events": task_events,
            r"/notifications/stream": notification_stream,
            r"/admin/stream": admin_stream,
        },
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
