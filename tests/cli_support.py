"""Running the real `highway` command as a subprocess, for the CLI and multi-worker tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import highway
from highway.config import ENV_NAMES

# Generous: a cold interpreter start, plus spawning workers on a busy CI machine.
STARTUP_TIMEOUT = 30
# Hypercorn's line, e.g. "Running on http://127.0.0.1:41675 (CTRL + C to quit)".
RUNNING_ON = re.compile(rb"Running on http://(?P<host>\S+):(?P<port>\d+) ")


def highway_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This environment without Highway's variables, plus `settings` and a tmp SQLite file."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    # The subprocess must import the same `highway` as this test run.
    source_root = str(Path(highway.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    env["HIGHWAY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'highway.db'}"
    env.update(settings)
    return env


async def run_highway(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    """Run `highway *args` to completion in tmp_path (where no .env exists)."""
    with trio.fail_after(STARTUP_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "highway", *args],
            cwd=tmp_path,
            env=highway_env(tmp_path, **settings),
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def log_records(text: str) -> list[dict[str, object]]:
    """Every line of `text` as a JSON log record.

    Without a terminal on stderr (as here), HIGHWAY_LOG_FORMAT=auto means JSON lines.
    """
    return [json.loads(line) for line in text.splitlines()]


class Output:
    """The merged stdout and stderr of a running process, read as it arrives."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self.data = b""

    async def wait_for(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        while (match := pattern.search(self.data)) is None:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise AssertionError(f"output ended before {pattern.pattern!r}:\n{self.text}")
            self.data += chunk
        return match

    async def read_to_end(self) -> None:
        while chunk := await self._stream.receive_some():
            self.data += chunk

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


@asynccontextmanager
async def serving(
    tmp_path: Path, *args: str, **settings: str
) -> AsyncIterator[tuple[trio.Process, Output, int]]:
    """Start `highway serve --port 0 *args`; yield (process, output, port) once it listens."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "highway", "serve", "--port", "0", *args],
        cwd=tmp_path,
        env=highway_env(tmp_path, **settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = Output(process.stdout)
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            port = int((await output.wait_for(RUNNING_ON))["port"])
        yield process, output, port
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            await process.stdout.aclose()


async def stop(process: trio.Process, output: Output, signum: int) -> int:
    """Send `signum`, then read the output to its end and wait for the exit code."""
    process.send_signal(signum)
    with trio.fail_after(STARTUP_TIMEOUT):
        await output.read_to_end()
        return await process.wait()
