"""How results reach stdout."""

from __future__ import annotations

import json
from typing import Any


def print_json(value: Any) -> None:
    """Pretty JSON; non-ASCII text stays readable."""
    print(json.dumps(value, indent=2, ensure_ascii=False), flush=True)
