"""The run record: one account of a run that `--json`, the report and the CLI render.

`build_record(state, events=..., runtime=...)` computes it once; `RecordBuilder` is the
same record as it grows, one event at a time (the live view reads it during a run, and
the CLI's summary is its final state); `record_json` writes it
(the same text `fanfold run --json` prints and the report embeds); `load_record` reads
it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fanfold.record.build import build_record
from fanfold.record.growing import LiveSubtask, RecordBuilder
from fanfold.record.model import (
    AggregateRecord,
    BatchRecord,
    CallRecord,
    RecordTotals,
    RunRecord,
    Segment,
    SubtaskRecord,
)

__all__ = [
    "AggregateRecord",
    "BatchRecord",
    "CallRecord",
    "LiveSubtask",
    "RecordBuilder",
    "RecordTotals",
    "RunRecord",
    "Segment",
    "SubtaskRecord",
    "build_record",
    "load_record",
    "record_json",
]


def record_json(record: RunRecord) -> str:
    """The record as JSON text; `<` is escaped so the text can sit in an HTML script."""
    data = record.model_dump(mode="json")
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c")


def load_record(source: str | Path | dict[str, Any]) -> RunRecord:
    """A record from its JSON text, a file holding it, a report that embeds it, or its data.

    Raises:
        ValueError: the text is not a run record (pydantic's ValidationError).
        OSError: the file cannot be read.
    """
    if isinstance(source, dict):
        return RunRecord.model_validate(source)
    text = str(source)
    if isinstance(source, Path) or not text.lstrip().startswith(("{", "<")):
        text = Path(source).read_text(encoding="utf-8")
    marker = 'id="fanfold-run">'
    if text.lstrip().startswith("<") and marker in text:  # a report: its embedded record
        text = text.split(marker, 1)[1].split("</script>", 1)[0]
    return RunRecord.model_validate_json(text)
