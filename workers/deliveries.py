"""Settling consumed messages, and describing the failures that dead-letter them."""

from __future__ import annotations

import logging
import traceback

from aiormq.abc import DeliveredMessage

from rpc.connection import CONNECTION_ERRORS

logger = logging.getLogger(__name__)

# Dead-letter headers stay small: the end of the traceback says where it broke.
TRACEBACK_MAX_CHARS = 4000


async def ack(message: DeliveredMessage) -> None:
    try:
        await message.channel.basic_ack(delivery_tag(message))
    except CONNECTION_ERRORS as exc:
        logger.warning("could not ack a delivery (it will be redelivered): %s", exc)


async def nack_requeue(message: DeliveredMessage) -> None:
    try:
        await message.channel.basic_nack(delivery_tag(message), requeue=True)
    except CONNECTION_ERRORS as exc:
        logger.warning("could not return a delivery (it will be redelivered): %s", exc)


def delivery_tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None, "consumed messages always carry a delivery tag"
    return tag


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def traceback_summary(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc, limit=-5))
    return text[-TRACEBACK_MAX_CHARS:]
