"""An ExecuTorch program (``.pte``) read and checked without ExecuTorch, PyTorch or any native code.

ExecuTorch's loader aborts the whole process on a junk file (``terminate called after throwing
... pybind11::error_already_set``: its log hook cannot decode the bytes it prints), so every file
is read here first, bounds-checked byte by byte, before the runtime sees it. The same reader gives
what the runtime's Python API does not: each method's input memory layout (``dim_order``: a program
exported from a channels-last example silently misreads NCHW feeds, 0.84 of the output range off),
which backends it delegates to (a program with no XNNPACK delegate runs 200x slower), the kernels
left outside them, and the string constants lightexport stores its provenance in.

Layout (little endian): bytes 0-4 the FlatBuffer root offset, 4-8 the identifier ``ET12``, then the
extended header ``eh00``: u32 length, u64 program_size (the FlatBuffer, headers included), u64
segment_base_offset, u64 segment_data_size; segments (delegate blobs, constant data) follow at
segment_base_offset. A file shorter than what its header and its segment table address is truncated.
"""

from __future__ import annotations

import struct
from pathlib import Path

from lightexport.errors import InputFileError

SCALAR_TYPES = {0: "BYTE", 1: "CHAR", 2: "SHORT", 3: "INT", 4: "LONG", 5: "HALF", 6: "FLOAT", 7: "DOUBLE", 11: "BOOL",
                12: "QINT8", 13: "QUINT8", 14: "QINT32", 15: "BFLOAT16", 27: "UINT16", 28: "UINT32", 29: "UINT64"}
EVALUE_TYPES = {0: "NONE", 1: "Null", 2: "Int", 3: "Bool", 4: "Double", 5: "Tensor", 6: "String", 7: "IntList",
                8: "DoubleList", 9: "BoolList", 10: "TensorList", 11: "OptionalTensorList"}
INSTR_TYPES = {1: "KernelCall", 2: "DelegateCall", 3: "MoveCall", 4: "JumpFalseCall", 5: "FreeCall"}


class PteFileError(InputFileError):
    """The file is not a complete, well-formed ExecuTorch program."""


class _FB:
    """Minimal bounds-checked flatbuffer table reader."""

    def __init__(self, buf: bytes):
        self.b = buf

    def _u(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.b):
            raise PteFileError(f"flatbuffer read out of bounds at {pos} (+{size}) of {len(self.b)}")
        return struct.unpack_from("<" + fmt, self.b, pos)[0]

    def field_pos(self, table: int, index: int) -> int | None:
        vt = table - self._u("i", table)
        vt_size = self._u("H", vt)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        off = self._u("H", vt + slot)
        return table + off if off else None

    def scalar(self, table, index, fmt, default=0):
        p = self.field_pos(table, index)
        return default if p is None else self._u(fmt, p)

    def ref(self, table, index) -> int | None:
        p = self.field_pos(table, index)
        return None if p is None else p + self._u("I", p)

    def string(self, table, index) -> str | None:
        p = self.ref(table, index)
        if p is None:
            return None
        n = self._u("I", p)
        if p + 4 + n > len(self.b):
            raise PteFileError("string runs past the flatbuffer")
        return self.b[p + 4: p + 4 + n].decode("utf-8", "replace")

    def vector(self, table, index, fmt=None) -> list:
        """Scalars (fmt given) or table positions (fmt None)."""
        p = self.ref(table, index)
        if p is None:
            return []
        n = self._u("I", p)
        if n > len(self.b):
            raise PteFileError("absurd vector length")
        if fmt is not None:
            size = struct.calcsize(fmt)
            if p + 4 + n * size > len(self.b):
                raise PteFileError("vector runs past the flatbuffer")
            return list(struct.unpack_from(f"<{n}{fmt}", self.b, p + 4))
        return [p + 4 + 4 * i + self._u("I", p + 4 + 4 * i) for i in range(n)]


def check_header(data: bytes, file_size: int) -> dict:
    if file_size == 0:
        raise PteFileError("empty file")
    if len(data) < 40:
        raise PteFileError(f"{file_size} bytes is too short for an ExecuTorch program")
    ident = data[4:8]
    if ident != b"ET12":
        hint = " (another ExecuTorch schema version)" if ident[:2] == b"ET" else ""
        raise PteFileError(f"not an ExecuTorch ET12 program: file identifier {ident!r}{hint}")
    if data[8:12] != b"eh00":
        raise PteFileError("no extended header 'eh00' (exported by an old or foreign tool)")
    hlen = struct.unpack_from("<I", data, 12)[0]
    program_size, seg_base = struct.unpack_from("<QQ", data, 16)
    seg_size = struct.unpack_from("<Q", data, 32)[0] if hlen >= 32 else None
    root = struct.unpack_from("<I", data, 0)[0]
    if hlen < 24 or program_size < 40 or root >= program_size:
        raise PteFileError(f"malformed extended header (length {hlen}, program_size {program_size}, root {root})")
    if program_size > file_size:
        raise PteFileError(f"truncated: the program needs {program_size} bytes, the file has {file_size}")
    if seg_base:
        if seg_base < program_size:
            raise PteFileError(f"segment base {seg_base} lies inside the program ({program_size} bytes)")
        if seg_size is not None and seg_base + seg_size > file_size:
            raise PteFileError(f"truncated: segments end at byte {seg_base + seg_size}, the file has {file_size}")
    return dict(identifier="ET12", header_length=hlen, program_size=program_size, segment_base_offset=seg_base,
                segment_data_size=seg_size, file_size=file_size)


def _tensor(fb: _FB, t: int) -> dict:
    st = fb.scalar(t, 0, "b")
    return dict(sizes=fb.vector(t, 2, "i"), dim_order=fb.vector(t, 3, "B"), dtype=SCALAR_TYPES.get(st, str(st)))


def _evalue(fb: _FB, ev: int):
    kind = EVALUE_TYPES.get(fb.scalar(ev, 0, "B"), "?")
    v = fb.ref(ev, 1)
    if v is None or kind in ("NONE", "Null"):
        return kind, None
    if kind == "Tensor":
        return kind, _tensor(fb, v)
    if kind == "Int":
        return kind, fb.scalar(v, 0, "q")
    if kind == "Bool":
        return kind, bool(fb.scalar(v, 0, "B"))
    if kind == "Double":
        return kind, fb.scalar(v, 0, "d", 0.0)
    if kind == "String":
        return kind, fb.string(v, 0)
    if kind == "IntList":
        return kind, fb.vector(v, 0, "q")
    if kind == "DoubleList":
        return kind, fb.vector(v, 0, "d")
    return kind, None


def read_pte(path) -> dict:
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(64)
        hdr = check_header(head, size)
        f.seek(0)
        flat = f.read(hdr["program_size"])
    fb = _FB(flat)
    root = fb._u("I", 0)
    methods, constants = {}, {}
    for plan in fb.vector(root, 1):
        name = fb.string(plan, 0)
        values = fb.vector(plan, 2)

        def val(i, values=values, name=name):
            if not 0 <= i < len(values):
                raise PteFileError(f"value index {i} out of range in method {name!r}")
            return _evalue(fb, values[i])

        ops = [(fb.string(o, 0) or "") + ("." + fb.string(o, 1) if fb.string(o, 1) else "")
               for o in fb.vector(plan, 6)]
        delegates = [fb.string(d, 0) for d in fb.vector(plan, 7)]
        kernels, n_delegate_calls, n_instr = {}, 0, 0
        for chain in fb.vector(plan, 5):
            for ins in fb.vector(chain, 2):
                n_instr += 1
                kind = INSTR_TYPES.get(fb.scalar(ins, 0, "B"))
                a = fb.ref(ins, 1)
                if kind == "KernelCall" and a is not None:
                    idx = fb.scalar(a, 0, "i")
                    op = ops[idx] if 0 <= idx < len(ops) else f"<bad op {idx}>"
                    kernels[op] = kernels.get(op, 0) + 1
                elif kind == "DelegateCall":
                    n_delegate_calls += 1
        inputs = [val(i) for i in fb.vector(plan, 3, "i")]
        outputs = [val(i) for i in fb.vector(plan, 4, "i")]
        if n_instr == 0 and not inputs and outputs and all(k != "Tensor" for k, _ in outputs):
            # a constant method: returns value(s), runs nothing (a list constant becomes one output per item)
            constants[name] = outputs[0][1] if len(outputs) == 1 else [v for _, v in outputs]
            continue
        methods[name] = dict(inputs=[v for k, v in inputs], outputs=[v for k, v in outputs],
                             delegates=delegates, delegate_calls=n_delegate_calls, kernel_calls=kernels)
    # segments must lie inside the file
    seg_base = hdr["segment_base_offset"]
    for s in fb.vector(root, 4):
        off, sz = fb.scalar(s, 0, "Q"), fb.scalar(s, 1, "Q")
        if seg_base + off + sz > size:
            raise PteFileError(f"truncated: a data segment ends at byte {seg_base + off + sz}, the file has {size}")
    return dict(header=hdr, version=fb.scalar(root, 0, "I"), methods=methods, constants=constants)


