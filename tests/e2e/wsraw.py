"""wsraw — a bytes-level WebSocket client for the e2e suite: the
handshake by hand, frames built byte by byte (any bit, any length field,
masked or not), and a reader that returns frames as the server sent them,
so a test can check the exact close code that arrived before the FIN."""
import base64
import hashlib
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(op, payload=b"", fin=True, mask=True, rsv=0, key=None, length=None):
    """One client frame. `length` forces the length field (e.g. a 64-bit
    value with the top bit set) whatever the payload; a zero mask key
    keeps the payload as is (fast for big frames)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    mbit = 0x80 if mask else 0
    if length is not None and length >= 1 << 16 or n > 0xFFFF:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    elif n >= 126:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BB", b0, mbit | n)
    if not mask:
        return hdr + payload
    key = os.urandom(4) if key is None else key
    if key == b"\0\0\0\0":
        return hdr + key + payload
    body = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return hdr + key + body


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Conn:
    def __init__(self, port, path="/ws/echo", rcvbuf=None, timeout=5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake: %r" % self.buf
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head = head.decode("latin-1")
        assert self.head.startswith("HTTP/1.1 101 "), self.head
        assert ("Sec-WebSocket-Accept: %s" % accept_for(key)) in self.head, self.head

    def send(self, data):
        self.sock.sendall(data)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("EOF after %d of %d bytes" % (len(self.buf), n))
            self.buf += chunk

    def recv_frame(self):
        """(fin, opcode, payload) of the next server frame."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "a server frame must not be masked"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(pos + n)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_close(self, skip_data=True):
        """The close code (None for an empty close) and reason, skipping
        data frames and pings."""
        while True:
            fin, op, payload = self.recv_frame()
            if op == 8:
                if not payload:
                    return None, b""
                return struct.unpack("!H", payload[:2])[0], payload[2:]
            assert skip_data or op in (9, 10), (op, payload[:100])

    def at_eof(self, timeout=3.0):
        """True when the server ended the TCP connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, ConnectionAbortedError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()
