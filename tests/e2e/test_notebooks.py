"""The notebooks in notebooks/ run top to bottom on a real Jupyter kernel, and are committed with
the outputs of one such run (so a reader on a code host sees the results and the plots).

Each notebook runs on a fresh ``python3`` kernel of this interpreter (a kernelspec written for
the test, so a ``python3`` kernel installed elsewhere for the user cannot stand in for it), in
an empty working directory. Any cell that raises fails the test (nbclient's
``CellExecutionError``), as does a cell that runs longer than ``CELL_TIMEOUT``. Two probe cells
are added to the copy that runs: the first records the kernel's interpreter, the last the pid of
the JVM the notebook started; once the kernel has shut down, that JVM must be gone.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Seconds any one cell may run (the slowest cell, cross-validation, takes ~15 s on 2 cores).
CELL_TIMEOUT = 300
#: Seconds a notebook's JVM may take to exit after its kernel has shut down.
JVM_EXIT_TIMEOUT = 60

PROBE_KERNEL = """\
import json as _json, sys as _sys
print(_json.dumps({"prefix": _sys.prefix, "executable": _sys.executable}))"""

PROBE_JVM = """\
import json as _json
try:
    from pyspark import SparkContext as _SparkContext
    _proc = getattr(getattr(_SparkContext, "_gateway", None), "proc", None)
except ImportError:
    _proc = None
print(_json.dumps({"jvm_pid": _proc.pid if _proc is not None else None}))"""


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "pipeline.ipynb"}, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_holds_the_outputs_of_one_run(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb.get("nbformat") == 4, f"{path.name}: expected nbformat 4"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", \
        f"{path.name}: expected the python3 kernel in its metadata"
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert all(cell["source"] for cell in code), f"{path.name}: empty code cell"
    rerun = (f"run it top to bottom before committing (PYTHONPATH=$PWD jupyter execute --inplace "
             f"notebooks/{path.name})")
    counts = [cell.get("execution_count") for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}; {rerun}"
    errors = [i for i, cell in enumerate(code) if any(o["output_type"] == "error" for o in cell["outputs"])]
    assert not errors, f"{path.name}: code cells {errors} hold errors; {rerun}"
    plots = [cell for cell in code if ".plot(" in "".join(cell["source"])]
    assert plots and all(any("image/png" in o.get("data", {}) for o in cell["outputs"]) for cell in plots), \
        f"{path.name}: every history.plot() cell must show its figure; {rerun}"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting to be reaped counts as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _printed_json(cell) -> dict:
    text = "".join(o.get("text", "") for o in cell.outputs
                   if o.output_type == "stream" and o.name == "stdout")
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    # A python3 kernelspec that runs this interpreter, and nothing else to choose from.
    kernels = tmp_path / "kernels"
    (kernels / "python3").mkdir(parents=True)
    (kernels / "python3" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (sparkdl tests)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)

    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE_KERNEL))
    nb.cells.append(nbformat.v4.new_code_cell(PROBE_JVM))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, km=km, kernel_name="python3", timeout=CELL_TIMEOUT,
                                     startup_timeout=120, resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    # The kernel starts its own JVM: never the gateway of a driver this test may run inside.
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET")}
    client.execute(cleanup_kc=True, env=env)  # raises CellExecutionError on a failing cell; shuts the kernel down
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")

    kernel = _printed_json(nb.cells[0])
    assert os.path.realpath(kernel["prefix"]) == os.path.realpath(sys.prefix), kernel
    assert os.path.realpath(kernel["executable"]) == os.path.realpath(sys.executable), kernel

    jvm_pid = _printed_json(nb.cells[-1])["jvm_pid"]
    if jvm_pid is not None:
        deadline = time.monotonic() + JVM_EXIT_TIMEOUT
        while _alive(jvm_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(jvm_pid), f"{path.name}: the notebook's JVM (pid {jvm_pid}) outlived its kernel"
    leftovers = sorted(p.name for p in workdir.iterdir())
    assert not leftovers, f"{path.name} left files in its working directory: {leftovers}"
