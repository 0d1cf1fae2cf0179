"""The AsyncAPI 3.0 document of the AMQP side, generated from the topology and the Structs.

Channels and operations (who sends and receives what, RPC request/reply pairs) come from
gateway.asyncapi_channels; messages are the Structs of workers.schemas.MESSAGES, each
with its version and AMQP ``type``, and the gateway's own notifications; the broker roles
(workers.roles) come with their permissions. The document names no host and
no secret: ``GET /asyncapi.json`` serves it to anyone.

``python -m gateway.asyncapi`` writes it to ``schemas/asyncapi.json`` with every
message's schema (workers.schemas); ``--check`` exits 1 if a file is stale or a message
breaks its released version. tests/test_asyncapi.py and
tests/test_schemas.py run those checks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from workers.roles import ROLES
from workers.schemas import (
    MESSAGES,
    RPC_METHODS,
    SCHEMA_DIR,
    Message,
    clean_descriptions,
    incompatible,
    render,
    rpc_request,
    stale,
    write,
)
from workers.shop.contracts import ORDER_CREATED
from workers.topology import (
    ATTEMPT_HEADER,
    DIED_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    SENDER_HEADER,
    STATUS_MESSAGE_TYPE,
    TASK_MESSAGE_TYPE,
    TRACEBACK_HEADER,
)

from .asyncapi_channels import AMQP, CARRIES, channels, operations, ref
from .notifications import (
    NOTIFICATION_TYPE,
    SESSION_ENDED_TYPE,
    Notification,
    SessionEnded,
)
from .openapi import JSON, Media, documented

DOCUMENT = "asyncapi.json"
REF = "#/components/schemas/{name}"

# Messages only gateways exchange, on ``notifications``.
GATEWAY_MESSAGES = (
    Message("notification", 1, Notification),
    Message("session-ended", 1, SessionEnded),
)
ALL_MESSAGES = (*MESSAGES, *GATEWAY_MESSAGES)

# Message name -> the AMQP ``type`` property it is published with (an RPC request: its method).
AMQP_TYPES = {
    "task": TASK_MESSAGE_TYPE,
    "status-event": STATUS_MESSAGE_TYPE,
    "order-created": ORDER_CREATED,
    "notification": NOTIFICATION_TYPE,
    "session-ended": SESSION_ENDED_TYPE,
    **{rpc_request(method): method for method in RPC_METHODS},
}

_DEAD_HEADERS = {
    "type": "object",
    "description": "What a dead letter carries besides the original message and headers.",
    "properties": {
        REASON_HEADER: {"type": "string", "description": "why it was dead-lettered"},
        QUEUE_HEADER: {"type": "string", "description": "the queue it came from"},
        TRACEBACK_HEADER: {"type": "string", "description": "the handler's traceback, if any"},
        SENDER_HEADER: {"type": "string", "description": "user_id of its sender ('' if none)"},
        DIED_AT_HEADER: {"type": "integer", "description": "when, Unix milliseconds"},
    },
}
_TASK_HEADERS = {
    "type": "object",
    "properties": {
        ATTEMPT_HEADER: {
            "type": "integer",
            "minimum": 1,
            "description": "the attempt this copy starts; a retry copy keeps the body as is",
        }
    },
}
_CORRELATION = {
    "status-event": ("$message.header#/correlation_id", "the task id: it picks the shard"),
}


def _message(message: Message, payload: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": message.name,
        "title": message.name,
        "contentType": JSON,
        "payload": payload,
        "x-taskgate-version": message.version,
        "x-taskgate-schema": f"{message.name}.json",
    }
    amqp_type = AMQP_TYPES.get(message.name)
    binding: dict[str, Any] = {"bindingVersion": AMQP}
    if amqp_type:
        binding["messageType"] = amqp_type
    found["bindings"] = {"amqp": binding}
    if message.name == "task":
        found["headers"] = _TASK_HEADERS
    if message.name in _CORRELATION:
        location, description = _CORRELATION[message.name]
        found["correlationId"] = {"location": location, "description": description}
    elif message.name.startswith("rpc."):
        found["correlationId"] = {
            "location": "$message.header#/correlation_id",
            "description": "chosen by the caller; the reply carries it back",
        }
    return found


def messages(found: Iterable[Message]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(components.messages, components.schemas)`` of ``found``, and of their dead letters."""
    found = tuple(found)
    payloads, schemas = msgspec.json.schema_components(
        [message.body for message in found], ref_template=REF
    )
    result: dict[str, Any] = {}
    for message, payload in zip(found, payloads, strict=True):
        result[message.name] = _message(message, payload)
        if any(f"{message.name}.dead" in names for names in CARRIES.values()):
            dead = _message(message, payload)
            dead.update(name=f"{message.name}.dead", title=f"{message.name} (dead letter)")
            dead["headers"] = _DEAD_HEADERS
            result[f"{message.name}.dead"] = dead
    return _asyncapi_schema(result), _asyncapi_schema(clean_descriptions(schemas))


def _asyncapi_schema(node: Any) -> Any:
    """``node`` with OpenAPI's discriminator objects (msgspec's) as AsyncAPI's: the name."""
    if isinstance(node, dict):
        return {
            key: value["propertyName"]
            if key == "discriminator" and isinstance(value, dict)
            else _asyncapi_schema(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_asyncapi_schema(item) for item in node]
    return node


def document() -> dict[str, Any]:
    """The AsyncAPI document."""
    component_messages, schemas = messages(ALL_MESSAGES)
    found_channels = channels()
    for channel_id, channel in found_channels.items():
        channel["messages"] = {
            name: ref("components/messages", name) for name in CARRIES[channel_id]
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "taskgate AMQP",
            "version": "1",
            "description": __doc__.split("\n\n")[0],
            "x-taskgate-broker-roles": [
                {
                    "name": role.name,
                    "process": role.process,
                    "configure": role.configure,
                    "write": role.write,
                    "read": role.read,
                }
                for role in ROLES
            ],
        },
        "defaultContentType": JSON,
        "servers": {
            "broker": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The deployment's RabbitMQ (AMQP_URL); one user per role.",
                "security": [ref("components/securitySchemes", "roleUser")],
            }
        },
        "channels": found_channels,
        "operations": operations(),
        "components": {
            "messages": component_messages,
            "schemas": schemas,
            "securitySchemes": {
                "roleUser": {
                    "type": "userPassword",
                    "description": "A broker user per role, with the permissions of"
                    " info.x-taskgate-broker-roles.",
                }
            },
        },
    }


@documented(
    "The AsyncAPI document of the AMQP side",
    responses={200: Media(JSON, "The AsyncAPI 3.0 document: exchanges, queues, messages")},
    auth="public",
)
async def asyncapi_json(request: Request) -> Response:
    """``GET /asyncapi.json``, rendered once per process."""
    cached = getattr(request.app.state, "asyncapi", None)
    if cached is None:
        cached = request.app.state.asyncapi = render(document()).encode()
    return Response(cached, media_type=JSON)


def problems() -> list[str]:
    """What is stale in schemas/ or breaks a released message version; empty if all is well."""
    found = [f"stale: schemas/{name}" for name in stale(ALL_MESSAGES)]
    path = SCHEMA_DIR / DOCUMENT
    if not path.is_file() or path.read_text() != render(document()):
        found.append(f"stale: schemas/{DOCUMENT}")
    for name, changes in incompatible(ALL_MESSAGES).items():
        found += [f"{name}: {change} (bump its version)" for change in changes]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if anything is stale")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        print("\n".join(found) or "schemas/ is current", file=sys.stderr if found else sys.stdout)
        return 1 if found else 0
    for name in write(ALL_MESSAGES):
        print(f"wrote schemas/{name}")
    (SCHEMA_DIR / DOCUMENT).write_text(render(document()))
    print(f"wrote schemas/{DOCUMENT}")
    for name, changes in incompatible(ALL_MESSAGES).items():
        print(f"{name} breaks its released schema: {'; '.join(changes)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from gateway.asyncapi import main as run

    sys.exit(run())
