"""The service manager's side of `LoadCredential=ID:SOCKET`, done the way systemd does it.

systemd's PID 1 (`read_full_file_full()` with `READ_FULL_FILE_CONNECT_SOCKET`,
src/basic/fileio.c) binds its client socket to the abstract address
`\\0<16 hex>/unit/<unit>/<id>`, connects, **shuts down its writing side** at
once, and then reads until EOF; what it read is the credential. A server that
takes that early EOF for a hang-up answers nothing. A reset while reading is a
failure to systemd, not an empty answer, so it is not swallowed here either.

    value = load_credential("/run/secretd/secretd.sock", "app.service", "db-password")

`SCRIPT` is the same client as a program (argv: socket, unit, id; the answer
on stdout), for running it as another uid with `second_user.run_python_as`.
"""

from __future__ import annotations

import os
import socket

TIMEOUT = 10.0


def load_credential(path: str, unit: str, cred_id: str, *, timeout: float = TIMEOUT) -> bytes:
    """Every byte the server at `path` sends for `unit`'s credential `cred_id`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as client:
        client.bind(f"\0{os.urandom(8).hex()}/unit/{unit}/{cred_id}")
        client.settimeout(timeout)
        client.connect(path)
        client.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


SCRIPT = """
import os, socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.bind("\\0" + os.urandom(8).hex() + "/unit/" + sys.argv[2] + "/" + sys.argv[3])
client.settimeout(10)
client.connect(sys.argv[1])
client.shutdown(socket.SHUT_WR)
while chunk := client.recv(65536):
    sys.stdout.buffer.write(chunk)
"""
