"""AMQP 0-9-1 frames on the hot path: publishing, deliveries, confirms, properties.

pamqp (aiormq's codec) builds and parses every other frame; these few are
written by hand because pamqp's general, validating code is most of the
per-message CPU an RPC round trip costs in Python.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = b"\xce"
FRAME_END_BYTE = 0xCE
FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
METHOD_ID = struct.Struct(">HH")  # class id, method id
# Frame head + frame end: what a frame adds to its payload.
FRAME_OVERHEAD = FRAME_HEAD.size + 1

BASIC_CLASS = 60
BASIC_PUBLISH = (60, 40)
BASIC_RETURN = (60, 50)
BASIC_DELIVER = (60, 60)
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)

_HEADER_HEAD = struct.Struct(">HHQH")  # class, weight, body size, property flags
_PUBLISH_HEAD = b"\x00\x3c\x00\x28\x00\x00"  # Basic.Publish, reserved ticket 0
_ACK = struct.Struct(">HHQB")  # Basic.Ack: class, method, delivery tag, multiple bit
_CONFIRM = struct.Struct(">QB")  # Basic.Ack/Nack arguments: delivery tag, flags
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")


class Properties:
    """Basic content properties, named as pamqp and aiormq name them."""

    __slots__ = (
        "app_id",
        "cluster_id",
        "content_encoding",
        "content_type",
        "correlation_id",
        "delivery_mode",
        "expiration",
        "headers",
        "message_id",
        "message_type",
        "priority",
        "reply_to",
        "timestamp",
        "user_id",
    )

    def __init__(
        self,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery_mode: int | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: str | None = None,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        message_type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.message_type = message_type
        self.user_id = user_id
        self.app_id = app_id
        self.cluster_id = cluster_id

    def copy(self) -> Properties:
        duplicate = Properties()
        for name in self.__slots__:
            setattr(duplicate, name, getattr(self, name))
        return duplicate

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__slots__
            if getattr(self, name) is not None
        )
        return f"Properties({fields})"


# (attribute, flag bit, kind) in wire order; kinds: s shortstr, o octet, t table, d timestamp.
_PROPERTY_LAYOUT = (
    ("content_type", 1 << 15, "s"),
    ("content_encoding", 1 << 14, "s"),
    ("headers", 1 << 13, "t"),
    ("delivery_mode", 1 << 12, "o"),
    ("priority", 1 << 11, "o"),
    ("correlation_id", 1 << 10, "s"),
    ("reply_to", 1 << 9, "s"),
    ("expiration", 1 << 8, "s"),
    ("message_id", 1 << 7, "s"),
    ("timestamp", 1 << 6, "d"),
    ("message_type", 1 << 5, "s"),
    ("user_id", 1 << 4, "s"),
    ("app_id", 1 << 3, "s"),
    ("cluster_id", 1 << 2, "s"),
)


_USER_ID_BIT = 1 << 4
_NO_PROPERTIES = Properties()


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def encode_properties(
    properties: Properties | None, user_id: str | None = None
) -> tuple[int, bytes]:
    """The property flags and the encoded property list; ``user_id`` where ``properties``
    have none."""
    if properties is None:
        if user_id is None:
            return 0, b""
        properties = _NO_PROPERTIES
    flags = 0
    parts: list[bytes] = []
    for name, bit, kind in _PROPERTY_LAYOUT:
        value = getattr(properties, name)
        if value is None:
            if bit != _USER_ID_BIT or user_id is None:
                continue
            value = user_id
        flags |= bit
        if kind == "s":
            parts.append(_shortstr(value))
        elif kind == "o":
            parts.append(bytes((value,)))
        elif kind == "t":
            parts.append(pamqp_encode.field_table(value))
        else:
            seconds = int(value.timestamp()) if isinstance(value, datetime) else int(value)
            parts.append(_U64.pack(seconds))
    return flags, b"".join(parts)


def _read_shortstr(data: bytes | memoryview, offset: int) -> tuple[str, int]:
    """The short string at ``offset`` and the offset after it."""
    end = offset + 1 + data[offset]
    return bytes(data[offset + 1 : end]).decode(), end


def decode_properties(flags: int, data: bytes | memoryview, offset: int) -> Properties:
    """Properties from a content header's property list starting at ``offset``."""
    properties = Properties()
    for name, bit, kind in _PROPERTY_LAYOUT:
        if not flags & bit:
            continue
        value: Any
        if kind == "s":
            value, offset = _read_shortstr(data, offset)
        elif kind == "o":
            value = data[offset]
            offset += 1
        elif kind == "t":
            consumed, value = pamqp_decode.field_table(bytes(data[offset:]))
            offset += consumed
        else:
            (seconds,) = _U64.unpack_from(data, offset)
            value = datetime.fromtimestamp(seconds, UTC)
            offset += 8
        setattr(properties, name, value)
    return properties


def publish_frames(
    channel: int,
    frame_max: int,
    body: bytes,
    exchange: str,
    routing_key: str,
    properties: Properties | None,
    mandatory: bool,
    user_id: str | None = None,
) -> list[bytes]:
    """The method, header and body frames of one Basic.Publish (``user_id``: see
    encode_properties)."""
    method = b"".join(
        (
            _PUBLISH_HEAD,
            _shortstr(exchange),
            _shortstr(routing_key),
            b"\x01" if mandatory else b"\x00",
        )
    )
    flags, property_list = encode_properties(properties, user_id)
    header = _HEADER_HEAD.pack(BASIC_CLASS, 0, len(body), flags) + property_list
    frames = [
        FRAME_HEAD.pack(FRAME_METHOD, channel, len(method)),
        method,
        FRAME_END,
        FRAME_HEAD.pack(FRAME_HEADER, channel, len(header)),
        header,
        FRAME_END,
    ]
    chunk = frame_max - FRAME_OVERHEAD
    for start in range(0, len(body), chunk):
        piece = body[start : start + chunk]
        frames += (FRAME_HEAD.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END)
    return frames


def ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """A Basic.Ack frame (consumer side)."""
    payload = _ACK.pack(60, 80, delivery_tag, 1 if multiple else 0)
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END


def decode_confirm(payload: bytes | memoryview) -> tuple[int, bool]:
    """Delivery tag and ``multiple`` of a Basic.Ack or Basic.Nack from the broker."""
    tag, flags = _CONFIRM.unpack_from(payload, 4)
    return tag, bool(flags & 1)


def decode_deliver(payload: bytes | memoryview) -> tuple[str, int, bool, str, str]:
    """Consumer tag, delivery tag, redelivered, exchange and routing key of a Basic.Deliver."""
    consumer_tag, offset = _read_shortstr(payload, 4)
    (delivery_tag,) = _U64.unpack_from(payload, offset)
    redelivered = bool(payload[offset + 8] & 1)
    exchange, offset = _read_shortstr(payload, offset + 9)
    routing_key, _ = _read_shortstr(payload, offset)
    return consumer_tag, delivery_tag, redelivered, exchange, routing_key


def decode_return(payload: bytes | memoryview) -> tuple[int, str, str, str]:
    """Reply code, reply text, exchange and routing key of a Basic.Return."""
    (reply_code,) = _U16.unpack_from(payload, 4)
    reply_text, offset = _read_shortstr(payload, 6)
    exchange, offset = _read_shortstr(payload, offset)
    routing_key, _ = _read_shortstr(payload, offset)
    return reply_code, reply_text, exchange, routing_key


def decode_header(payload: bytes | memoryview) -> tuple[int, Properties]:
    """Body size and properties of a content header frame."""
    _class_id, _weight, body_size, flags = _HEADER_HEAD.unpack_from(payload, 0)
    return body_size, decode_properties(flags, payload, _HEADER_HEAD.size)
