"""The least WebSocket a load generator needs: text frames over plain non-blocking sockets.

The benchmark's own side (simulated callers, the model stand-in, the floor relay) must cost
far less than the bridge it measures, for hundreds of calls on one core. So it runs on a
plain epoll loop (`load_loop`), not Trio: on this kind of machine a Trio task woken by a
socket costs about 60 µs of CPU against about 20 µs for a bare epoll loop. A send is one
`send()` syscall, made at once; a read is one `recv()`, parsed where it lands. Client
frames carry an all-zero masking key, which RFC 6455 allows a peer to receive (it cannot
tell), so that sending costs no XOR. No extensions, no fragmentation: a fragmented or
binary message is refused as a protocol error, since no peer here sends one. Handshakes
block (with a timeout): they happen while calls are set up, before anything is measured.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket

__all__ = ["Closed", "Connection", "accept", "connect", "listen"]

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ZERO_MASK = b"\0\0\0\0"
_MAX_HEAD = 16384
HANDSHAKE_TIMEOUT_SECONDS = 10.0


class Closed(Exception):
    """The peer closed the connection, or broke the protocol (the message says how)."""


class Connection:
    """One WebSocket connection. `send` never waits; `receive` waits for the next read."""

    def __init__(self, sock: socket.socket, *, client: bool, buffered: bytes = b"") -> None:
        self.sock = sock
        self.client = client
        self.stalls = 0  # sends that found the kernel's buffer full (the peer not reading)
        self.closed = False
        self._peer_closed = False
        self._buffer = bytearray(buffered)

    def send(self, text: bytes, opcode: int = TEXT) -> None:
        """Send one message now. It never raises: after a failure the connection is marked
        closed, later sends are dropped, and the reading side sees the close. A full send
        buffer means an overloaded peer: then block, so nothing is lost, and count it."""
        if self.closed:
            return
        frame = _frame(text, opcode, self.client)
        try:
            try:
                sent = self.sock.send(frame)
            except BlockingIOError:
                sent = 0
            if sent < len(frame):
                self.stalls += 1
                self.sock.setblocking(True)
                try:
                    self.sock.sendall(frame[sent:])
                finally:
                    self.sock.setblocking(False)
        except OSError:
            self.closed = True

    def receive(self) -> list[bytes]:
        """The text messages that have arrived (call when the socket is readable, and once
        after the handshake: its read may have brought messages too). Pings are answered
        here. Raises Closed once the peer has closed, after the messages before its close."""
        if self._peer_closed:
            self.closed = True
            raise Closed("closed by the peer")
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return self._messages()
        except OSError as error:
            self.closed = True
            raise Closed(str(error)) from None
        if not data:
            self.closed = True
            raise Closed("connection closed by the peer")
        self._buffer += data
        return self._messages()

    def close(self) -> None:
        """Send a normal close and shut the socket (the peer's close is not awaited)."""
        self.send((1000).to_bytes(2, "big"), CLOSE)
        self.closed = True
        self.sock.close()

    def _messages(self) -> list[bytes]:
        buffer, position, messages = self._buffer, 0, []
        while len(buffer) - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                head = 4
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
            elif length == 127:
                head = 10
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
            key = b""
            if second & 0x80:
                key = bytes(buffer[position + head : position + head + 4])
                head += 4
            end = position + head + length
            if len(buffer) < end:
                break
            payload = _unmask(bytes(buffer[position + head : end]), key)
            position = end
            opcode = first & 0x0F
            if first & 0x80 == 0 or opcode not in (TEXT, CLOSE, PING, PONG):
                raise Closed(f"unsupported frame (first byte {first:#04x})")
            if opcode == TEXT:
                messages.append(payload)
            elif opcode == PING:
                self.send(payload, PONG)
            elif opcode == CLOSE:
                self.send(payload[:2], CLOSE)  # the closing handshake's answer
                self._peer_closed = True  # raised by the next receive, after these messages
                break
        del buffer[:position]
        return messages


def _frame(payload: bytes, opcode: int, masked: bool) -> bytes:
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((0x80 | opcode, mask_bit | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, mask_bit | 127)) + size.to_bytes(8, "big")
    return head + _ZERO_MASK + payload if masked else head + payload


def _unmask(payload: bytes, key: bytes) -> bytes:
    if not key or key == _ZERO_MASK:
        return payload
    size = len(payload)
    stream = int.from_bytes((key * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(payload, "little") ^ stream).to_bytes(size, "little")


def _accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """An HTTP head (up to the blank line) and whatever arrived after it."""
    data = b""
    sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk or len(data) > _MAX_HEAD:
                raise Closed("connection closed during the handshake")
            data += chunk
    except OSError as error:
        raise Closed(f"handshake failed: {error}") from None
    finally:
        sock.setblocking(False)
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def connect(host: str, port: int, target: str) -> Connection:
    """Open a client connection to ws://host:port/target."""
    sock = socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (target.encode(), host.encode(), port, key)
        )
        head, rest = _read_head(sock)
        if not head.startswith(b"HTTP/1.1 101") or _accept_key(key) not in head:
            raise Closed(f"handshake refused: {head.splitlines()[0].decode(errors='replace')}")
    except BaseException:
        sock.close()
        raise
    return Connection(sock, client=True, buffered=rest)


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket (port 0: any free port)."""
    sock = _socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def accept(listener: socket.socket) -> tuple[Connection, str] | None:
    """A connection waiting on `listener`, handshaken, and the path it asked for; None if
    none was waiting or its handshake failed."""
    try:
        sock, _ = listener.accept()
    except BlockingIOError:
        return None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        head, rest = _read_head(sock)
        request, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        key = headers.get("sec-websocket-key")
        if not key:
            raise Closed("not a WebSocket handshake")
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + _accept_key(key.encode()) + b"\r\n\r\n"
        )
    except (Closed, OSError):
        sock.close()
        return None
    return Connection(sock, client=False, buffered=rest), request.split(" ")[1]
