"""PostgreSQL protocol v3 messages the simulator sends, and binary encodings of recorded values.

Only what asyncpg needs from a server answering catalog queries: authentication ok, parameter
status, the extended-query replies (ParseComplete, ParameterDescription, RowDescription,
BindComplete, DataRow, CommandComplete, CloseComplete), ReadyForQuery and ErrorResponse.
Values come from recording.json as JSON and are encoded per column type OID, in binary (what asyncpg
asks for every built-in type) or text.
https://www.postgresql.org/docs/current/protocol-message-formats.html
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PG_EPOCH_DATE = dt.date(2000, 1, 1)


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


AUTH_OK = message(b"R", struct.pack("!i", 0))
PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
READY_IDLE = message(b"Z", b"I")
EMPTY_QUERY = message(b"I")


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, secret))


def error(sqlstate: str, text: str, severity: str = "ERROR") -> bytes:
    fields = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(sqlstate) + b"M" + cstr(text)
    return message(b"E", fields + b"\0")


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", struct.pack("!h", len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


def row_description(columns: Sequence[tuple[str, int]], formats: Sequence[int] | None = None) -> bytes:
    body = [struct.pack("!h", len(columns))]
    for i, (name, oid) in enumerate(columns):
        fmt = formats[i] if formats else 0
        body.append(cstr(name) + struct.pack("!IhIhih", 0, 0, oid, -1, -1, fmt))
    return message(b"T", b"".join(body))


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def data_row(cells: Iterable[bytes | None]) -> bytes:
    cells = list(cells)
    body = [struct.pack("!h", len(cells))]
    for c in cells:
        body.append(struct.pack("!i", -1) if c is None else struct.pack("!i", len(c)) + c)
    return message(b"D", b"".join(body))


# --- values ---------------------------------------------------------------------------------

def _timestamp(value: str) -> bytes:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return struct.pack("!q", (moment - _PG_EPOCH) // dt.timedelta(microseconds=1))


def _numeric(value: Any) -> bytes:
    sign, digits, exponent = decimal.Decimal(str(value)).as_tuple()
    text = "".join(map(str, digits))
    scale = max(0, -exponent)
    whole = text[: len(text) - scale] if scale else text + "0" * exponent
    frac = text[len(text) - scale:] if scale else ""
    whole = whole.lstrip("0")
    whole = "0" * (-len(whole) % 4) + whole
    frac = frac + "0" * (-len(frac) % 4)
    groups = [int(whole[i:i + 4]) for i in range(0, len(whole), 4)] + [int(frac[i:i + 4]) for i in range(0, len(frac), 4)]
    weight = len(whole) // 4 - 1
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    return struct.pack("!hhhh", len(groups), weight if groups else 0, 0x4000 if sign else 0, scale) + \
        b"".join(struct.pack("!h", g) for g in groups)


def _lsn(value: str) -> bytes:
    hi, lo = value.split("/")
    return struct.pack("!Q", (int(hi, 16) << 32) | int(lo, 16))


def _interval(value: Any) -> bytes:
    us = value["us"] if isinstance(value, dict) else int(float(value) * 1e6)
    return struct.pack("!qii", us, 0, 0)


def _text(value: Any) -> bytes:
    return (value if isinstance(value, str) else json.dumps(value)).encode()


_SCALARS: dict[int, Callable[[Any], bytes]] = {
    16: lambda v: b"\x01" if v else b"\x00",
    17: lambda v: base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v).encode(),
    18: lambda v: str(v).encode()[:1],
    19: _text, 25: _text, 1042: _text, 1043: _text, 705: _text, 114: _text,
    3802: lambda v: b"\x01" + _text(v),
    20: lambda v: struct.pack("!q", int(v)),
    21: lambda v: struct.pack("!h", int(v)),
    23: lambda v: struct.pack("!i", int(v)),
    26: lambda v: struct.pack("!I", int(v)),
    28: lambda v: struct.pack("!I", int(v)),
    700: lambda v: struct.pack("!f", float(v)),
    701: lambda v: struct.pack("!d", float(v)),
    1082: lambda v: struct.pack("!i", (dt.date.fromisoformat(v) - _PG_EPOCH_DATE).days),
    1114: _timestamp,
    1184: _timestamp,
    1186: _interval,
    1700: _numeric,
    3220: _lsn,
}
# array type OID -> element type OID
ARRAYS = {1000: 16, 1003: 19, 1005: 21, 1007: 23, 1009: 25, 1015: 1043, 1016: 20, 1021: 700, 1022: 701,
          1028: 26, 1182: 1082, 1185: 1184, 1231: 1700, 199: 114}


def binary(oid: int, value: Any) -> bytes | None:
    """The binary wire form of a recorded value for a column of type `oid`; None is SQL NULL."""
    if value is None:
        return None
    if oid in ARRAYS:
        elem = ARRAYS[oid]
        if not value:
            return struct.pack("!iiI", 0, 0, elem)
        cells = [binary(elem, v) for v in value]
        head = struct.pack("!iiIii", 1, int(any(c is None for c in cells)), elem, len(cells), 1)
        return head + b"".join(struct.pack("!i", -1) if c is None else struct.pack("!i", len(c)) + c for c in cells)
    encode = _SCALARS.get(oid)
    if encode is None:
        raise ValueError(f"pgsim cannot encode type OID {oid} in binary; add it to wire._SCALARS")
    return encode(value)


def text(oid: int, value: Any) -> bytes | None:
    """The text wire form (for a client that asked for text, or a simple Query)."""
    if value is None:
        return None
    if oid == 16:
        return b"t" if value else b"f"
    if oid in ARRAYS:
        parts = ["NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value]
        return ("{" + ",".join(parts) + "}").encode()
    if isinstance(value, dict) and "us" in value:
        return f"{value['us'] / 1e6} seconds".encode()
    return _text(value) if not isinstance(value, bool | int | float) else str(value).encode()
