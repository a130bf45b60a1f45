"""The bench's webhook receiver: ``python -m bench.webhook_receiver OUT``.

It stands for the shop's own system, which runs on another machine; here it shares the
bench's two cores, so it is as cheap as a receiver can be in Python (asyncio, HTTP/1.1
keep-alive, no parsing beyond the length of the body): its CPU is taken from the API's and
would hide the dispatcher's cost. It prints its URL, answers 200 to every POST, and on SIGTERM
writes what it received to OUT as JSON: (webhook-id, type, member, position, recorded_at,
received_at) per message.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
received: list[tuple[bytes, bytes, float]] = []  # (headers, body, time) as they came


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            received.append((head, body, time.time()))
            writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def rows() -> list[list[Any]]:
    found = []
    for head, body, at in received:
        webhook_id = ""
        for line in head.split(b"\r\n"):
            if line[:11].lower() == b"webhook-id:":
                webhook_id = line[11:].strip().decode()
        message = json.loads(body)
        data = message["data"]
        found.append(
            [webhook_id, message["type"], data["member_id"], data["position"],
             data["recorded_at"], at]
        )  # fmt: skip
    return found


async def main(out: str) -> None:
    server = await asyncio.start_server(serve_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}/hooks", flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    server.close()
    with open(out, "w") as file:
        json.dump(rows(), file)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
