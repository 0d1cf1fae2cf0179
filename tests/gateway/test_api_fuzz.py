"""Schemathesis against a real gateway process: no 5xx, no response the document leaves out.

Every operation of /openapi.json is fuzzed with valid and invalid requests
(``MAX_EXAMPLES`` each way, no shrinking: the run stays bounded) by a signed-in user, the
admin operations by an admin. Path parameters are sometimes those of real things the test
made first (a task, an order, a dead queue), so handlers get past their 404s, and an
upload's file is sometimes a real image, so its options are checked. Each
response must not be a 5xx and must match the document: its status, its content type and
its body's schema; an invalid request must be refused, and so must each request resent
without its credentials. Public operations are called without credentials. Each path is
also asked OPTIONS, which none serves: the 405's ``Allow`` must name its documented methods.

The SSE streams never end while they work: schemathesis reads a ``text/event-stream``
answer until ``MAX_STREAM_EVENTS`` events or the request's timeout, whichever comes first
(``STREAM_TIMEOUT_S``; the task stream's 204 and every error end at once), then checks it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from typing import Any

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from workers.topology import dead_queue

from .conftest import GatewayProcess, bearer, jpeg_bytes, metrics_auth, upload

# Per operation and way (valid, invalid); FUZZ_EXAMPLES=100 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
MAX_STREAM_EVENTS = 1
STREAM_TIMEOUT_S = 0.5
CHECKS = [
    not_a_server_error,
    ignored_auth,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SSE = "text/event-stream"
IMAGE = jpeg_bytes(64, 48)
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


def _media_types(operation: dict[str, Any]) -> set[str]:
    return {
        media
        for response in operation["responses"].values()
        for media in response.get("content", {})
    }


Headers = Callable[[str, str, list[dict[str, Any]]], dict[str, str]]


def _fuzz(url: str, doc: dict[str, Any], headers: Headers, known: dict[str, str]) -> list[str]:
    """Run schemathesis over every operation; the failures, one line each."""
    # An explicit configuration: none discovered from a schemathesis.toml of the machine.
    config = SchemathesisConfig.from_dict(
        {
            "max-stream-events": MAX_STREAM_EVENTS,
            # Too many form fields is 413 (the form is too large), a refusal as good as a 400.
            "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
        }
    )
    schema = schemathesis.openapi.from_dict(doc, config=config)
    failures: list[str] = []
    methods_checked: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in methods_checked:
            methods_checked.add(operation.path)
            failures += _check_allow(operation, url, known)
        declared = doc["paths"][operation.path][operation.method.lower()]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                import time

                t0 = time.monotonic()
                _examples(operation, declared, mode, url, headers, known)()
                print("TIME", operation.label, mode, round(time.monotonic() - t0, 2))
            except hypothesis.errors.Unsatisfiable:
                # Nothing of the operation can be invalid (no parameters, no body).
                assert mode == GenerationMode.NEGATIVE, operation.label
            except (Exception, FailureGroup) as exc:  # a failed check: note it, go on
                failures.append(f"{operation.label} ({mode}): {exc}")
    return failures


def _check_allow(operation: Any, url: str, known: dict[str, str]) -> list[str]:
    """OPTIONS (no route serves it): the 405's ``Allow`` must list the documented methods."""
    names = re.findall(r"{(\w+)}", operation.path)
    case = operation.Case(
        method="OPTIONS", path_parameters={name: known.get(name, "x") for name in names}
    )
    try:
        case.validate_response(
            case.call(base_url=url, timeout=20), checks=[allow_header_conformance]
        )
    except (Exception, FailureGroup) as exc:
        return [f"OPTIONS {operation.path}: {exc}"]
    return []


def _examples(
    operation: Any,
    declared: dict[str, Any],
    mode: GenerationMode,
    url: str,
    headers: Headers,
    known: dict[str, str],
) -> Callable[[], None]:
    streams = SSE in _media_types(declared)
    # A form's fields are text: "an integer where a string goes" is the same bytes, and an
    # extra field is ignored as browsers expect, so a form has no invalid data to refuse.
    form = "multipart/form-data" in declared.get("requestBody", {}).get("content", {})
    checks = [check for check in CHECKS if not (form and check is negative_data_rejection)]
    auth = headers(operation.method.upper(), operation.path, declared["security"])

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        deadline=None,
        database=None,
        derandomize=True,  # the same examples every run: a failure here is reproducible
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(mode), real=st.booleans())
    def run(case: Any, real: bool) -> None:
        if real:
            for name in case.path_parameters or {}:
                if name in known:
                    case.path_parameters[name] = known[name]
            if isinstance(case.body, dict) and "file" in case.body:
                case.body["file"] = IMAGE  # a real image: the options are what gets fuzzed
        timeout = STREAM_TIMEOUT_S if streams else 20
        response = case.call(base_url=url, headers=dict(auth), timeout=timeout)
        case.validate_response(response, checks=checks)

    return run  # type: ignore[no-any-return]


async def test_schemathesis_finds_no_5xx_and_no_undocumented_response(
    gateway_process: Callable[..., GatewayProcess],
    rpc_process: Any,
) -> None:
    gateway = gateway_process()
    await gateway.wait_ready()
    settings = gateway.settings
    async with gateway.client() as client:
        doc = (await client.get("/openapi.json")).json()
        task = (await upload(client, jpeg_bytes(64, 48))).json()["task_id"]
        order = await client.post(
            "/orders",
            json={"email": "ada@example.com", "lines": [{"sku": "MUG-01", "quantity": 1}]},
        )
    assert order.status_code == 201, order.text
    known = {
        "task_id": task,
        "order_id": order.json()["order_id"],
        "queue": dead_queue(settings.upload_kind),
        "name": "source.jpg",
    }
    user, admin = bearer(settings), bearer(settings, "root", admin=True)

    def headers(method: str, path: str, security: list[dict[str, Any]]) -> dict[str, str]:
        if (method, path) == ("DELETE", "/session"):
            return bearer(settings, "leaving")  # revoked by the call: not the others' token
        if {"metricsToken": []} in security:
            return metrics_auth(settings)
        if not security:  # public: the caller's credentials would change what is tested
            return {}
        return admin if path.startswith("/admin") else user

    failures = await asyncio.to_thread(_fuzz, gateway.url, doc, headers, known)
    assert failures == [], "\n\n".join(failures)
