"""What one user's uploads may cost: uploads at once, unfinished tasks, thumbnail sizes.

Each size of a thumbnail task is a resize and two encodes of the whole image,
and a task waits in the queue for the shared worker pool: without these
bounds one user could queue hours of pool CPU in a few requests.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from workers.image_contracts import Probe, ThumbnailOptions

from .auth import authenticate
from .errors import RETRY_AFTER_S, HttpError
from .settings import GatewaySettings
from .task_store import DatabaseTaskStore

Endpoint = Callable[[Request], Awaitable[Response]]


def limit_uploads(endpoint: Endpoint, settings: GatewaySettings) -> Endpoint:
    """``endpoint``, answering 429 (with Retry-After) to a user past the upload limits.

    A user may be sending ``UPLOADS_PER_USER`` uploads at once, and have
    ``TASKS_IN_FLIGHT_PER_USER`` unfinished tasks counting the uploads in progress.
    Tasks are counted in the store, so every web process sees the same ones; the
    uploads in progress are this process's.
    """
    sending: Counter[str] = Counter()

    @functools.wraps(endpoint)  # its OpenAPI declaration too
    async def limited(request: Request) -> Response:
        user_id = authenticate(request).user_id
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if sending[user_id] >= settings.uploads_per_user:
            raise HttpError(
                429,
                "too_many_uploads",
                f"at most {settings.uploads_per_user} uploads at once per user",
                headers=retry,
            )
        sending[user_id] += 1
        try:
            store: DatabaseTaskStore = request.app.state.store
            limit = settings.tasks_in_flight_per_user
            in_flight = await store.count_unfinished(user_id, up_to=limit) + sending[user_id] - 1
            if in_flight >= limit:
                raise HttpError(
                    429,
                    "too_many_tasks",
                    f"at most {settings.tasks_in_flight_per_user} unfinished tasks per user",
                    headers=retry,
                )
            return await endpoint(request)
        finally:
            sending[user_id] -= 1
            if sending[user_id] <= 0:
                del sending[user_id]

    return limited


def check_sizes(options: ThumbnailOptions, image: Probe, max_sizes: int) -> None:
    """422 for more than ``max_sizes`` sizes, or a size beyond the image's longest side."""
    sizes = options.sizes_px
    if sizes is None:
        return
    if len(sizes) > max_sizes:
        raise HttpError(422, "invalid_field", f"at most {max_sizes} sizes")
    longest = max(image.width, image.height)
    too_large = sorted(size for size in set(sizes) if size > longest)
    if too_large:
        raise HttpError(
            422,
            "invalid_field",
            f"sizes {too_large} are larger than the image ({image.width}x{image.height})",
        )
