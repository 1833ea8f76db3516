"""The end-to-end benchmark's load generator: its WebSockets, loop, stamps and matching, and
short real runs against the floor relay and Highway.

Everything runs on 127.0.0.1 with real sockets. The framing tests wait on `select` for a
socket to become readable, the loop tests on `Loop.run_until` with a `done` predicate, the
runs under `trio.fail_after`: nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import hashlib
import random
import select
import socket
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from time import perf_counter
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from rich.progress import Progress

from benchmarks.e2e import LoadPoint, run_point
from benchmarks.lean_ws import Closed, Connection, accept, connect, listen
from benchmarks.load_generator import Harness, _barge_ins, _match, collect
from benchmarks.load_loop import Loop
from benchmarks.relay_floor import Relay
from benchmarks.stamps import STAMPS, read_stamp, stamp_frame

DEADLINE = 10.0  # seconds for anything the tests wait on
TEXT, CLOSE, PING, PONG, BINARY = 0x1, 0x8, 0x9, 0xA, 0x2
KEY = b"\x37\xfa\x21\x3d"  # a non-zero masking key
SIZES = [0, 125, 126, 65535, 65536]  # each side of the 7-, 16- and 64-bit length forms
HANDSHAKE_PATH = "/media-stream/7?token=a%20b"
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --- helpers -------------------------------------------------------------------------------


@dataclass
class Pair:
    """Both ends of one lean WebSocket connection, and the path the client asked for."""

    client: Connection
    server: Connection
    path: str


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A client and a server connection over TCP on 127.0.0.1, handshaken by the module."""
    listener = listen()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            # connect() blocks until the server answers, so it runs in a thread.
            port = listener.getsockname()[1]
            connecting = pool.submit(connect, "127.0.0.1", port, HANDSHAKE_PATH)
            wait_readable(listener)
            accepted = accept(listener)
            client = connecting.result(timeout=DEADLINE)
    finally:
        listener.close()
    assert accepted is not None
    server, path = accepted
    try:
        yield Pair(client, server, path)
    finally:
        client.sock.close()
        server.sock.close()


def wait_readable(sock: socket.socket) -> None:
    readable, _, _ = select.select([sock], [], [], DEADLINE)
    assert readable, "the socket never became readable"


def receive(connection: Connection, count: int) -> list[bytes]:
    """The next `count` text messages on `connection`, read as its socket becomes readable."""
    messages: list[bytes] = []
    while len(messages) < count:
        wait_readable(connection.sock)
        messages += connection.receive()
    return messages


def read_raw(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes off the wire, bypassing the framing."""
    data = b""
    while len(data) < size:
        wait_readable(sock)
        data += sock.recv(size - len(data))
    return data


def send_raw(sock: socket.socket, data: bytes) -> None:
    """Write `data` to a non-blocking socket whole (blocking until the peer has read it)."""
    sock.settimeout(DEADLINE)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


@contextmanager
def in_background(function: Callable[..., object], *args: Any) -> Iterator[None]:
    """Run `function(*args)` in a thread while the block runs (a writer that may block until
    the block reads); re-raise what it raised."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(function, *args)
    try:
        yield
        future.result(timeout=DEADLINE)
    finally:
        # Not waiting: after a failure the writer may be stuck until the sockets close.
        pool.shutdown(wait=False)


def masked_frame(payload: bytes, key: bytes = KEY, first: int = 0x80 | TEXT) -> bytes:
    """A client frame built by hand, masked with `key` (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def read_request(peer: socket.socket) -> bytes:
    """An HTTP request's head, read by a hand-made server."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = peer.recv(65536)
        assert chunk, "the client went before its request was complete"
        head += chunk
    return head


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())


def text_of(size: int, seed: int) -> bytes:
    """`size` bytes of printable text, different for each seed."""
    rng = random.Random(seed)
    return bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz0123456789 {}:,", k=size))


# --- framing -------------------------------------------------------------------------------


def test_the_handshake_gives_the_server_the_path_the_client_asked_for(pair: Pair) -> None:
    assert pair.path == HANDSHAKE_PATH
    assert pair.client.client and not pair.server.client
    assert not pair.client.closed and not pair.server.closed


@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_text_messages_of_every_length_form_arrive_intact_and_in_order(
    pair: Pair, direction: str
) -> None:
    sender, receiver = (pair.client, pair.server)
    if direction == "server_to_client":
        sender, receiver = receiver, sender
    messages = [text_of(size, seed) for seed, size in enumerate(SIZES)]

    def send_all() -> None:
        for message in messages:
            sender.send(message)

    # The two largest may fill the kernel's buffers: send from a thread while this reads.
    with in_background(send_all):
        assert receive(receiver, len(messages)) == messages
    assert not sender.closed


def test_client_frames_carry_a_zero_key_and_server_frames_none(pair: Pair) -> None:
    pair.client.send(b"hello")
    assert read_raw(pair.server.sock, 2 + 4 + 5) == b"\x81\x85\0\0\0\0hello"
    pair.server.send(b"hello")
    assert read_raw(pair.client.sock, 2 + 5) == b"\x81\x05hello"


@pytest.mark.parametrize("size", [0, 1, 7, 126, 1001, 65536])
def test_a_frame_masked_with_a_non_zero_key_is_unmasked(pair: Pair, size: int) -> None:
    payload = text_of(size, size)
    with in_background(send_raw, pair.client.sock, masked_frame(payload)):
        assert receive(pair.server, 1) == [payload]


@pytest.mark.parametrize("size", [5, 300])
def test_a_frame_arriving_a_byte_at_a_time_is_reassembled(pair: Pair, size: int) -> None:
    """Every cut: inside the length, inside the key, inside the payload."""
    payload = text_of(size, size)
    frame = masked_frame(payload)
    for position, byte in enumerate(frame):
        pair.client.sock.sendall(bytes([byte]))
        wait_readable(pair.server.sock)
        arrived = pair.server.receive()
        assert arrived == ([payload] if position == len(frame) - 1 else [])


def test_a_ping_is_answered_with_a_pong_carrying_its_payload(pair: Pair) -> None:
    # The server answers a client's ping unmasked, and still returns what came after it.
    pair.client.sock.sendall(masked_frame(b"are you there?", first=0x80 | PING))
    pair.client.sock.sendall(masked_frame(b"after the ping"))
    assert receive(pair.server, 1) == [b"after the ping"]
    assert read_raw(pair.client.sock, 2 + 14) == b"\x8a\x0eare you there?"
    # The client answers a server's ping masked, with its zero key.
    pair.server.send(b"ping!", PING)
    wait_readable(pair.client.sock)
    assert pair.client.receive() == []
    assert read_raw(pair.server.sock, 2 + 4 + 5) == b"\x8a\x85\0\0\0\0ping!"


def test_a_pong_is_ignored(pair: Pair) -> None:
    pair.server.send(b"unasked", PONG)
    pair.server.send(b"next")
    assert receive(pair.client, 1) == [b"next"]


def test_a_close_frame_raises_closed(pair: Pair) -> None:
    pair.client.close()
    assert pair.client.closed
    with pytest.raises(Closed, match=r"^closed by the peer$"):
        receive(pair.server, 1)


def test_end_of_stream_raises_closed_and_marks_the_connection_closed(pair: Pair) -> None:
    pair.server.sock.close()
    with pytest.raises(Closed, match=r"^connection closed by the peer$"):
        receive(pair.client, 1)
    assert pair.client.closed


@pytest.mark.parametrize(
    "first",
    [0x80 | BINARY, TEXT, 0x80],  # binary; a text message's first fragment; a continuation
    ids=["binary", "first-fragment", "continuation"],
)
def test_a_binary_or_fragmented_frame_raises_closed_saying_so(pair: Pair, first: int) -> None:
    pair.client.sock.sendall(masked_frame(b"\x00\x01 not for us", first=first))
    wait_readable(pair.server.sock)
    with pytest.raises(Closed, match=rf"^unsupported frame \(first byte {first:#04x}\)$"):
        pair.server.receive()


def test_send_after_the_peer_has_gone_marks_closed_and_does_not_raise(pair: Pair) -> None:
    # The peer goes with a reset (linger 0), so its going is known as soon as it is readable.
    pair.server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair.server.sock.close()
    wait_readable(pair.client.sock)
    pair.client.send(b"anyone there?")
    assert pair.client.closed
    pair.client.send(b"still nobody?")  # dropped, silently
    pair.client.close()  # and closing a closed connection is fine too
    assert pair.client.sock.fileno() == -1


def test_connect_refuses_an_answer_that_is_not_an_upgrade() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(DEADLINE)

        def answer_404() -> None:
            peer, _ = server.accept()
            with peer:
                peer.settimeout(DEADLINE)
                read_request(peer)
                peer.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

        with (
            in_background(answer_404),
            pytest.raises(Closed, match=r"^handshake refused: HTTP/1\.1 404 Not Found$"),
        ):
            connect("127.0.0.1", server.getsockname()[1], "/nowhere")


def test_accept_returns_none_without_a_websocket_handshake() -> None:
    listener = listen()
    try:
        assert accept(listener) is None  # nobody waiting
        with socket.create_connection(listener.getsockname(), timeout=DEADLINE) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_readable(listener)
            assert accept(listener) is None
            assert plain.recv(1024) == b""  # refused by closing, with no answer
    finally:
        listener.close()


# --- the loop ------------------------------------------------------------------------------


def test_timers_run_in_time_order_and_ties_in_the_order_added() -> None:
    loop, ran = Loop(), list[str]()
    now = perf_counter()
    for name, delay in [("c", 0.03), ("a", 0.01), ("b1", 0.02), ("b2", 0.02), ("b3", 0.02)]:
        loop.at(now + delay, partial(ran.append, name))
    for name in ("past1", "past2"):  # already due: they run first, in the order added
        loop.at(now - 1.0, partial(ran.append, name))
    assert loop.run_until(now + DEADLINE, lambda: len(ran) == 7)
    assert ran == ["past1", "past2", "a", "b1", "b2", "b3", "c"]
    assert loop.late_max >= 1.0  # the past timers ran a second late


def test_a_reader_fires_when_data_arrives_and_not_after_forget() -> None:
    loop, arrived = Loop(), list[bytes]()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        loop.read(ours, lambda: arrived.append(ours.recv(1024)))
        # Data arrives only once the loop runs, from a timer.
        loop.at(perf_counter() + 0.01, lambda: theirs.sendall(b"first"))
        assert loop.run_until(perf_counter() + DEADLINE, lambda: bool(arrived))
        assert arrived == [b"first"]

        loop.forget(ours)
        theirs.sendall(b"second")
        assert not loop.run_until(perf_counter() + 0.05, lambda: len(arrived) > 1)
        assert arrived == [b"first"]
        assert ours.recv(1024) == b"second"  # still there: nobody read it
        loop.forget(ours)  # forgetting twice is harmless


def test_run_until_is_true_when_done_and_false_at_the_deadline() -> None:
    loop = Loop()
    assert loop.run_until(perf_counter() + DEADLINE, lambda: True)
    deadline = perf_counter() + 0.02
    assert not loop.run_until(deadline)
    assert perf_counter() >= deadline


# --- stamps --------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [0, 1, 4095, 51234, 65535, 65536 + 7])
def test_a_frame_stamp_reads_back_and_stays_near_silent(number: int) -> None:
    stamped = stamp_frame(bytes([0xFF]) * 160, number)
    assert read_stamp(stamped) == number % 65536
    assert len(stamped) == 160 and all(code >= 0xF0 for code in stamped[:4])


# --- matching ------------------------------------------------------------------------------


def test_match_unwraps_stamps_across_the_wrap() -> None:
    count = 70_000
    arrived = [float(n) for n in range(count)]
    matched, reordered = _match(count, arrived, [n % STAMPS for n in range(count)])
    assert matched == dict(enumerate(arrived))
    assert reordered == 0


def test_match_counts_a_swapped_pair_as_reordered() -> None:
    # Frames 65535 and 65536 (stamps 65535 and 0) swapped, right at the wrap.
    order = list(range(70_000))
    order[65535], order[65536] = order[65536], order[65535]
    arrived = [1000.0 + position for position in range(len(order))]
    matched, reordered = _match(len(order), arrived, [n % STAMPS for n in order])
    assert reordered == 1
    assert matched == {number: arrived[position] for position, number in enumerate(order)}


def test_match_leaves_a_missing_number_unmatched() -> None:
    matched, reordered = _match(5, [0.1, 0.2, 0.4, 0.5], [0, 1, 3, 4])
    assert matched == {0: 0.1, 1: 0.2, 3: 0.4, 4: 0.5}
    assert reordered == 0


def test_match_takes_a_first_stamp_above_half_the_range_as_it_is() -> None:
    # Frames 0-39999 were lost (say, a slow start): the first to arrive is 40000.
    matched, reordered = _match(40002, [0.1, 0.2], [40000, 40001])
    assert (matched, reordered) == ({40000: 0.1, 40001: 0.2}, 0)


def test_match_without_stamps_is_in_order_and_never_beyond_what_was_sent() -> None:
    assert _match(3, [0.1, 0.2, 0.3, 0.4], None) == ({0: 0.1, 1: 0.2, 2: 0.3}, 0)
    assert _match(5, [0.1, 0.2], None) == ({0: 0.1, 1: 0.2}, 0)
    assert _match(0, [0.1], None) == ({}, 0)


def test_barge_ins_pair_each_clear_with_the_last_speech_started_in_the_window() -> None:
    started = [1.0, 2.0, 5.0]
    clears = [0.5, 1.1, 2.3, 2.4, 5.0, 6.0]
    # 0.5 precedes any speech_started; 1.1 pairs with 1.0, outside the window [1.5, 5.5).
    samples = _barge_ins(started, clears, 1.5, 5.5)
    assert samples == pytest.approx([300.0, 400.0, 0.0, 1000.0])
    assert _barge_ins([], [1.0], 0.0, 10.0) == []


def test_collect_counts_only_frames_sent_in_the_window() -> None:
    """µ-law: one caller frame and one model delta are lost, one frame falls outside."""
    caller = SimpleNamespace(
        sent=[0.0, 1.0, 2.0, 3.0],  # frame n at n s; the window is [1, 3)
        media=[1.6, 2.6],
        media_stamps=[1, 2],  # delta 0 never reached the caller
        clears=[2.7],
        started_at=-0.5,
    )
    session = SimpleNamespace(
        appends=[0.1, 1.2, 3.4],
        append_stamps=[0, 1, 3],  # frame 2 never reached the model
        deltas=[0.5, 1.5, 2.5],
        speech_started=[2.4],
    )
    harness = Harness("pcmu", Loop(), cast(Any, SimpleNamespace(sessions=[session])), [caller])
    legs, frames = collect(harness, 1.0, 3.0)
    assert frames == {"sent": 4, "received": 3, "lost": 1, "reordered": 0}
    assert legs["caller_to_model"] == pytest.approx([200.0])
    assert legs["model_to_caller"] == pytest.approx([100.0, 100.0])
    assert legs["barge_in"] == pytest.approx([300.0])
    assert legs["first_audio"] == pytest.approx([2100.0])


# --- real runs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "mode"), [("floor", "pcmu"), ("highway", "pcmu"), ("highway", "pcm24k")]
)
async def test_a_short_run_measures_every_frame_and_finalises_every_call(
    target: str, mode: str, tmp_path: Path
) -> None:
    point = LoadPoint(target, mode, calls=2, seconds=1.0, warmup=0.5)
    with trio.fail_after(60):
        run = await run_point(point, tmp_path, Progress(disable=True))

    assert (run["target"], run["mode"], run["calls"]) == (target, mode, 2)
    frames = run["frames"]
    assert frames["sent"] > 0
    assert frames["received"] == frames["sent"]
    assert frames["lost"] == 0 and frames["reordered"] == 0
    legs = run["legs"]
    assert legs["caller_to_model"]["count"] > 0
    assert legs["model_to_caller"]["count"] > 0
    assert legs["first_audio"]["count"] == 2
    assert run["calls_started"] == run["calls_finalised"] == 2
    if target == "highway":
        cpu_percent = run["server"]["cpu_percent"]
        assert isinstance(cpu_percent, float) and cpu_percent > 0


# --- regressions: bugs found in review ---------------------------------------------------


def test_messages_read_together_with_a_close_frame_are_not_lost(pair: Pair) -> None:
    # A caller's `stop` and its close leave together, as in SimulatedCaller.hang_up.
    pair.client.sock.sendall(masked_frame(b"stop") + masked_frame(b"\x03\xe8", first=0x80 | CLOSE))
    pair.client.sock.close()
    arrived: list[bytes] = []
    with pytest.raises(Closed):
        while True:
            wait_readable(pair.server.sock)
            arrived += pair.server.receive()
    assert arrived == [b"stop"]


def test_a_message_sent_with_the_handshake_answer_is_received() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(DEADLINE)

        def answer_with_a_message() -> None:
            """A server whose first message leaves in the same write as its 101 answer."""
            peer, _ = server.accept()
            with peer:
                peer.settimeout(DEADLINE)
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in read_request(peer).split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                peer.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + accept_key(key)
                    + b"\r\n\r\n\x81\x0fsession.created"
                )
                peer.recv(1)  # hold the connection open until the client goes

        with in_background(answer_with_a_message):
            connection = connect("127.0.0.1", server.getsockname()[1], "/v1/realtime")
            try:
                assert connection.receive() == [b"session.created"]
            finally:
                connection.sock.close()


def test_the_floor_relay_lets_go_of_a_caller_gone_without_a_close_frame(pair: Pair) -> None:
    loop = Loop()
    model_listener = listen()
    try:

        def model_accepts() -> tuple[Connection, str] | None:
            wait_readable(model_listener)
            return accept(model_listener)

        with ThreadPoolExecutor(max_workers=1) as pool:
            accepting = pool.submit(model_accepts)
            model_port = model_listener.getsockname()[1]
            relay = Relay(loop, ("127.0.0.1", model_port, "/v1/realtime"), pair.server)
            model = accepting.result(timeout=DEADLINE)
        assert model is not None
        try:
            pair.client.sock.close()  # the caller's end of stream, with no close frame
            let_go = loop.run_until(perf_counter() + 0.5, lambda: relay.twilio.sock.fileno() == -1)
            assert let_go, "the relay kept the caller's socket (and polled it in a busy loop)"
        finally:
            model[0].sock.close()
            relay.upstream.sock.close()
    finally:
        model_listener.close()
