"""An SMTP sink in a process of its own: accepts every message and logs one line each,
``<unix time>\t<recipient>\t<Message-ID>``, after the message is whole and before the
250 goes back.

    python -m bench.smtp_sink --port 2525 --log sink.log [--delay 0.05]

It prints ``listening on PORT`` once it accepts connections. ``--delay`` holds every
answer to DATA for that many seconds (a remote server's latency). The benchmarks and
the crash tests use it as the mail server nurture sends to.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP

MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class Sink:
    """The aiosmtpd handler: log each message, optionally after a delay."""

    def __init__(self, log: IO[str], delay: float) -> None:
        self.log = log
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        content: bytes = envelope.original_content or b""
        head = content.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(head)
        message_id = found.group(1).decode() if found else "-"
        for recipient in envelope.rcpt_tos:
            self.log.write(f"{time.time():.6f}\t{recipient}\t{message_id}\n")
        self.log.flush()
        return "250 Message accepted"


def read_log(path: Path) -> list[tuple[float, str, str]]:
    """The lines a sink wrote: (time, recipient, Message-ID)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        moment, recipient, message_id = line.split("\t")
        rows.append((float(moment), recipient, message_id))
    return rows


class SinkProcess:
    """A sink running in a subprocess, for tests and benchmarks."""

    def __init__(self, port: int, log: Path, delay: float = 0.0) -> None:
        self.port, self.log, self.delay = port, log, delay
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> SinkProcess:
        """Start it (again, on the same port and log) and wait until it listens."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.smtp_sink", "--port", str(self.port),
             "--log", str(self.log), "--delay", str(self.delay)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening"):
            self.process.kill()
            raise RuntimeError(f"the SMTP sink did not start: {line!r}")
        return self

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def received(self) -> list[tuple[float, str, str]]:
        return read_log(self.log)


async def serve(port: int, log: IO[str], delay: float) -> None:
    loop = asyncio.get_running_loop()
    handler = Sink(log, delay)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.localhost", data_size_limit=None),
        host="127.0.0.1",
        port=port,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {port}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    with open(args.log, "a", buffering=1) as log:
        asyncio.run(serve(args.port, log, args.delay))
    sys.exit(0)


if __name__ == "__main__":
    main()
