"""The real TensorRT Python bindings, importable on a machine without TensorRT's libraries or a GPU.

``tensorrt-cu12-bindings`` on PyPI is the real pybind11 module (``tensorrt_bindings``); it links
against libnvinfer, libnvonnxparser and libnvinfer_plugin only for nine C entry points (the
factories behind ``Builder``, ``Runtime``, ``Refitter``, ``OnnxParser`` and the plugin
registry). Stand-in libraries exporting those nine symbols (each returning null) let the
module import, so every class, enum member, method name and pybind11 signature (the first
lines of each method's ``__doc__``) can be read. Nothing can be built with them: this checks
names and signatures, not behaviour.

Each version is downloaded once (``pip download``, pinned, no dependencies) and prepared in
``$LIGHTEXPORT_TRT_BINDINGS_CACHE`` (default ``~/.cache/lightexport/trt-bindings``). Needs ``cc``.

    python tests/exporter/trt_bindings.py 11.4.0.106      # prints the API surface as JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

#: The releases the tests check against: the newest 10.x and 11.x on PyPI when this was written.
VERSIONS = ("10.16.1.11", "11.4.0.106")

_ENTRY_POINTS = """
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* logger, int version) { return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) { return NULL; }
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { return NULL; }
void* getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void* logger, const char* namespace_) { return 1; }
"""

#: Run inside the prepared environment: every public class of the module with its members.
_DUMP = r"""
import inspect, json, sys
import tensorrt as trt

def members(cls):
    out = {}
    for name in dir(cls):
        if name.startswith("_") and name != "__init__":
            continue
        value = getattr(cls, name, None)
        if isinstance(value, property) or type(value).__name__ == "property":
            out[name] = {"kind": "property"}
        elif callable(value):
            out[name] = {"kind": "method", "doc": (getattr(value, "__doc__", "") or "")}
        else:
            out[name] = {"kind": "value"}
    return out

api = {"version": trt.__version__, "classes": {}, "values": []}
for name in dir(trt):
    if name.startswith("_"):
        continue
    value = getattr(trt, name)
    if inspect.isclass(value):
        api["classes"][name] = members(value)
    else:
        api["values"].append(name)
json.dump(api, sys.stdout)
"""


class BindingsUnavailable(RuntimeError):
    """The wheel cannot be had here (no network to PyPI, no wheel for this Python, no C compiler)."""


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightexport" / "trt-bindings"
    return Path(os.environ.get("LIGHTEXPORT_TRT_BINDINGS_CACHE", default))


def prepare(version: str) -> Path:
    """The folder holding ``site/`` (the unpacked wheel), ``shim/`` (``import tensorrt``) and ``lib/`` (stand-ins)."""
    folder = cache_root() / version
    if (folder / ".ready").is_file():
        return folder
    if shutil.which("cc") is None:
        raise BindingsUnavailable("no C compiler (cc) to build the stand-in libraries")
    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("whl", "site", "lib", "shim/tensorrt"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    python = f"{sys.version_info[0]}{sys.version_info[1]}"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
         python, "-d", str(folder / "whl"), f"tensorrt-cu12-bindings=={version}"],
        capture_output=True, text=True, timeout=600,
    )
    wheels = sorted((folder / "whl").glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise BindingsUnavailable(f"cannot download tensorrt-cu12-bindings=={version} for Python {python}: {tail}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(folder / "site")
    shutil.rmtree(folder / "whl")
    major = version.split(".")[0]
    source = folder / "lib" / "entry_points.c"
    source.write_text(_ENTRY_POINTS)
    library = folder / "lib" / f"libnvinfer.so.{major}"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, capture_output=True)
    for name in ("libnvonnxparser", "libnvinfer_plugin"):
        shutil.copy(library, folder / "lib" / f"{name}.so.{major}")
    (folder / "shim" / "tensorrt" / "__init__.py").write_text(
        "from tensorrt_bindings import *  # noqa: F401,F403\nfrom tensorrt_bindings import __version__  # noqa: F401\n"
    )
    (folder / ".ready").touch()
    return folder


def environment(version: str) -> dict[str, str]:
    """``os.environ`` plus what makes ``import tensorrt`` load these bindings."""
    folder = prepare(version)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(folder / "lib"), env.get("LD_LIBRARY_PATH")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder / "shim"), str(folder / "site"),
                                                      env.get("PYTHONPATH")]))
    return env


def api_surface(version: str) -> dict:
    """Every public class of the bindings: members with kind, and each method's pybind11 docstring."""
    cached = cache_root() / version / "api.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    done = subprocess.run([sys.executable, "-c", _DUMP], env=environment(version), capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise BindingsUnavailable(f"tensorrt {version} bindings do not import: {done.stderr.strip()[-300:]}")
    api = json.loads(done.stdout)
    cached.write_text(json.dumps(api))
    return api


if __name__ == "__main__":
    print(json.dumps(api_surface(sys.argv[1] if len(sys.argv) > 1 else VERSIONS[-1]), indent=1)[:4000])
