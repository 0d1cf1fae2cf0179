"""Order confirmations through an email provider's HTTP API (httpx), with retries.

The request carries the order id as ``Idempotency-Key``, so a retry after a
timeout (the provider may have sent it) does not send a second email at
providers that honour it. The shop sends under its claim of the order's email
part and records what was sent (workers/shop/consumers.py), so it asks again
only when a consumer died between sending and recording, with the same key.
"""

from __future__ import annotations

import logging
import uuid

import httpx
import tenacity

from ..errors import InvalidInput, RetryableError
from .contracts import OrderCreated

logger = logging.getLogger(__name__)


class _ProviderBusy(Exception):
    """A 5xx or 429: worth another attempt."""


class Mailer:
    """Sends one confirmation per order: ``await mailer.send(order)`` -> the provider's id."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        )
        self._retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((_ProviderBusy, httpx.TransportError)),
            wait=tenacity.wait_exponential(multiplier=backoff_s, max=5.0),
            stop=tenacity.stop_after_attempt(attempts),
            reraise=True,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, order: OrderCreated) -> str:
        """The provider's message id. RetryableError when it stays busy or unreachable,
        InvalidInput when it refuses the message (a 4xx: a retry would not help)."""
        try:
            response: httpx.Response = await self._retrying(self._post, order)
        except (_ProviderBusy, httpx.TransportError) as exc:
            raise RetryableError(f"email provider unavailable: {exc}") from exc
        if response.status_code >= 400:
            raise InvalidInput(
                f"email provider refused the message: {response.status_code} {response.text[:200]}"
            )
        try:
            return str(response.json()["id"])
        except (ValueError, KeyError, TypeError):
            return ""

    async def _post(self, order: OrderCreated) -> httpx.Response:
        response = await self._client.post(
            "/v1/messages",
            json=confirmation(order),
            headers={"Idempotency-Key": order.order_id},
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise _ProviderBusy(f"{response.status_code} from the email provider")
        return response


class LogMailer:
    """Stands in for a provider on a laptop (no EMAIL_API_URL): logs the confirmation."""

    async def send(self, order: OrderCreated) -> str:
        logger.info("email to %s: %s", order.email, confirmation(order)["subject"])
        return f"log-{uuid.uuid4().hex[:8]}"

    async def close(self) -> None:
        pass


def confirmation(order: OrderCreated) -> dict[str, str]:
    """The confirmation email of ``order``."""
    total = order.quote.total_cents
    items = "\n".join(f"{line.quantity} x {line.name}" for line in order.quote.lines)
    return {
        "to": order.email,
        "subject": f"Order {order.order_id[:8]} confirmed",
        "text": f"Thank you! Your order:\n{items}\nTotal: {total // 100}.{total % 100:02d} "
        f"{order.quote.currency}",
    }
