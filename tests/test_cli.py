"""The real `highway` CLI, run as a subprocess (`python -m highway`)."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from highway.cli import is_loopback
from highway.testing.twilio_media import open_simulated_call
from tests.cli_support import (
    RUNNING_ON,
    STARTUP_TIMEOUT,
    log_records,
    run_highway,
    serving,
    stop,
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
    (failure,) = [
        record for record in log_records(stderr) if record["level"] in ("error", "critical")
    ]
    assert failure["logger"] == "highway.server", stderr
    assert str(failure["event"]).startswith(f"cannot start: {reason}"), stderr
    assert "\n" not in str(failure["event"])
    assert "pw@" not in stderr


async def test_console_log_format_gives_readable_lines(tmp_path: Path):
    result = await run_highway(
        tmp_path,
        "serve",
        "--port",
        "0",
        HIGHWAY_DATABASE_URL="sqlite:///no/such/directory/highway.db",
        HIGHWAY_LOG_FORMAT="console",
    )

    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert not any(line.startswith("{") for line in stderr.splitlines()), stderr
    assert re.search(
        r"\[error +\] cannot start: cannot open SQLite database.* \[highway\.server\]"
        r" worker=\d+",
        stderr,
    ), stderr
    assert "\x1b[" not in stderr  # no colours without a terminal


async def test_bad_log_level_is_refused_in_one_line(tmp_path: Path):
    result = await run_highway(tmp_path, "serve", HIGHWAY_LOG_LEVEL="verbose")

    assert_one_line_refusal(result, "invalid setting HIGHWAY_LOG_LEVEL:")


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
        # Each worker logs its own line, which carries its pid as `worker`.
        with trio.fail_after(STARTUP_TIMEOUT):
            await output.wait_for(re.compile(rb"(?s)Running on.*Running on.*\n"))
        running = [
            (record["worker"], RUNNING_ON.search(str(record["event"]).encode()))
            for record in log_records(output.text.rsplit("\n", 1)[0])
            if str(record["event"]).startswith("Running on")
        ]
        pids = {pid for pid, _ in running}
        assert len(pids) == 2
        assert process.pid not in pids
        assert {int(match["port"]) for _, match in running if match} == {port}

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
