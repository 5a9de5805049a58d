"""A real LiteLLM proxy on a loopback port, with mock deployments (tests and benchmarks).

The proxy runs from its own virtual environment (`litellm[proxy]` pins an older `rich`
than fanfold's), which `.ci/run` creates; its `litellm` command comes in
`FANFOLD_TEST_LITELLM`. Its deployments answer with `mock_response` after `mock_delay`,
so nothing leaves the machine, and `LITELLM_LOCAL_MODEL_COST_MAP` keeps it from
fetching its cost map. The gateway's own retries are off: fanfold is the one retry layer.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

INSTALL = (
    "python3 -m venv .ci/litellm-venv && .ci/litellm-venv/bin/pip install -r "
    ".ci/litellm-proxy.txt, then FANFOLD_TEST_LITELLM=.ci/litellm-venv/bin/litellm "
    "(.ci/run does both)"
)
"""How to install the proxy, for skip messages."""
DELAY = 0.2
"""Seconds each mock reply takes."""
PRICE_IN, PRICE_OUT = 1e-6, 2e-6
"""USD per token the deployments charge (the proxy's own cost figures)."""


def litellm_command(root: Path | None = None) -> str | None:
    """`FANFOLD_TEST_LITELLM`, else `root/.ci/litellm-venv/bin/litellm` if it exists."""
    given = os.environ.get("FANFOLD_TEST_LITELLM")
    if given:
        return given
    local = (root or Path.cwd()) / ".ci" / "litellm-venv" / "bin" / "litellm"
    return str(local) if local.exists() else None


def deployment(name: str, reply: str = "hello", **params: Any) -> dict[str, Any]:
    """A mock deployment `name` answering `reply` after `DELAY`; `params` add limits."""
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{name}",
            "api_key": "sk-mock",
            "mock_response": reply,
            "mock_delay": DELAY,
            **params,
        },
        "model_info": {"input_cost_per_token": PRICE_IN, "output_cost_per_token": PRICE_OUT},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiteLLMProxy:
    """`with LiteLLMProxy(command, [deployment(...)]) as proxy:` serves `proxy.base_url`.

    Raises RuntimeError when the proxy exits or does not answer within `startup_timeout`
    seconds (it imports a lot: about a minute on busy cores).
    """

    def __init__(
        self,
        command: str,
        model_list: list[dict[str, Any]],
        *,
        startup_timeout: float = 240,
    ) -> None:
        self.command = command
        self.model_list = model_list
        self.startup_timeout = startup_timeout
        self.key = "sk-" + secrets.token_hex(24)
        self.base_url = ""
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def _log_tail(self) -> str:
        assert self._folder is not None
        log = Path(self._folder.name) / "proxy.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def __enter__(self) -> LiteLLMProxy:
        config = {
            "model_list": self.model_list,
            "router_settings": {"num_retries": 0, "routing_strategy": "usage-based-routing-v2"},
            "litellm_settings": {"num_retries": 0},
            "general_settings": {"master_key": self.key},
        }
        self._folder = tempfile.TemporaryDirectory(prefix="fanfold-litellm-")
        folder = Path(self._folder.name)
        (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = _free_port()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "*"}
        with (folder / "proxy.log").open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own command line
                [self.command, "--config", "config.yaml", "--host", "127.0.0.1",
                 "--port", str(port)],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            self._wait_until_live(base)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.base_url = f"{base}/v1"
        return self

    def _wait_until_live(self, base: str) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the LiteLLM proxy exited ({self._process.returncode}):\n{self._log_tail()}"
                )
            try:
                if httpx.get(f"{base}/health/liveliness", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the LiteLLM proxy did not answer within {self.startup_timeout:g} s"
                )
            time.sleep(0.5)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
