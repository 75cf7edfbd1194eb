"""The ncnn file pair read and checked without ncnn or PyTorch: what the exporter verifies after pnnx and the runner
before ncnn sees a file (the emulated ARM worker, which has neither torch nor pnnx, imports it too).

A ``.param`` is text: the magic ``7767517``, ``<layers> <blobs>``, one line per layer (type, name,
input and output counts, blob names, ``id=value`` parameters). The ``.bin`` holds each weighted
layer's weights as ``ModelBin.load(n, 0)``: a 4-byte tag (0 for fp32, 0x01306B47 for fp16 padded to
4 bytes) then the data, and its bias as raw fp32, in layer order, so its exact size follows from
the ``.param`` (``Convolution*``: 0=num_output, 5=bias_term, 6=weight_data_size; ``InnerProduct``:
0, 1, 2). A ``MemoryData`` layer (a constant: a detector's anchors and strides) holds its
``w x h x d x c`` values (ids 0, 1, 11, 2) as raw fp32 with no tag (load type 21=1).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lightexport.errors import InputFileError

MAGIC = "7767517"
TAG_FP32, TAG_FP16 = 0, 0x01306B47
#: Layers with weights, and the param ids of (bias_term, weight_data_size); the .bin holds their blobs in order.
#: ncnn's per-layer feature mask (param id 31, read by ``Net::load_param``) and its bit that turns fp16
#: arithmetic off for that layer alone.
FEATMASK, NO_FP16_ARITHMETIC = 31, 1
WEIGHTED = {"Convolution": (5, 6), "ConvolutionDepthWise": (5, 6), "Deconvolution": (5, 6),
            "DeconvolutionDepthWise": (5, 6), "InnerProduct": (1, 2)}


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, str]


@dataclass
class Param:
    layers: list[Layer] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def histogram(self) -> Counter:
        return Counter(layer.type for layer in self.layers)


def read_param(path: str | os.PathLike) -> Param:
    """A text ``.param`` parsed and checked: magic ``7767517``, declared layer/blob counts, whole lines."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError:
        raise InputFileError(f"{path} is not an ncnn .param (not text)") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != MAGIC:
        raise InputFileError(f"{path} is not an ncnn .param (it does not start with the magic {MAGIC})")
    try:
        layer_count, blob_count = map(int, lines[1].split())
    except (IndexError, ValueError):
        raise InputFileError(f"{path}: its second line is not '<layers> <blobs>'") from None
    if len(lines) - 2 != layer_count:
        raise InputFileError(f"{path} declares {layer_count} layers but holds {len(lines) - 2} (truncated?)")
    param, produced, consumed = Param(), [], set()
    for line in lines[2:]:
        fields = line.split()
        try:
            kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
            bottoms, tops = fields[4:4 + n_in], fields[4 + n_in:4 + n_in + n_out]
            params = {int(k): v for k, _, v in (f.partition("=") for f in fields[4 + n_in + n_out:])}
        except (IndexError, ValueError):
            raise InputFileError(f"{path}: a layer line is cut short or malformed: {line[:60]!r}") from None
        if len(tops) != n_out:
            raise InputFileError(f"{path}: layer {name} lists fewer outputs than it declares")
        param.layers.append(Layer(kind, name, bottoms, tops, params))
        produced += tops
        consumed.update(bottoms)
    if len(set(produced)) != blob_count:
        raise InputFileError(f"{path} declares {blob_count} blobs but its layers make {len(set(produced))}")
    param.inputs = [layer.tops[0] for layer in param.layers if layer.type == "Input"]
    param.outputs = in_torch_order([b for b in dict.fromkeys(produced) if b not in consumed])
    return param


def fp16_arithmetic_off(param: Param) -> list[str]:
    """The layers whose featmask turns fp16 arithmetic off (a mask that is not a number counts as none)."""
    def mask(layer: Layer) -> int:
        try:
            return int(layer.params.get(FEATMASK, "0"))
        except ValueError:
            return 0
    return [layer.name for layer in param.layers if mask(layer) & NO_FP16_ARITHMETIC]


def in_torch_order(blobs: list[str]) -> list[str]:
    """pnnx names a module's outputs ``out0``, ``out1`` ... in the module's order, but the ``.param`` (and
    ``Net.output_names()``) lists them in layer order: a detector's came out ``out3 out4 out5 out1 out2 out0``.
    Back in the module's order when every name is pnnx's; as listed otherwise."""
    numbered = [b[3:] for b in blobs]
    if all(b.startswith("out") and n.isdigit() for b, n in zip(blobs, numbered)):
        return sorted(blobs, key=lambda b: int(b[3:]))
    return blobs


def _payload(count: int, fp16: bool) -> int:
    return (2 * count + 3) // 4 * 4 if fp16 else 4 * count


def check_pair(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> Param:
    """The pair, refused unless the ``.bin`` is exactly the weights the ``.param`` reads (see the module doc)."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    param = read_param(param_path)
    if not bin_path.is_file():
        raise InputFileError(f"{bin_path} is missing: an ncnn model is the .param plus the .bin beside it")
    records = []  # (layer, tagged weight count, raw fp32 count) in file order
    for layer in param.layers:
        if layer.type == "MemoryData":
            if int(layer.params.get(21, 1)) != 1:  # a storage type other than raw fp32: layout not modelled
                return param
            count = 1
            for key in (0, 1, 11, 2):
                count *= max(int(layer.params.get(key, 0)), 1)
            records.append((layer.name, None, count))
        elif layer.type in WEIGHTED:
            bias_id, size_id = WEIGHTED[layer.type]
            if int(layer.params.get(8, 0)):  # int8 layers carry scales whose layout is not modelled: size unchecked
                return param
            bias = int(layer.params.get(0, 0)) if int(layer.params.get(bias_id, 0)) else 0
            records.append((layer.name, int(layer.params.get(size_id, 0)), bias))
    size = bin_path.stat().st_size
    with bin_path.open("rb") as f:
        tagged_at = 0
        for _, n, raw in records:  # the first tag follows any raw constants written before it
            if n is not None:
                break
            tagged_at += 4 * raw
        f.seek(tagged_at)
        first = int.from_bytes(f.read(4), "little") if any(n is not None for _, n, _ in records) else TAG_FP32
        if first not in (TAG_FP32, TAG_FP16):
            raise InputFileError(f"{bin_path} is not ncnn weights (its first tag is {first:#010x})")
        fp16 = first == TAG_FP16
        want = sum(4 * bias if n is None else 4 + _payload(n, fp16) + 4 * bias for _, n, bias in records)
        if size != want:
            raise InputFileError(f"{bin_path} holds {size} bytes but {param_path.name} needs {want} "
                                 f"({'fp16' if fp16 else 'fp32'} weights): the .bin belongs to another model or is "
                                 "truncated")
        f.seek(0)
        for name, n, bias in records:
            if n is None:
                f.seek(4 * bias, 1)
                continue
            tag = int.from_bytes(f.read(4), "little")
            if tag != first:
                raise InputFileError(f"{bin_path}: the weights of layer {name} are not where {param_path.name} "
                                     "expects them (another model's .bin)")
            f.seek(_payload(n, fp16) + 4 * bias, 1)
    return param


