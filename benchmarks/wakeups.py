"""What one woken read costs: a bare epoll loop against a Trio task, on this machine.

A peer thread sends a 300-byte message over TCP (127.0.0.1) every millisecond, so that the
receiver goes to sleep and is woken for each one, as a bridge is between 20 ms frames. The
receiver's own CPU time per message is printed: once for a plain `select.epoll` loop (what
the benchmark's load generator and floor use), once for a Trio task waiting with
`wait_readable` (what every socket in Highway does). The difference is what Trio costs per
message before any work is done. Both run pinned to one core.

    python benchmarks/wakeups.py [--messages 3000]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import threading
import time
from collections.abc import Callable

import trio

MESSAGE = b"x" * 300
GAP_SECONDS = 0.001


def connected_pair() -> tuple[socket.socket, socket.socket]:
    """A TCP connection on 127.0.0.1: (sending end, non-blocking receiving end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    receiver.setblocking(False)
    return sender, receiver


def per_message_us(receive_all: Callable[[socket.socket, int], None], messages: int) -> float:
    """The receiver's CPU time per message (µs), with a thread sending one every GAP."""
    sender, receiver = connected_pair()

    def send() -> None:
        for _ in range(messages):
            sender.sendall(MESSAGE)
            time.sleep(GAP_SECONDS)

    with sender, receiver:
        thread = threading.Thread(target=send)
        thread.start()
        started = time.thread_time()
        receive_all(receiver, messages * len(MESSAGE))
        spent = time.thread_time() - started
        thread.join()
    return 1e6 * spent / messages


def with_epoll(receiver: socket.socket, size: int) -> None:
    poller = select.epoll()
    poller.register(receiver.fileno(), select.EPOLLIN)
    received = 0
    while received < size:
        poller.poll(1.0)
        received += len(receiver.recv(65536))


def with_trio(receiver: socket.socket, size: int) -> None:
    async def receive() -> None:
        received = 0
        while received < size:
            await trio.lowlevel.wait_readable(receiver)
            received += len(receiver.recv(65536))

    trio.run(receive)


def timer_wake_us(wakes: int) -> float:
    """CPU time (µs) to sleep 1 ms in epoll and wake with nothing to read: a bare wake-up."""
    poller = select.epoll()
    started = time.thread_time()
    for _ in range(wakes):
        poller.poll(GAP_SECONDS)
    return 1e6 * (time.thread_time() - started) / wakes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    print(f"a bare wake-up: {timer_wake_us(args.messages):.1f} µs of CPU")
    for name, receive_all in (("epoll loop", with_epoll), ("Trio task", with_trio)):
        print(f"{name}: {per_message_us(receive_all, args.messages):.1f} µs of CPU per message")


if __name__ == "__main__":
    main()
