"""A LiteRT model (``.tflite``) read and checked without LiteRT, PyTorch or any native code.

LiteRT's interpreter trusts the FlatBuffer it is given: it verifies little before it maps the
tensors, and a junk or truncated file can take the process down in native code instead of
raising. So every file is read here first, bounds-checked byte by byte (the standard library
only), before the runtime sees it; the same reader gives what the artifact declares: its
tensors (shape, dtype), its signature's input and output names, the operators it holds and the
buffers it stores (inline or, for files over 2 GB, at offsets after the FlatBuffer).

Layout (little endian, ``tensorflow/lite/schema/schema.fbs``): bytes 0-4 the FlatBuffer root
offset, 4-8 the file identifier ``TFL3``; the root ``Model`` table holds version (0),
operator_codes (1), subgraphs (2), description (3), buffers (4), metadata (6) and
signature_defs (7).
"""

from __future__ import annotations

import struct
from pathlib import Path

from lightexport.errors import InputFileError

IDENTIFIER = b"TFL3"
#: tflite::TensorType -> NumPy dtype name
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
                8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 13: "resource",
                14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16"}
#: The smallest file that can hold a root offset, the identifier and a root table with its vtable.
MIN_SIZE = 24
#: The largest model lightexport reads whole (a FlatBuffer is addressed by 32-bit offsets; bigger models keep
#: their weights after it, which is then checked by offset, not read).
MAX_FLATBUFFER = 2**31


class TfliteFileError(InputFileError):
    """The file is not a complete, well-formed LiteRT (TensorFlow Lite) model."""


class _FB:
    """Minimal bounds-checked FlatBuffer table reader."""

    def __init__(self, buf: bytes):
        self.b = buf

    def u(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.b):
            raise TfliteFileError(f"flatbuffer read out of bounds at {pos} (+{size}) of {len(self.b)} bytes")
        return struct.unpack_from("<" + fmt, self.b, pos)[0]

    def table(self, pos: int) -> int:
        """``pos`` checked as a table: its vtable lies inside the buffer and is well formed."""
        vt = pos - self.u("i", pos)
        vt_size, obj_size = self.u("H", vt), self.u("H", vt + 2)
        if vt_size < 4 or vt_size % 2 or vt + vt_size > len(self.b) or obj_size < 4 or pos + obj_size > len(self.b):
            raise TfliteFileError(f"malformed flatbuffer table at byte {pos}")
        return pos

    def field_pos(self, table: int, index: int) -> int | None:
        vt = table - self.u("i", table)
        slot = 4 + 2 * index
        if slot + 2 > self.u("H", vt):
            return None
        off = self.u("H", vt + slot)
        return table + off if off else None

    def scalar(self, table: int, index: int, fmt: str, default=0):
        p = self.field_pos(table, index)
        return default if p is None else self.u(fmt, p)

    def ref(self, table: int, index: int) -> int | None:
        p = self.field_pos(table, index)
        return None if p is None else p + self.u("I", p)

    def string(self, table: int, index: int) -> str | None:
        p = self.ref(table, index)
        if p is None:
            return None
        n = self.u("I", p)
        if p + 4 + n > len(self.b):
            raise TfliteFileError("a string runs past the end of the file (truncated?)")
        return self.b[p + 4: p + 4 + n].decode("utf-8", "replace")

    def vector_span(self, table: int, index: int, item: int) -> tuple[int, int]:
        """(start, count) of a vector of ``item``-byte elements, checked to lie inside the buffer."""
        p = self.ref(table, index)
        if p is None:
            return 0, 0
        n = self.u("I", p)
        if p + 4 + n * item > len(self.b):
            raise TfliteFileError(f"a vector of {n} items runs past the end of the file (truncated?)")
        return p + 4, n

    def vector(self, table: int, index: int, fmt: str | None = None) -> list:
        """Scalars (``fmt`` given) or checked table positions (``fmt`` None)."""
        size = struct.calcsize(fmt) if fmt else 4
        start, n = self.vector_span(table, index, size)
        if fmt is not None:
            return list(struct.unpack_from(f"<{n}{fmt}", self.b, start)) if n else []
        return [self.table(start + 4 * i + self.u("I", start + 4 * i)) for i in range(n)]


def check_header(head: bytes, file_size: int, name: str = "") -> int:
    """The root table's offset, after the size, the root offset and the ``TFL3`` identifier are checked."""
    if file_size == 0:
        raise TfliteFileError("empty file")
    if file_size < MIN_SIZE or len(head) < 8:
        raise TfliteFileError(f"{file_size} bytes is too short for a LiteRT model")
    ident = head[4:8]
    if ident != IDENTIFIER:
        hint = " (an ONNX file?)" if name.lower().endswith(".onnx") else ""
        raise TfliteFileError(f"not a LiteRT (TensorFlow Lite) model: file identifier {ident!r}, not b'TFL3'{hint}")
    root = struct.unpack_from("<I", head, 0)[0]
    if root % 4 or not 8 <= root <= min(file_size, MAX_FLATBUFFER) - 4:
        raise TfliteFileError(f"its FlatBuffer root offset {root} lies outside the file ({file_size} bytes)")
    return root


def _tensor(fb: _FB, t: int) -> dict:
    kind = fb.scalar(t, 1, "b")
    return dict(name=fb.string(t, 3) or "", shape=tuple(fb.vector(t, 0, "i")), dtype=TENSOR_TYPES.get(kind, str(kind)),
                buffer=fb.scalar(t, 2, "I"), quantized=fb.ref(t, 4) is not None and _has_scales(fb, fb.ref(t, 4)))


def _has_scales(fb: _FB, q: int) -> bool:
    fb.table(q)
    return fb.vector_span(q, 2, 4)[1] > 0  # QuantizationParameters.scale


def read_tflite(path: str | Path) -> dict:
    """The checked model: version, description, operators by builtin code, subgraphs' tensors and signatures.

    Raises :class:`TfliteFileError` (an :class:`InputFileError`) for anything malformed, naming no
    file: :func:`describe` adds the file.
    """
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        root = check_header(f.read(8), size, p.name)
        f.seek(0)
        data = f.read(min(size, MAX_FLATBUFFER))
    fb = _FB(data)
    model = fb.table(root)
    version = fb.scalar(model, 0, "I")
    if version != 3:
        raise TfliteFileError(f"schema version {version}, not 3")
    op_codes = []
    for code in fb.vector(model, 1):
        deprecated, builtin = fb.scalar(code, 0, "b"), fb.scalar(code, 3, "i")
        op_codes.append(dict(builtin=max(deprecated, builtin), custom=fb.string(code, 1)))
    buffers = fb.vector(model, 4)
    stored = 0
    for i, b in enumerate(buffers):
        _, n = fb.vector_span(b, 0, 1)
        offset, length = fb.scalar(b, 1, "Q"), fb.scalar(b, 2, "Q")
        if offset > 1 and offset + length > size:
            raise TfliteFileError(f"truncated: buffer {i} ends at byte {offset + length}, the file has {size}")
        stored += n + (length if offset > 1 else 0)
    subgraphs = []
    for s in fb.vector(model, 2):
        tensors = [_tensor(fb, t) for t in fb.vector(s, 0)]
        inputs, outputs = fb.vector(s, 1, "i"), fb.vector(s, 2, "i")
        for i in (*inputs, *outputs):
            if not 0 <= i < len(tensors):
                raise TfliteFileError(f"a subgraph input or output names tensor {i} of {len(tensors)}")
        ops: dict[str, int] = {}
        codes = []
        for op in fb.vector(s, 3):
            idx = fb.scalar(op, 0, "I")
            if idx >= len(op_codes):
                raise TfliteFileError(f"an operator names opcode {idx} of {len(op_codes)}")
            codes.append(idx)
        for idx in codes:
            code = op_codes[idx]
            key = code["custom"] or str(code["builtin"])
            ops[key] = ops.get(key, 0) + 1
        if any(t["buffer"] >= max(len(buffers), 1) for t in tensors):
            raise TfliteFileError("a tensor names a buffer the model does not have")
        subgraphs.append(dict(name=fb.string(s, 4) or "", tensors=tensors, inputs=inputs, outputs=outputs,
                              operators=ops, operator_count=len(codes)))
    if not subgraphs:
        raise TfliteFileError("it has no subgraph")
    signatures = []
    for sig in fb.vector(model, 7):
        def maps(index, sig=sig):
            return [(fb.string(m, 0) or "", fb.scalar(m, 1, "I")) for m in fb.vector(sig, index)]

        sub = fb.scalar(sig, 4, "I")
        if sub >= len(subgraphs):
            raise TfliteFileError(f"a signature names subgraph {sub} of {len(subgraphs)}")
        signatures.append(dict(key=fb.string(sig, 2) or "", inputs=maps(0), outputs=maps(1), subgraph=sub))
    metadata = {}
    for m in fb.vector(model, 6):
        metadata[fb.string(m, 0) or ""] = fb.scalar(m, 1, "I")
    return dict(version=version, description=fb.string(model, 3) or "", file_size=size, buffer_bytes=stored,
                subgraphs=subgraphs, signatures=signatures, metadata=metadata, operator_codes=op_codes)


def describe(path: str | Path) -> dict:
    """:func:`read_tflite`, with the file named in the one-line refusal."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"LiteRT model not found: {path}")
    try:
        return read_tflite(path)
    except TfliteFileError as exc:
        raise InputFileError(f"{path} is not a readable LiteRT (.tflite) model: {exc}") from None
    except (OSError, MemoryError) as exc:
        raise InputFileError(f"{path} cannot be read: {exc}") from None


def entry(info: dict) -> tuple[list[dict], list[dict]]:
    """The main subgraph's input and output tensors, in the order the signature lists them (or the subgraph's)."""
    sig = info["signatures"][0] if info["signatures"] else None
    sub = info["subgraphs"][sig["subgraph"] if sig else 0]
    tensors = sub["tensors"]

    def pick(named, indices):
        if named and all(i < len(tensors) for _, i in named):
            if all(_ordinal(n) is not None for n, _ in named):  # litert-torch's args_N / output_N: by N
                named = sorted(named, key=lambda pair: _ordinal(pair[0]))
            else:  # the signature's map is sorted by name: the subgraph's order is the model's
                rank = {i: k for k, i in enumerate(indices)}
                named = sorted(named, key=lambda pair: rank.get(pair[1], len(rank)))
            return [dict(tensors[i], signature_name=n, index=i) for n, i in named]
        return [dict(tensors[i], signature_name=tensors[i]["name"], index=i) for i in indices]

    return (pick(sig["inputs"] if sig else [], sub["inputs"]), pick(sig["outputs"] if sig else [], sub["outputs"]))


def _ordinal(name: str) -> int | None:
    """N of ``output_N``, so ``output_10`` sorts after ``output_9`` (litert-torch names ``args_N``, ``output_N``)."""
    head, _, tail = name.rpartition("_")
    return int(tail) if head and tail.isdigit() else None
