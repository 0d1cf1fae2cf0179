"""An AMQP 0-9-1 connection as an asyncio Protocol: handshake, frames, heartbeats, blocking.

Frames are parsed straight out of the receive buffer and handed to their
channel without queues or tasks in between, and everything sent during one
turn of the event loop leaves in one socket write. Those two choices are what
make a round trip cheap: aiormq reads each frame with three awaits and writes
each message with its own system call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import weakref
from typing import Any, cast

import pamqp.frame
from pamqp import commands
from pamqp.base import Frame

from . import codec
from .channel import Channel
from .errors import CONNECTION_FORCED, ConnectError, ConnectionClosed, ConnectionLost, WireError

logger = logging.getLogger(__name__)

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
FRAME_MAX = 131072
CHANNEL_MAX = 2047
CAPABILITIES: dict[str, Any] = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "basic.nack": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
}


# Time this process's connections spent blocked: finished blocks, and those still on.
_blocked_total_s = 0.0
_BLOCKED: weakref.WeakSet[AmqpProtocol] = weakref.WeakSet()


def blocked_seconds_total() -> float:
    """Seconds publishers of this process have been blocked by a broker, over all connections."""
    now = time.monotonic()
    return _blocked_total_s + sum(now - p._blocked_since for p in list(_BLOCKED))


class AmqpProtocol(asyncio.Protocol):
    """One connection. ``ready`` resolves once it is open; ``done`` when it has ended."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        vhost: str,
        name: str,
        heartbeat_s: int | None,
        auth_mechanism: str = "PLAIN",
        user_id: str | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        # Whoever opened the connection may have given up waiting (a timeout).
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.is_open = False
        self.frame_max = FRAME_MAX
        self._channel_max = CHANNEL_MAX
        self._credentials = (username, password)
        # Stamped on every message published here (Publishing.publish).
        self.user_id = user_id
        self._auth_mechanism = auth_mechanism
        self._vhost = vhost
        self._name = name
        self._heartbeat_s = heartbeat_s
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._ack_channels: set[Channel] = set()
        self._flush_scheduled = False
        self._wrote = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._channels: dict[int, Channel] = {}
        self._last_received = self.loop.time()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._error: WireError | None = None
        # Flow control (connection.blocked): why the broker blocks publishers, or None.
        self.blocked_reason: str | None = None
        self._blocked_since = 0.0
        self._unblocked = asyncio.Event()
        self._unblocked.set()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(PROTOCOL_HEADER)

    def data_received(self, data: bytes) -> None:
        self._last_received = self.loop.time()
        buffer = self._buffer
        buffer += data
        with memoryview(buffer) as view:
            consumed = self._parse(buffer, view)
        del buffer[:consumed]

    def _parse(self, buffer: bytearray, view: memoryview) -> int:
        """Dispatch every whole frame in ``buffer``; returns how many bytes they took."""
        position = 0
        size = len(buffer)
        while size - position >= codec.FRAME_OVERHEAD:
            frame_type, channel, length = codec.FRAME_HEAD.unpack_from(buffer, position)
            end = position + codec.FRAME_HEAD.size + length
            if end >= size:
                break
            if buffer[end] != codec.FRAME_END_BYTE:
                self._fail(ConnectionLost("malformed frame from the broker"))
                return size
            start = position + codec.FRAME_HEAD.size
            position = end + 1
            try:
                self._dispatch(frame_type, channel, view[start:end])
            except Exception as exc:
                self._frame_failed(channel, exc)
        return position

    def _frame_failed(self, number: int, exc: Exception) -> None:
        """A frame we could not take leaves its channel (or the connection) in an unknown
        state, mid-message perhaps: close it, and let its owner open a new one."""
        # The traceback as text: its frames hold views of the receive buffer, which must
        # not outlive this call (the buffer is resized after it).
        trace = "".join(traceback.format_exception(exc))
        logger.error("could not handle a frame on channel %d; closing it\n%s", number, trace)
        channel = self._channels.get(number)
        if channel is None:
            self._fail(ConnectionLost(f"could not handle a connection frame: {exc!r}"))
        else:
            channel.out_of_step(f"could not handle a frame: {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        error = self._error or ConnectionLost(f"connection to the broker lost: {exc or 'closed'}")
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for channel in list(self._channels.values()):
            channel.lost(error)
        self._set_unblocked()  # nobody waits on a dead connection
        self._writable.set()
        if not self.ready.done():
            self.ready.set_exception(error)
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- sending --------------------------------------------------------------------------------

    def send_frame(self, channel: int, frame: Frame) -> None:
        self._out.append(pamqp.frame.marshal(frame, channel))
        self._schedule_flush()

    def send_frames(self, frames: list[bytes]) -> None:
        self._out += frames
        self._schedule_flush()

    def flush_soon(self, channel: Channel) -> None:
        """Collect ``channel``'s acks at the next write."""
        self._ack_channels.add(channel)
        self._schedule_flush()

    async def writable(self) -> None:
        """Wait while the socket's send buffer is full."""
        if not self._writable.is_set():
            await self._writable.wait()

    @property
    def is_blocked(self) -> bool:
        """True while the broker blocks publishers (a memory or disk alarm)."""
        return self.blocked_reason is not None

    async def unblocked(self) -> None:
        """Wait while the broker blocks publishers (returns at once if the connection ends)."""
        if not self._unblocked.is_set():
            await self._unblocked.wait()

    def _set_blocked(self, reason: str) -> None:
        if self.blocked_reason is None:
            self._blocked_since = time.monotonic()
            _BLOCKED.add(self)
        self.blocked_reason = reason
        self._unblocked.clear()

    def _set_unblocked(self) -> None:
        global _blocked_total_s
        if self.blocked_reason is None:
            return
        self.blocked_reason = None
        _BLOCKED.discard(self)
        _blocked_total_s += time.monotonic() - self._blocked_since
        self._unblocked.set()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if self._ack_channels:
            for channel in self._ack_channels:
                out += channel.take_ack_frames()
            self._ack_channels.clear()
        if not out:
            return
        self._out = []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))
            self._wrote = True

    # --- channels -------------------------------------------------------------------------------

    async def channel(self, *, publisher_confirms: bool = False) -> Channel:
        """Open a new channel."""
        if not self.is_open:
            raise self._error or ConnectionLost("the connection is not open")
        number = next(n for n in range(1, self._channel_max + 1) if n not in self._channels)
        channel = Channel(self, number)
        self._channels[number] = channel
        await channel.open()
        if publisher_confirms:
            await channel.confirm_select()
        return channel

    def forget(self, channel: Channel) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]

    def unmarshal(self, payload: memoryview) -> Frame:
        """A method frame's payload decoded by pamqp (everything but the hot methods)."""
        raw = codec.FRAME_HEAD.pack(codec.FRAME_METHOD, 0, len(payload)) + payload + codec.FRAME_END
        frame: Any = pamqp.frame.unmarshal(raw)[2]
        return frame  # type: ignore[no-any-return]

    # --- frames -----------------------------------------------------------------------------------

    def _dispatch(self, frame_type: int, number: int, payload: memoryview) -> None:
        if frame_type == codec.FRAME_HEARTBEAT:
            return
        if number == 0:
            self._on_connection_method(self.unmarshal(payload))
            return
        channel = self._channels.get(number)
        if channel is None:
            logger.warning("frame for unknown channel %d", number)
        elif frame_type == codec.FRAME_METHOD:
            class_id, method_id = codec.METHOD_ID.unpack_from(payload, 0)
            channel.on_method(class_id, method_id, payload)
        elif frame_type == codec.FRAME_HEADER:
            channel.on_header(payload)
        elif frame_type == codec.FRAME_BODY:
            channel.on_body(payload)

    def _on_connection_method(self, frame: Frame) -> None:
        if isinstance(frame, commands.Connection.Start):
            username, password = self._credentials
            offered = str(frame.mechanisms).split()
            if self._auth_mechanism not in offered:
                self._fail(
                    ConnectError(
                        f"the broker does not offer the {self._auth_mechanism} mechanism"
                        f" (it offers {', '.join(offered)})"
                    )
                )
                return
            # EXTERNAL: the identity is the client certificate the TLS handshake showed.
            response = "" if self._auth_mechanism == "EXTERNAL" else f"\0{username}\0{password}"
            self.send_frame(
                0,
                commands.Connection.StartOk(
                    client_properties={
                        "product": "taskgate",
                        "connection_name": self._name,
                        "capabilities": CAPABILITIES,
                    },
                    mechanism=self._auth_mechanism,
                    response=response,
                ),
            )
        elif isinstance(frame, commands.Connection.Tune):
            # The values set before the handshake are this side's upper bounds (the URL's
            # channel_max/frame_max, see robust.py); 0 from the broker means no limit.
            self._channel_max = min(frame.channel_max or self._channel_max, self._channel_max)
            self.frame_max = min(frame.frame_max or self.frame_max, self.frame_max)
            heartbeat = frame.heartbeat if self._heartbeat_s is None else self._heartbeat_s
            self.send_frame(
                0,
                commands.Connection.TuneOk(
                    channel_max=self._channel_max, frame_max=self.frame_max, heartbeat=heartbeat
                ),
            )
            self.send_frame(0, commands.Connection.Open(virtual_host=self._vhost))
            if heartbeat:
                self._start_heartbeats(heartbeat)
        elif isinstance(frame, commands.Connection.OpenOk):
            self.is_open = True
            self.ready.set_result(None)
        elif isinstance(frame, commands.Connection.Close):
            self.send_frame(0, commands.Connection.CloseOk())
            self._flush()
            code, text = frame.reply_code or 0, frame.reply_text or ""
            if code == CONNECTION_FORCED:  # shutting down, or an operator closed it: reconnect
                self._fail(ConnectionLost(f"the broker closed the connection: {code} {text}"))
            else:
                self._fail(ConnectionClosed(code, text))
        elif isinstance(frame, commands.Connection.CloseOk):
            if self._transport is not None:
                self._transport.close()
        elif isinstance(frame, commands.Connection.Blocked):
            logger.warning("the broker blocks publishers: %s", frame.reason)
            self._set_blocked(frame.reason or "no reason given")
        elif isinstance(frame, commands.Connection.Unblocked):
            logger.info("the broker unblocked publishers")
            self._set_unblocked()

    def _start_heartbeats(self, interval_s: int) -> None:
        def beat() -> None:
            if self.loop.time() - self._last_received > 2 * interval_s:
                self._fail(ConnectionLost(f"no frame from the broker in {2 * interval_s} s"))
                return
            if not self._wrote and self._transport is not None:
                self._transport.write(HEARTBEAT_FRAME)
            self._wrote = False
            self._heartbeat = self.loop.call_later(interval_s / 2, beat)

        self._heartbeat = self.loop.call_later(interval_s / 2, beat)

    def _fail(self, error: WireError) -> None:
        self._error = error
        if self._transport is not None:
            self._transport.abort()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the connection politely; abort it if the broker does not answer in time."""
        if self.is_open and self._transport is not None:
            self.is_open = False
            self._error = ConnectionLost("the connection was closed")
            self.send_frame(
                0,
                commands.Connection.Close(
                    reply_code=200, reply_text="bye", class_id=0, method_id=0
                ),
            )
            try:
                await asyncio.wait_for(asyncio.shield(self.done), timeout_s)
                return
            except TimeoutError:
                pass
        if self._transport is not None:
            self._transport.abort()
        await self.done
