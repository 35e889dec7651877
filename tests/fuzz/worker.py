"""The process that loads the variants: it builds the honest files once, then for each request
copies a format's folder, writes the variant's files, loads them through the library (and, when
asked, through the CLI, in process), and says how it ended. Its address space is capped
(RLIMIT_AS), so an allocation that a file's header talks it into fails here, as MemoryError,
not on the machine; the parent bounds each request's time and restarts the worker after a hang.

    python tests/fuzz/worker.py BASE_DIR FD_IN FD_OUT
"""
from __future__ import annotations

import gc
import io
import json
import os
import resource
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]  # tests/ (fixtures, fuzz) and the repo

MEM_HEADROOM = 1536 * 2 ** 20  # what a load may allocate beyond the worker's own footprint
# A load whose peak resident memory grows by more than this is a blow-up too, even under the cap:
# the files are a few kB, so this is what a header talked the loader into (uninitialized arrays
# are not resident until touched: numpy.empty of 1 GB passes the cap of address space only when
# it is reserved, and is caught here when it is filled).
MEM_GROWTH = 512 * 2 ** 20
MEMORY_ERRORS = ("can't allocate memory", "not enough memory", "out of memory", "bad_alloc",
                 "Cannot allocate memory")


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


# ---- the honest files -----------------------------------------------------------------------------

def _image_bytes(fmt: str, size, mode="RGB", seed=0) -> bytes:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 256, (h, w, 3 if mode == "RGB" else 1), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def build_bases(base: Path) -> dict:
    """The honest files of every format under base/, and what the loads share."""
    import numpy as np
    import torch
    from PIL import Image

    from fixtures import cifar_files, write_cifar_archive, write_cifar_folder, write_mnist, write_sfddd
    from fuzz.formats import FOLDER_FILES
    from stamp_model import write_stamp_mnist
    from train_helpers import tiny_config

    write_mnist(base / "mnist-gz", n_train=20, n_test=10, gz=True)
    write_mnist(base / "idx-raw", n_train=20, n_test=10, gz=False)
    files = cifar_files(per_batch=2)
    files.pop("readme.html")
    write_cifar_folder(base / "cifar-folder", files)
    write_cifar_archive(base / "cifar-tar", files)
    write_sfddd(base / "sfddd", n_drivers=1, per_class=1, n_test=2, size=(16, 12))
    for i, rel in enumerate(FOLDER_FILES):
        p = base / "folder" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}[p.suffix]
        p.write_bytes(_image_bytes(fmt, (8, 8), seed=i))
    user = base / "user"
    user.mkdir(parents=True, exist_ok=True)
    digit = np.full((28, 28), 250, np.uint8)
    digit[6:22, 12:16] = 10  # a dark 1 on paper
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, "PNG")
    (user / "digit.png").write_bytes(buf.getvalue())
    (user / "photo.jpg").write_bytes(_image_bytes("JPEG", (40, 30), seed=7))
    (user / "scan.bmp").write_bytes(_image_bytes("BMP", (20, 20), seed=8))

    # a model folder of a real (tiny) run: weights, meta, history and the resume state
    from probe.train.run import train
    data = write_stamp_mnist(base / "model-data", n_train=60, n_test=20)
    model = base / "model" / "tiny"
    torch.manual_seed(0)
    train(tiny_config(epochs=1, batch_size=16, width=0.25, augment=False), model, data_dir=data)
    build_cache(base / "cache", model, data)
    return {"base": base, "model": model, "data": data, "image": user / "digit.png"}


CACHE_SETTINGS = {
    "curves": {},
    "misclassified": {"split": "test", "max_images": 4},
    "saliency": {"class_name": "3", "split": "test", "n": 1, "selection": "any", "methods": "vanilla,gradcam",
                 "faithfulness": False, "wrong_too": 1},
    "fool-noise": {"n": 1, "target": "0", "steps": 3},
    "fool-dataset": {"n": 1, "target": "1", "steps": 3},
    "robustness": {"steps": 2, "limit": 4, "examples": 2},
}


def build_cache(out: Path, model: Path, data: Path) -> None:
    """results.json and arrays.safetensors of each analysis, as the report caches them (the
    figures left out: the fuzzing reads the results)."""
    from safetensors.torch import save as st_save

    from probe.analysis.registry import ANALYSES
    from probe.analysis.runner import context_for
    from probe.io import atomic_write_bytes, atomic_write_json
    from probe.models.folder import read_model_folder
    folder = read_model_folder(model)
    for name, kw in CACHE_SETTINGS.items():
        entry = ANALYSES[name]
        ctx = context_for(folder, device="cpu", data_dir=data)
        settings = entry.settings(**kw)
        result = entry.run([ctx] if entry.joint else ctx, settings)
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        arrays = {k: v.detach().cpu().contiguous() for k, v in result.arrays().items()}
        if arrays:
            atomic_write_bytes(d / "arrays.safetensors", st_save(arrays, metadata={"format": f"probe {name} arrays"}))
        atomic_write_json(d / "results.json", {"analysis": name, "model": {"name": folder.name},
                                               "settings": settings.to_json(), "results": result.to_json()})


# ---- one variant ----------------------------------------------------------------------------------

def _read_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _classify(e: BaseException) -> tuple[str, str]:
    from probe.errors import ProbeError
    tb = traceback.extract_tb(e.__traceback__)
    top = next((f for f in reversed(tb) if "/probe/" in f.filename), tb[-1] if tb else None)
    where = f"{Path(top.filename).name}:{top.lineno} {top.name}" if top else "?"
    detail = f"{type(e).__name__}: {str(e)[:300]} [{where}]"
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(m in str(e) for m in MEMORY_ERRORS)):
        return "memory", detail
    if isinstance(e, ProbeError):
        if "\n" in str(e) or "\r" in str(e):
            return "other", "a ProbeError of more than one line: " + detail
        return "probe_error", detail
    return "other", detail + "\n" + "".join(traceback.format_exception(e)[-6:])[-2000:]


def run_cli(argv: list[str]) -> tuple[str, str]:
    from typer.testing import CliRunner

    from probe.cli import app
    r = CliRunner().invoke(app, argv, catch_exceptions=True)
    err = r.stderr
    if r.exit_code == 0:
        return "ok", ""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if r.exit_code == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err:
        return "exit2", errors[0][:300]
    exc = r.exception
    if exc is not None and not isinstance(exc, SystemExit):
        kind, detail = _classify(exc)
        return ("memory" if kind == "memory" else "other"), f"CLI {' '.join(argv[:2])}: {detail}"
    return "other", f"CLI {' '.join(argv[:2])}: exit {r.exit_code}, stderr {err[-600:]!r}"


def _selftest(variant) -> tuple[str, str]:
    from probe.errors import DataError
    kind = variant[0]
    try:
        if kind == "alloc":
            block = bytearray(variant[1])  # zero-filled: resident
            del block
        elif kind == "sleep":
            time.sleep(variant[1])
        elif kind == "raise":
            raise {"ValueError": ValueError, "DataError": DataError}[variant[1]](variant[2])
        elif kind == "crash":
            os.kill(os.getpid(), 9)
        return "ok", ""
    except BaseException as e:  # noqa: BLE001
        return _classify(e)


def run_one(fmt_name: str, variant, cli: bool, draw: bool, bases: dict, cache: dict, work: Path) -> dict:
    from fuzz import formats, names
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shared = dict(bases, draw=draw)
    out = {"library": None, "cli": None}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt_name == "selftest":  # the harness's own check: each kind of ending, on purpose
                out["library"] = _selftest(variant)
            elif fmt_name == "hostile-names":
                out["library"] = ("ok" if names.run_names(variant, work, shared, draw) == "ok" else "other", "")
                if cli:
                    root = work / "hostile" / "models"
                    out["cli"] = [run_cli(["models", "list", "--root", str(root)])]
            else:
                fmt = formats.FORMATS[fmt_name]
                src = bases["base"] / fmt.base
                if fmt.base not in cache:
                    cache[fmt.base] = _read_files(src)
                files = cache[fmt.base]
                folder = work / Path(fmt.base).name
                shutil.copytree(src, folder)
                changes = formats.realize(fmt, variant, files, shared)
                shared["changed"] = set(changes)
                for rel, data in changes.items():
                    p = folder / rel
                    if data is None:
                        p.unlink(missing_ok=True)
                    else:
                        p.parent.mkdir(parents=True, exist_ok=True)
                        p.write_bytes(data)
                try:
                    fmt.load(folder, shared)
                    out["library"] = ("ok", "")
                except BaseException as e:  # noqa: BLE001 - classified, never swallowed silently
                    if isinstance(e, (KeyboardInterrupt, SystemExit)):
                        raise
                    out["library"] = _classify(e)
                if cli and fmt.cli is not None:
                    argvs = fmt.cli(folder, shared)
                    out["cli"] = [run_cli(a) for a in ([argvs] if isinstance(argvs[0], str) else argvs)]
    except AssertionError as e:
        out["library"] = ("other", f"check failed: {e}"[:600])
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        out["library"] = _classify(e)
    finally:
        import matplotlib.pyplot as plt
        plt.close("all")
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_growth"] = grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
    if grew > MEM_GROWTH and out["library"][0] != "memory":
        out["library"] = ("memory", f"peak resident memory grew by {grew / 2 ** 20:,.0f} MiB "
                                    f"(ended as {out['library'][0]}: {out['library'][1][:200]})")
    gc.collect(0)
    return out


def main() -> None:
    from multiprocessing.connection import Connection
    base, fd_in, fd_out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    conn_in, conn_out = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib
    matplotlib.use("Agg")
    import torch
    torch.set_num_threads(1)
    import probe.cli  # noqa: F401 - everything a load may need, imported before the cap
    import probe.report.build  # noqa: F401
    import probe.report.pdf  # noqa: F401
    from fuzz import names  # noqa: F401
    marker = base / "built.json"
    if not marker.is_file():
        bases = build_bases(base)
        marker.write_text(json.dumps({k: str(v) for k, v in bases.items()}))
    bases = {k: Path(v) for k, v in json.loads(marker.read_text()).items()}
    names.make_placeholders(base / "placeholders")
    cap = _vm_size() + MEM_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    conn_out.send(("ready", {"cap": cap}))
    cache: dict = {}
    work = base.parent / f"work-{os.getpid()}"
    while True:
        try:
            msg = conn_in.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        _, fmt_name, variant, cli, draw = msg
        conn_out.send(run_one(fmt_name, variant, cli, draw, bases, cache, work))


if __name__ == "__main__":
    main()
