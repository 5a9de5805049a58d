"""Test helpers: a loopback OpenAI-compatible server with hidden limits and fault injection."""

from fanfold.testing._replies import REPLY_PREFIX
from fanfold.testing.batch_api import BatchAPI, BatchServerConfig
from fanfold.testing.server import MODEL_ID, RequestRecord, SimServer, SimServerConfig

__all__ = [
    "MODEL_ID",
    "REPLY_PREFIX",
    "BatchAPI",
    "BatchServerConfig",
    "RequestRecord",
    "SimServer",
    "SimServerConfig",
]
