"""Log lines: JSON with the context of the work they belong to."""

from __future__ import annotations

import json
import logging

from infra.logs import ContextFilter, JsonFormatter, log_context


def test_json_log_lines_carry_the_context_of_their_work():
    record = logging.LogRecord("workers", logging.INFO, __file__, 1, "step %s", ("2",), None)
    with log_context(task_id="t-1", kind="images.thumbnail"):
        ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))

    assert line["message"] == "step 2"
    assert line["task_id"] == "t-1"
    assert line["kind"] == "images.thumbnail"
    assert line["level"] == "info"
