"""A test double for Earth Engine, at the ``ee.data`` boundary.

The real ``ee`` client is initialised offline the way its own tests do it
(``ee/apitestcase.py``: the algorithm list shipped in ``ee/tests/algorithms.json``,
no Cloud API resource, no data-catalog fetch); only the functions that would cross
the network are replaced:

- ``computePixels``: serialises the expression it is given (the real serializer),
  then answers with real GeoTIFF bytes written by rasterio (``MemoryFile``) on exactly
  the requested grid -- the chip bands, or the one-band water mask -- and can inject
  faults: HTTP 429 / 5xx raised the way the real client raises them (a
  ``googleapiclient`` ``HttpError`` translated by ``ee.data._translate_cloud_exception``
  inside its ``except``), timeouts, truncated bytes, permanent errors, and a
  ``KeyboardInterrupt`` after k chips (an in-process kill);
- ``computeValue``: the scene list;
- ``exportImage`` / ``listOperations`` / ``getTaskStatus``: batch tasks, idempotent by
  request id as the server is;
- ``get_persistent_credentials``: fake "earthengine authenticate" credentials.

Run as a script (``python tests/support/ee_fakes.py ee export ...``) it installs itself and runs
the workbench CLI: a real process that a test can kill with SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"


# ---- reading serialised graphs ----------------------------------------------------------------------

def graph_tree(obj: Any) -> Any:
    """The serialised graph of an ``ee`` object (``obj.serialize()``) with every value reference
    resolved: one nested tree of ``functionInvocationValue`` / ``constantValue`` nodes."""
    doc = json.loads(obj.serialize()) if not isinstance(obj, dict) else obj
    values = doc["values"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"valueReference"}:
                return resolve(values[node["valueReference"]])
            if "functionDefinitionValue" in node:              # a mapped function: its body is a key
                fdef = node["functionDefinitionValue"]
                return {"functionDefinitionValue": {"argumentNames": fdef["argumentNames"],
                                                    "body": resolve(values[fdef["body"]])}}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(values[doc["result"]])


def invocations(tree: Any, name: str | None = None) -> list[dict]:
    """Every function invocation in the tree (``{'functionName', 'arguments'}``), optionally of one name."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            inv = node.get("functionInvocationValue")
            if inv is not None and (name is None or inv["functionName"] == name):
                found.append(inv)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree)
    return found


def constant(arg: Any) -> Any:
    """The constant value of an argument: a ``constantValue``, an ``arrayValue`` of constants, or an
    ``Image.constant(value)``."""
    if "constantValue" in arg:
        return arg["constantValue"]
    if "arrayValue" in arg:
        return [constant(v) for v in arg["arrayValue"]["values"]]
    inv = arg.get("functionInvocationValue", {})
    if inv.get("functionName") == "Image.constant":
        return constant(inv["arguments"]["value"])
    raise AssertionError(f"not a constant: {json.dumps(arg)[:200]}")


def function_names(tree: Any) -> set[str]:
    return {inv["functionName"] for inv in invocations(tree)}


# ---- the fake ---------------------------------------------------------------------------------------

class FakeCredentials:
    """What ``earthengine authenticate`` would leave behind (never used for a request here)."""

    token = "fake-access-token"
    refresh_token = "fake-refresh-token-must-not-leak"
    quota_project_id = None
    valid = True
    expired = False

    def refresh(self, request: Any) -> None:
        pass


@dataclass
class FakeScene:
    index: str
    time_ms: int
    cloud: float
    footprint: dict | None = None


def ring_of_box(w: float, s: float, e: float, n: float) -> dict:
    return {"type": "LinearRing", "coordinates": [[w, s], [e, s], [e, n], [w, n], [w, s]]}


def default_scenes() -> list[FakeScene]:
    """Three scenes over Hanoi (UTM 48N): two cover everything, one only west of 105.80 E."""
    day = 86_400_000
    t0 = 1_673_000_000_000                                   # 2023-01-06 10:13 UTC
    return [FakeScene("20230106T032111_20230106T032930_T48QWJ", t0, 3.25, ring_of_box(104.9, 20.4, 106.6, 21.9)),
            FakeScene("20230116T032031_20230116T033212_T48QWJ", t0 + 10 * day, 12.5,
                      ring_of_box(104.9, 20.4, 105.80, 21.9)),
            FakeScene("20230126T031951_20230126T032842_T48QWJ", t0 + 20 * day, 0.5, None)]


class FakeEarthEngine:
    """Replace the network functions of ``ee.data``; see the module docstring."""

    def __init__(self, scenes: list[FakeScene] | None = None, project: str = "test-project"):
        self.scenes = default_scenes() if scenes is None else scenes
        self.project = project
        self.lock = threading.Lock()
        self.pixel_calls: list[dict] = []      # every computePixels request: kind, grid, tree, fault
        self.value_calls: list[Any] = []
        self.faults: list[str | None] = []     # consumed one per computePixels call, in order
        self.fault_for: Callable[[dict], str | None] | None = None   # or decide per request
        self.kill_after: int | None = None     # KeyboardInterrupt once this many images were served
        self.images_served = 0
        self.delay = 0.0                       # seconds per computePixels call
        self.empty_chips: set[float] = set()   # translateX of chips that come back with no valid pixel
        self.exports: dict[str, dict] = {}     # request id -> {'name', 'params', 'tree'}
        self.op_states: dict[str, str] = {}    # operation id -> Operation state (PENDING, SUCCEEDED, ...)
        self.list_limit: int | None = None     # listOperations returns only this many (rest via getTaskStatus)
        self.status_calls: list[list[str]] = []

    # -- installing ---------------------------------------------------------------------------------
    def install(self, setattr_: Callable[[Any, str, Any], None] = setattr) -> FakeEarthEngine:
        import ee
        from ee import apitestcase

        ee.Reset()
        setattr_(ee.data, "_install_cloud_api_resource", lambda: None)
        setattr_(ee.data, "getAlgorithms", apitestcase.GetAlgorithms)
        setattr_(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
        setattr_(ee.data, "get_persistent_credentials", lambda: FakeCredentials())
        setattr_(ee.data, "computePixels", self.computePixels)
        setattr_(ee.data, "computeValue", self.computeValue)
        setattr_(ee.data, "exportImage", self.exportImage)
        setattr_(ee.data, "listOperations", self.listOperations)
        setattr_(ee.data, "getTaskStatus", self.getTaskStatus)
        return self

    @staticmethod
    def initialize_offline(project: str = "test-project") -> None:
        """``ee.Initialize`` for tests that only build graphs."""
        import ee

        ee.Initialize(project=project)

    # -- computePixels -----------------------------------------------------------------------------
    def computePixels(self, params: dict) -> bytes:
        import ee

        assert params.get("fileFormat") == "GEO_TIFF", params.get("fileFormat")
        grid = params["grid"]
        tree = graph_tree(params["expression"])             # the real serializer must accept it
        kind = "mask" if tree["functionInvocationValue"]["functionName"] == "Image.toUint8" else "image"
        request = {"kind": kind, "grid": grid, "tree": tree}
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
            if fault is None and self.fault_for is not None:
                fault = self.fault_for(request)
            request["fault"] = fault
            self.pixel_calls.append(request)
            if kind == "image" and fault is None:
                if self.kill_after is not None and self.images_served >= self.kill_after:
                    raise KeyboardInterrupt("killed by the test")
                self.images_served += 1
        if self.delay:
            time.sleep(self.delay)
        if fault in ("429", "500", "502", "503", "400"):
            messages = {"429": "Too many concurrent aggregations.",
                        "500": "An internal error has occurred (request: 7f3e9).",
                        "502": "Bad Gateway", "503": "The service is currently unavailable.",
                        "400": "Image.select: Pattern 'B99' did not match any bands."}
            _raise_like_the_client(int(fault), messages[fault])
        if fault == "timeout":
            raise TimeoutError("The read operation timed out")
        if fault == "fatal":
            raise ee.EEException("Image.load: Image asset 'COPERNICUS/S2_SR_HARMONIZED/x' not found.")
        data = self.render(kind, grid, tree)
        if fault == "truncated":
            return data[: len(data) // 2]
        return data

    def render(self, kind: str, grid: dict, tree: Any) -> bytes:
        """Real GeoTIFF bytes on the requested grid: water in 700 m stripes every 2 km of easting."""
        from rasterio.io import MemoryFile
        from rasterio.transform import Affine

        w, h = grid["dimensions"]["width"], grid["dimensions"]["height"]
        at = grid["affineTransform"]
        transform = Affine(at["scaleX"], at["shearX"], at["translateX"], at["shearY"], at["scaleY"],
                           at["translateY"])
        xs = at["translateX"] + (np.arange(w) + 0.5) * at["scaleX"]
        ys = at["translateY"] + (np.arange(h) + 0.5) * at["scaleY"]
        X, Y = np.meshgrid(xs, ys)
        water = (X % 2000.0) < 700.0
        empty = at["translateX"] in self.empty_chips
        if kind == "mask":
            arr = water.astype("uint8")[None]
            if empty:
                arr[:] = 255
        else:
            bands = image_bands(tree)
            seed = int(hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:8], 16)
            rng = np.random.default_rng(seed)
            arr = rng.normal(1500, 150, (len(bands), h, w))
            for i, b in enumerate(bands):
                if b == "B8":
                    arr[i][water] = 300
                elif b == "B2":
                    arr[i][water] += 400
            arr = np.clip(arr, 1, 10000).astype("uint16")
            if empty:
                arr[:] = 0
        with MemoryFile() as mem:
            with mem.open(driver="GTiff", width=w, height=h, count=arr.shape[0], dtype=arr.dtype,
                          crs=grid["crsCode"], transform=transform, compress="deflate") as ds:
                ds.write(arr)
            return bytes(mem.read())

    # -- computeValue --------------------------------------------------------------------------------
    def computeValue(self, obj: Any) -> Any:
        tree = graph_tree(obj)
        with self.lock:
            self.value_calls.append(tree)
        if "Collection.reduceColumns" in function_names(tree):
            return [[s.index, s.time_ms, s.cloud, s.footprint] for s in self.scenes]
        raise AssertionError(f"unexpected computeValue: {sorted(function_names(tree))}")

    # -- batch ----------------------------------------------------------------------------------------
    def exportImage(self, request_id: str, params: dict) -> dict:
        tree = graph_tree(params["expression"])
        with self.lock:
            if request_id not in self.exports:              # the server deduplicates by request id
                op_id = hashlib.sha256(request_id.encode()).hexdigest()[:24].upper()
                self.exports[request_id] = {"name": f"projects/{self.project}/operations/{op_id}",
                                            "params": params, "tree": tree, "id": op_id}
                self.op_states.setdefault(op_id, "PENDING")
            rec = self.exports[request_id]
        return {"name": rec["name"], "metadata": {"@type": "type.googleapis.com/google.earthengine.v1alpha."
                                                           "OperationMetadata", "state": "PENDING",
                                                  "description": params.get("description"),
                                                  "type": "EXPORT_IMAGE"}}

    def _operation(self, rec: dict) -> dict:
        state = self.op_states[rec["id"]]
        op = {"name": rec["name"], "metadata": {"state": state, "description": rec["params"].get("description"),
                                                "type": "EXPORT_IMAGE"}}
        if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            op["done"] = True
        if state == "FAILED":
            op["error"] = {"message": "Export too large: specified 10000000000 pixels (max: 1)."}
        return op

    def listOperations(self, project: str | None = None) -> list[dict]:
        ops = [self._operation(rec) for rec in self.exports.values()]
        return ops[: self.list_limit] if self.list_limit is not None else ops

    def getTaskStatus(self, task_ids: list[str] | str) -> list[dict]:
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        self.status_calls.append(ids)
        by_id = {rec["id"]: rec for rec in self.exports.values()}
        to_task = {"PENDING": "READY", "RUNNING": "RUNNING", "SUCCEEDED": "COMPLETED", "FAILED": "FAILED",
                   "CANCELLED": "CANCELLED"}
        out = []
        for i in ids:
            rec = by_id.get(i)
            if rec is None:
                out.append({"id": i, "state": "UNKNOWN"})
            else:
                st = {"id": i, "state": to_task[self.op_states[i]], "description": rec["params"].get("description")}
                if self.op_states[i] == "FAILED":
                    st["error_message"] = "Export too large"
                out.append(st)
        return out


def image_bands(tree: Any) -> list[str]:
    """The bands an image graph selects (the ``Image.select`` that is not the SCL / label one)."""
    label_bands = (["SCL"], ["datamask"], ["occurrence"], ["label"])
    for inv in invocations(tree, "Image.select"):
        sel = constant(inv["arguments"]["bandSelectors"])
        if sel not in label_bands:
            return sel
    raise AssertionError("no band selection in the image graph")


def _raise_like_the_client(status: int, message: str) -> None:
    """What ``ee.data._execute_cloud_call`` raises for an HTTP error: an EEException with the
    server's message, raised inside the ``except HttpError`` (so the HttpError is its context)."""
    import ee
    import httplib2
    from googleapiclient.errors import HttpError

    resp = httplib2.Response({"status": status})
    body = json.dumps({"error": {"code": status, "message": message}}).encode()
    try:
        raise HttpError(resp, body, uri="https://earthengine.googleapis.com/v1/projects/test-project/image:"
                                        "computePixels")
    except HttpError as e:
        raise ee.data._translate_cloud_exception(e)  # noqa: B904 -- exactly as the client does


def main(argv: list[str]) -> int:
    """``python tests/support/ee_fakes.py ARGS``: the workbench CLI with this fake installed
    ($EE_FAKE_DELAY seconds per computePixels call)."""
    fake = FakeEarthEngine().install()
    fake.delay = float(os.environ.get("EE_FAKE_DELAY", "0"))
    from workbench.cli import main as workbench_main

    return workbench_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
