"""An order's email address with a control character is refused (issue 16, item 14).

The address reaches the logs and the mail provider: NUL, ESC, DEL or a C1 control
in it could cut or colour a log line, or cut the address the provider sees.
"""

from __future__ import annotations

import pytest

from .conftest import wait_ready

LINES = [{"sku": "MUG-01", "quantity": 1}]


@pytest.mark.parametrize(
    "email",
    [
        "ada\x00@example.com",
        "ada\x1b[31m@example.com",
        "ada@exam\x7fple.com",
        "ada@example.com\x9b",
    ],
)
async def test_an_email_with_a_control_character_is_422(gateway_app, gateway_settings, email):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        answer = await client.post("/orders", json={"email": email, "lines": LINES})

    assert answer.status_code == 422
    assert answer.json()["error"]["path"] == "$.email"
