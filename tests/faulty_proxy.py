"""A TCP proxy on 127.0.0.1 that can cut a server off, for real-HTTP outage tests.

While ``down``, every new connection is accepted and reset at once and the open ones
are cut, as a crashed or restarting S3 endpoint looks to a client ("Connection was
closed before we received a valid response", "Connection reset by peer").
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class FaultyProxy:
    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._down = threading.Event()
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refused = 0  # connections reset while down
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def down(self, seconds: float | None = None) -> None:
        """Cut the server off, for ``seconds`` or until :meth:`up`."""
        self._down.set()
        with self._lock:
            for sock in self._open:
                _reset(sock)
            self._open.clear()
        if seconds is not None:
            timer = threading.Timer(seconds, self.up)
            timer.daemon = True
            timer.start()

    def up(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._listener.close()
        self.down()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            if self._down.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open |= {client, server}
            ended: list[socket.socket] = []
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst, ended), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, ended: list) -> None:
        """Copy one direction; pass on an end of stream; the second pump to end closes."""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with self._lock:
            ended.append(src)
            last = len(ended) == 2
            if last:
                self._open -= {src, dst}
        if last:
            src.close()
            dst.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), as a dead peer does, waking a thread blocked reading it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()
