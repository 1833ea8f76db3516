"""The real `highway` CLI, run as a subprocess (`python -m highway`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

import highway
from highway.cli import is_loopback
from highway.config import ENV_NAMES
from highway.testing.twilio_media import open_simulated_call

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


def assert_one_line_refusal(result: subprocess.CompletedProcess, *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("highway: ")
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    for fragment in fragments:
        assert fragment in stderr
    return stderr


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


async def get_health(port: int) -> dict[str, object]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/health")
    assert response.status_code == 200
    return response.json()


# --- refusals ----------------------------------------------------------------------------


async def test_bad_setting_exits_2_with_one_line(tmp_path: Path):
    result = await run_highway(tmp_path, "serve", HIGHWAY_AUDIO_MODE="opus")

    stderr = assert_one_line_refusal(result)
    expected = "invalid setting HIGHWAY_AUDIO_MODE: Input should be 'pcmu' or 'pcm24k'"
    assert stderr == f"highway: {expected}\n"


async def test_bad_setting_in_dotenv_is_reported_too(tmp_path: Path):
    (tmp_path / ".env").write_text("HIGHWAY_PUBLIC_URL=highway.example\n")

    result = await run_highway(tmp_path, "serve")

    assert_one_line_refusal(result, "invalid setting HIGHWAY_PUBLIC_URL:")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "highway.example"])
async def test_public_host_without_api_key_is_refused(tmp_path: Path, host: str):
    result = await run_highway(tmp_path, "serve", "--host", host)

    assert_one_line_refusal(result, f"refusing to listen on {host}", "HIGHWAY_API_KEY")


async def test_several_workers_with_sqlite_are_refused(tmp_path: Path):
    result = await run_highway(tmp_path, "serve", "--workers", "2")

    assert_one_line_refusal(result, "--workers 2", "SQLite", "PostgreSQL")


@pytest.mark.parametrize("args", [["serve", "--port", "70000"], ["serve", "--workers", "0"], []])
async def test_bad_arguments_exit_2(tmp_path: Path, args: list[str]):
    result = await run_highway(tmp_path, *args)

    assert result.returncode == 2
    assert b"usage: highway" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path):
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = await run_highway(tmp_path, "serve", "--port", str(port))

    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.endswith(f"highway: cannot listen on 127.0.0.1:{port}: Address already in use\n")


@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("postgresql://highway:pw@127.0.0.1:9/highway", "PostgreSQL: connection failed"),
        ("sqlite:///no/such/directory/highway.db", "cannot open SQLite database"),
    ],
)
async def test_an_unreachable_database_stops_start_up_in_one_line(
    tmp_path: Path, database: str, reason: str
):
    result = await run_highway(tmp_path, "serve", "--port", "0", HIGHWAY_DATABASE_URL=database)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert re.search(rf"ERROR \[\d+\] highway.server: cannot start: {reason}", stderr), stderr
    assert "pw@" not in stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool):
    assert is_loopback(host) is loopback


# --- serving -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signum", [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
)
async def test_serve_answers_health_and_stops_cleanly(tmp_path: Path, signum: int):
    async with serving(tmp_path) as (process, output, port):
        assert port != 0  # --port 0: the real bound port is reported

        assert await get_health(port) == {"status": "ok", "worker": process.pid}

        returncode = await stop(process, output, signum)

    assert returncode == 0, output.text
    assert "Traceback" not in output.text
    # No OpenAI key in the environment: the log must say so plainly.
    assert "offline mode" in output.text
    assert "built-in stand-in agent" in output.text


async def test_serve_with_an_openai_key_is_not_offline(tmp_path: Path):
    async with serving(tmp_path, OPENAI_API_KEY="sk-test-key") as (process, output, port):
        assert (await get_health(port))["status"] == "ok"
        returncode = await stop(process, output, signal.SIGINT)

    assert returncode == 0, output.text
    assert "offline mode" not in output.text
    assert "sk-test-key" not in output.text


async def test_api_key_lifts_the_loopback_rule(tmp_path: Path):
    # 192.0.2.10 (TEST-NET-1) is not on this machine: past the API-key check, binding fails,
    # which proves the check passed without the test listening beyond loopback.
    result = await run_highway(
        tmp_path, "serve", "--host", "192.0.2.10", "--port", "0", HIGHWAY_API_KEY="hw-test-key"
    )

    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "refusing" not in stderr
    assert stderr.startswith("highway: cannot listen on 192.0.2.10:0: ")  # then the OS's reason
    assert stderr.count("\n") == 1


async def test_serve_several_workers_share_the_port(tmp_path: Path, postgres_url: str):
    # A password in the URL (trust auth ignores it) shows that the log redacts it.
    database = postgres_url.replace("postgres@", "postgres:pw@")
    async with serving(tmp_path, "--workers", "2", HIGHWAY_DATABASE_URL=database) as (
        process,
        output,
        port,
    ):
        # Each worker logs its own line, prefixed with its pid by Highway's log format.
        with trio.fail_after(STARTUP_TIMEOUT):
            await output.wait_for(re.compile(rb"(?s)Running on.*Running on"))
        workers = re.findall(
            rb"\[(\d+)\] [\w.]+: Running on http://127\.0\.0\.1:(\d+)", output.data
        )
        pids = {int(pid) for pid, _ in workers}
        assert len(pids) == 2
        assert process.pid not in pids
        assert {int(worker_port) for _, worker_port in workers} == {port}

        assert (await get_health(port))["worker"] in pids

        returncode = await stop(process, output, signal.SIGINT)

    assert returncode == 0, output.text
    assert "Traceback" not in output.text
    assert "pw@" not in output.text  # the database password is redacted in the log


async def test_simulate_call_rings_an_offline_highway_and_prints_the_transcript(tmp_path: Path):
    async with serving(tmp_path) as (process, output, port):
        result = await run_highway(
            tmp_path,
            "simulate-call",
            "--url",
            f"http://127.0.0.1:{port}",
            "--turns",
            "1",
            "--speech-ms",
            "600",
            "--save-heard",
            str(tmp_path / "heard.wav"),
        )
        await stop(process, output, signal.SIGTERM)

    report = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert re.search(r"greeting: first audio \d+ ms", report)
    assert re.search(r"turn 1: spoke 600 ms; first answer audio \d+ ms", report)
    assert "completed, caller_hung_up" in report
    assert "agent: Hello, this is Highway's offline agent." in report
    assert "caller: (speech)" in report
    assert (tmp_path / "heard.wav").stat().st_size > 44  # more than a WAV header
    assert "Traceback" not in output.text


async def test_sigterm_lets_a_live_call_go_on_then_closes_it_with_1001(tmp_path: Path):
    async with serving(tmp_path, HIGHWAY_SHUTDOWN_GRACE_SECONDS="3") as (process, output, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.post(
                "/twilio/incoming",
                data={"CallSid": "CA" + "9" * 32, "From": "+15005550199", "To": "+15005550006"},
            )
        path = re.search(r'url="[a-z]+://[^/]+(/media-stream/[^"]+)"', answer.text)
        assert path is not None, answer.text
        async with open_simulated_call(
            f"ws://127.0.0.1:{port}{path[1]}", call_sid="CA" + "9" * 32
        ) as caller:
            with trio.fail_after(10):
                await caller.wait_received(100)  # the offline agent's greeting
                process.send_signal(signal.SIGTERM)
                await output.wait_for(re.compile(rb"SIGTERM received"))
                # No new stream is accepted (refused, or left unanswered while Hypercorn
                # stops), while the live one goes on.
                with pytest.raises((OSError, trio_websocket.HandshakeError, trio.TooSlowError)):
                    with trio.fail_after(1):
                        async with open_simulated_call(
                            f"ws://127.0.0.1:{port}{path[1]}", call_sid="CA" + "8" * 32
                        ):
                            pass
                assert not caller.closed.is_set()
                await caller.wait_closed()
        returncode = await stop(process, output, signal.SIGTERM)
    assert caller.close_code == 1001
    assert returncode == 0, output.text
    assert "call 1 ended: server_shutdown" in output.text
