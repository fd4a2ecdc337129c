"""The simulator: one listener, any number of connections, answers from bench/pgsim/recording.json.

    .venv/bin/python -m bench.pgsim.server --port 0      # prints "listening on 127.0.0.1:PORT"
    .venv/bin/python -m bench.pgsim.server --servers 40  # 40 simulated servers: "127.0.0.1:P1,P2,..."

Every connection is told it is the recorded server (any database name, any user, no password);
a statement is answered by its exact SQL text with the recorded rows, or with the recorded error.
Replies are encoded once, when the recording is loaded, so a connection costs a few hundred bytes
and a statement a dictionary lookup and a write: the worker under test, not the simulator, is
what a scale run measures. An unknown statement gets an error naming it (SQLSTATE 0A000).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.pgsim import wire

RECORDING = Path(__file__).with_name("recording.json")
_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST, _V3 = 80877103, 80877104, 80877102, 196608


@dataclass
class Answer:
    """One recorded statement, its replies already on the wire."""

    sql: str
    columns: list[tuple[str, int]]
    params: list[int]
    rows: list[list[Any]]
    tag: str
    error: bytes | None = None
    error_at: str = ""
    describe: bytes = b""  # ParameterDescription + RowDescription (or NoData): Describe of a statement
    columns_desc: bytes = b""  # RowDescription (or NoData): Describe of a portal
    by_format: dict[tuple[int, ...], bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Answer:
        a = cls(entry["sql"], [tuple(c) for c in entry.get("columns", [])], entry.get("params", []),
                entry.get("rows", []), entry.get("tag", "SELECT 0"))
        if err := entry.get("error"):
            a.error, a.error_at = wire.error(err["sqlstate"], err["message"]), err.get("at", "execute")
        a.columns_desc = wire.row_description(a.columns) if a.columns else wire.NO_DATA
        a.describe = wire.parameter_description(a.params) + a.columns_desc
        a.result((1,))  # what asyncpg asks for: every built-in type in binary
        return a

    def result(self, formats: tuple[int, ...]) -> bytes:
        """DataRows and CommandComplete for these result format codes (Bind's, 0/1 = all text/binary)."""
        done = self.by_format.get(formats)
        if done is None:
            n = len(self.columns)
            per = formats * n if len(formats) == 1 else formats if formats else (0,) * n
            encoders = [wire.binary if f == 1 else wire.text for f in per]
            rows = (wire.data_row(enc(oid, v) for enc, (_, oid), v in zip(encoders, self.columns, r)) for r in self.rows)
            done = self.by_format[formats] = b"".join(rows) + wire.command_complete(self.tag)
        return done


class Recorded:
    """The recording, loaded and encoded once for every connection."""

    def __init__(self, path: Path = RECORDING) -> None:
        data = json.loads(path.read_text())
        self.server: dict[str, str] = data["server"]
        self.identity_sql: str = data["identity_sql"]
        self._identity = next(e for e in data["statements"] if e["sql"] == self.identity_sql)
        # By SQL text (the last recorded answer), and by SQL text and bound arguments (each answer):
        # asyncpg's type introspection asks one text about different types.
        self.answers: dict[str, Answer] = {}
        self.bound: dict[tuple[str, tuple[bytes | None, ...]], Answer] = {}
        for e in data["statements"]:
            answer = self.answers[e["sql"]] = Answer.of(e)
            if e.get("params"):
                args = tuple(wire.binary(oid, v) for oid, v in zip(e["params"], e.get("args", [])))
                self.bound[(e["sql"], args)] = answer
        self.served = 0
        status = {**self.server, "application_name": "", "is_superuser": "on", "session_authorization": "dbfleet"}
        self.greeting = wire.AUTH_OK + b"".join(wire.parameter_status(k, v) for k, v in status.items())

    def identity_of_server(self, n: int) -> Answer:
        """The identity statement's answer for simulated server n: its own system identifier, so
        that n servers are n servers to the topology, not one set of split-brain primaries."""
        entry = json.loads(json.dumps(self._identity))
        at = [c[0] for c in entry["columns"]].index("server_id")
        for row in entry["rows"]:
            row[at] = str(int(row[at] or 0) + n)
        return Answer.of(entry)


class Session(asyncio.Protocol):
    """One client connection: startup, then simple and extended queries until Terminate."""

    __slots__ = ("buf", "failed", "identity", "pid", "portals", "recorded", "started", "statements", "transport")
    _pids = itertools.count(1000)

    def __init__(self, recorded: Recorded, identity: Answer | None = None) -> None:
        self.recorded = recorded
        self.identity = identity  # this listener's own answer to the identity statement
        self.buf = bytearray()
        self.started = False
        self.statements: dict[bytes, Answer | None] = {}
        self.portals: dict[bytes, tuple[Answer | None, tuple[int, ...]]] = {}
        self.failed = False
        self.pid = next(self._pids)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out: list[bytes] = []
        while True:
            if not self.started:
                if len(self.buf) < 8:
                    break
                size = struct.unpack_from("!i", self.buf)[0]
                if len(self.buf) < size:
                    break
                body, self.buf = bytes(self.buf[4:size]), self.buf[size:]
                if not self._startup(body, out):
                    return
                continue
            if len(self.buf) < 5:
                break
            kind, size = self.buf[0:1], struct.unpack_from("!i", self.buf, 1)[0]
            if len(self.buf) < size + 1:
                break
            body, self.buf = bytes(self.buf[5:size + 1]), self.buf[size + 1:]
            if kind == b"X":
                self._flush(out)
                self.transport.close()
                return
            self._message(kind, body, out)
        self._flush(out)

    def _flush(self, out: list[bytes]) -> None:
        if out:
            self.transport.write(b"".join(out))
            out.clear()

    def _startup(self, body: bytes, out: list[bytes]) -> bool:
        code = struct.unpack_from("!i", body)[0]
        if code in (_SSL_REQUEST, _GSS_REQUEST):
            self.transport.write(b"N")
            return True
        if code != _V3:
            self.transport.close()
            return False
        self.started = True
        out += [self.recorded.greeting, wire.backend_key(self.pid, 0), wire.READY_IDLE]
        return True

    def _message(self, kind: bytes, body: bytes, out: list[bytes]) -> None:
        if kind == b"S":  # Sync: the end of an extended-query cycle, failed or not
            self.failed = False
            out.append(wire.READY_IDLE)
            return
        if self.failed and kind in b"PBDEHC":
            return  # after an error the server skips to the next Sync
        if kind == b"P":
            self._parse(body, out)
        elif kind == b"D":
            which, name = body[0:1], body[1:-1]
            answer = self.statements.get(name) if which == b"S" else self.portals.get(name, (None, ()))[0]
            out.append(wire.NO_DATA if answer is None else answer.describe if which == b"S" else answer.columns_desc)
        elif kind == b"B":
            self._bind(body, out)
        elif kind == b"E":
            self._execute(body, out)
        elif kind == b"C":
            out.append(wire.CLOSE_COMPLETE)
        elif kind == b"Q":
            self._query(body, out)
        # H (Flush) needs nothing: every reply is written at the end of the data that asked for it.

    def _fail(self, error: bytes, out: list[bytes]) -> None:
        self.failed = True
        out.append(error)

    def _parse(self, body: bytes, out: list[bytes]) -> None:
        end = body.index(b"\0")
        name, rest = body[:end], body[end + 1:]
        sql = rest[:rest.index(b"\0")].decode()
        answer = self.recorded.answers.get(sql)
        if self.identity is not None and sql == self.recorded.identity_sql:
            answer = self.identity
        if answer is None:
            return self._fail(wire.error("0A000", f"pgsim has no recorded answer for: {sql[:200]}"), out)
        if answer.error is not None and answer.error_at == "parse":
            return self._fail(answer.error, out)
        self.statements[name] = answer
        out.append(wire.PARSE_COMPLETE)

    def _bind(self, body: bytes, out: list[bytes]) -> None:
        end = body.index(b"\0")
        portal, rest = body[:end], body[end + 1:]
        end = rest.index(b"\0")
        answer, at = self.statements.get(rest[:end]), end + 1
        nfmt = struct.unpack_from("!h", rest, at)[0]
        at += 2 + 2 * nfmt
        nparams = struct.unpack_from("!h", rest, at)[0]
        at += 2
        args = []
        for _ in range(nparams):
            size = struct.unpack_from("!i", rest, at)[0]
            args.append(None if size < 0 else bytes(rest[at + 4:at + 4 + size]))
            at += 4 + max(size, 0)
        if nparams and answer is not None:
            answer = self.recorded.bound.get((answer.sql, tuple(args)), answer)
        nres = struct.unpack_from("!h", rest, at)[0]
        formats = struct.unpack_from(f"!{nres}h", rest, at + 2) if nres else ()
        self.portals[portal] = (answer, tuple(formats))
        out.append(wire.BIND_COMPLETE)

    def _execute(self, body: bytes, out: list[bytes]) -> None:
        answer, formats = self.portals.get(body[:body.index(b"\0")], (None, ()))
        if answer is None:
            return self._fail(wire.error("34000", "pgsim: no such portal"), out)
        if answer.error is not None:
            return self._fail(answer.error, out)
        self.recorded.served += 1
        out.append(answer.result(formats))

    def _query(self, body: bytes, out: list[bytes]) -> None:
        sql = body[:-1].decode()
        answer = self.recorded.answers.get(sql)
        if not sql.strip():
            out.append(wire.EMPTY_QUERY)
        elif answer is None:
            out.append(wire.command_complete(sql.split(None, 1)[0].upper()))  # SET, RESET, DISCARD ...
        elif answer.error is not None:
            out.append(answer.error)
        else:
            self.recorded.served += 1
            out += [wire.row_description(answer.columns) if answer.columns else b"", answer.result((0,))]
        out.append(wire.READY_IDLE)


async def serve(host: str = "127.0.0.1", port: int = 0, recording: Path = RECORDING) -> asyncio.Server:
    """One listener: one simulated server, every session the recorded one."""
    recorded = Recorded(recording)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Session(recorded), host, port, backlog=4096)
    server.recorded = recorded  # type: ignore[attr-defined]
    return server


async def serve_servers(count: int, host: str = "127.0.0.1", recording: Path = RECORDING) -> list[asyncio.Server]:
    """`count` simulated servers in this process, one listener each on a free port, each with its
    own system identifier (the fleet's shape: many servers of many databases)."""
    recorded, loop, out = Recorded(recording), asyncio.get_running_loop(), []
    for n in range(count):
        identity = recorded.identity_of_server(n)
        out.append(await loop.create_server(lambda identity=identity: Session(recorded, identity), host, 0,
                                            backlog=4096))
    return out


async def _main(args: argparse.Namespace) -> None:
    servers = await serve_servers(args.servers, args.host, args.recording) if args.servers > 1 else [
        await serve(args.host, args.port, args.recording)]
    ports = ",".join(str(s.sockets[0].getsockname()[1]) for s in servers)
    print(f"listening on {args.host}:{ports}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--recording", type=Path, default=RECORDING)
    p.add_argument("--servers", type=int, default=1, help="simulated servers, one listener each on a free port")
    args = p.parse_args()
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
