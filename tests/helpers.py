"""Helpers shared by tests."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aio_pika

from infra.ports import free_port
from infra.storage import StorageConfig
from workers.settings import StorageSettings
from workers.topology import task_queue

S = TypeVar("S", bound=StorageSettings)


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 60, interval_s: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; only for state that offers no event to await."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110  (there is no event to await)
            await asyncio.sleep(interval_s)


def unreachable_amqp_url() -> str:
    """An AMQP URL on a port nobody listens on right now."""
    return f"amqp://nobody:nothing@127.0.0.1:{free_port()}/"


def listening_addresses(port: int) -> set[str]:
    """The addresses a TCP socket of this host listens on ``port`` at, from /proc/net/tcp{,6}.

    What the kernel says, not what the program reports: RabbitMQ 3.10's listener list
    shows the management listener at ``[::]`` whatever it is bound to.
    """
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                # Each 32-bit word of the address is in host (little-endian) byte order.
                words = bytes.fromhex(address)
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found


async def take_tasks(amqp_url: str, kind: str) -> list[str]:
    """The ids of the tasks waiting in ``kind``'s queue (nobody consumes it), taken off it."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(task_queue(kind), passive=True)
        ids = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            ids.append(str(message.message_id))
        return ids


def on_storage(settings: S, config: StorageConfig) -> S:
    """``settings`` (a web or worker process's) with their files in the store ``config``."""
    return dataclasses.replace(
        settings,
        storage_dir=config.local_dir,
        storage_url=config.url,
        s3_endpoint_url=config.endpoint_url,
        s3_region=config.region,
        s3_access_key_id=config.access_key_id,
        s3_secret_access_key=config.secret_access_key,
        s3_part_bytes=config.part_bytes,
    )


def storage_env(settings: StorageSettings) -> dict[str, str]:
    """The environment that gives a child process the store of ``settings``."""
    return {
        "STORAGE_DIR": str(settings.storage_dir),
        "STORAGE_URL": settings.storage_url,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "S3_REGION": settings.s3_region,
        "S3_ACCESS_KEY_ID": settings.s3_access_key_id,
        "S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key,
        "S3_PART_BYTES": str(settings.s3_part_bytes),
    }
