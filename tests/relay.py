"""An HTTP relay on 127.0.0.1 in front of a real MLflow server, to inject faults.

Each client connection carries one request (the relay asks the server to close
after answering, so a request is never split across connections). Per request
the relay can pass it on, *cut* the answer halfway (the server has applied the
request; the client sees ``IncompleteRead``/``Connection broken``) or *hold* it
(the client waits while the test does something, e.g. kills the client; on
``release`` the request is dropped, never reaching the server).
A rule is ``(substring of the request line, action)``; the first matching rule
is used once and then dropped.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Relay:
    """Listen on 127.0.0.1 (a free port) and forward to ``upstream_port``.

    Attributes:
        rules: ``[(text in the request line, "cut" | "hold")]``, used first-match, once.
        seen: every request line relayed, in order.
        held: set once a request is being held; ``release`` lets it go on.
    """

    upstream_port: int
    rules: list[tuple[str, str]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.uri = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _action(self, line: str) -> str:
        with self._lock:
            self.seen.append(line)
            for i, (text, action) in enumerate(self.rules):
                if text in line:
                    del self.rules[i]
                    return action
        return "pass"

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                head, body = _read_request(conn)
            except OSError:
                return
            if not head:
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            action = self._action(line)
            if action == "hold":
                self.held.set()
                self.release.wait()
                return
            lines = [h for h in head.split(b"\r\n") if not h.lower().startswith(b"connection:")]
            request = b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body
            try:
                with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                    up.sendall(request)
                    answer = _read_all(up)
                if action == "cut":
                    conn.sendall(_cut(answer))
                else:
                    conn.sendall(answer)
            except OSError:
                return

    def close(self) -> None:
        """Stop accepting and let any held request go."""
        self._stop.set()
        self.release.set()
        self._server.close()
        self._thread.join(5)


def _read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for h in head.split(b"\r\n")[1:]:
        name, _, value = h.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _cut(answer: bytes) -> bytes:
    """The answer's head and the first half of its body (at least one byte short)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + body[: max(0, len(body) // 2 - 1)]
