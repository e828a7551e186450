#!/usr/bin/env python3
"""Runs vigil's notebooks headless, or checks that they are committed without outputs.

    .venv/bin/python scripts/run-notebooks.py --exports var/exports        # execute them all
    .venv/bin/python scripts/run-notebooks.py --exports DIR --only review_funnel --out /tmp/nb
    .venv/bin/python scripts/run-notebooks.py --check-stripped             # no outputs committed?
    .venv/bin/python scripts/run-notebooks.py --strip                      # remove outputs in place

Execution uses nbclient with a `python3` kernel started from this interpreter (run it with the
project's `.venv/bin/python`, where `scripts/setup-python.sh --notebooks` installed the
requirements), in `notebooks/` as the working directory, with `VIGIL_EXPORTS` set to
`--exports`. Notebooks run in memory: the committed files are never written (executed copies go
to `--out` when it is given). `train_classifier.ipynb` writes its models, golden scores and model
card into a temporary `VIGIL_MODEL_DIR` (and its evaluation sets into `VIGIL_EVAL_DIR`) rather than over
the committed `models/`, and the golden scores it produced are then compared with the committed
ones (`models/*.golden.jsonl`). Training is seeded and single-threaded (the BLAS and OpenMP
thread counts are pinned to one for every kernel), but floating-point results still differ across
processors and BLAS kernels (OpenBLAS picks kernels per CPU), so the comparison allows
`GOLDEN_TOLERANCE` per score and demands the same any-harm verdict for every golden text.

Exits 1 when a cell raises (naming the notebook and the cell), when the retrained golden scores
differ, or, with `--check-stripped`, when a notebook holds outputs or execution counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TRAINING = "train_classifier"
#: Golden scores the training notebook writes, each beside the model whose threshold it uses.
GOLDEN = {"harm-linear.golden.jsonl": "harm-linear.onnx", "harm-semantic.golden.jsonl": "harm-semantic.onnx"}
#: The encoder's golden token ids and embeddings: ids must match exactly.
ENCODER_GOLDEN = "encoder.golden.jsonl"
#: Largest difference allowed between a retrained golden score (a probability) and the committed
#: one. Retraining on another processor moves scores by about 1e-5 (OpenBLAS kernels and the float16
#: rounding of weights); a model that learnt something else moves them by far more. What passing
#: guarantees: every golden text's score of every head within 0.002 of the committed model's, the
#: any-harm threshold within 0.002, and the same any-harm verdict for every golden text that is not
#: within 0.002 of the threshold.
GOLDEN_TOLERANCE = 2e-3
#: Thread counts pinned for training kernels: one thread makes reductions run in one order.
PINNED_THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

try:
    import nbformat
    import zmq
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    from traitlets import default
except ImportError as error:  # pragma: no cover - a setup problem, reported plainly
    sys.exit(f"run-notebooks: {error.name} is missing: run scripts/setup-python.sh --notebooks "
             "and use .venv/bin/python")


class ThisInterpreter(KernelSpecManager):
    """Every kernel name resolves to an IPython kernel of the interpreter running this script,
    whatever kernelspecs the user or the system has installed."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python 3 ({sys.prefix})", language="python",
            metadata={"supported_encryption": ["curve"]},
        )


class ThisInterpreterKernel(KernelManager):
    """Starts kernels of this interpreter, their loopback traffic encrypted with CurveZMQ where
    pyzmq supports it (ipykernel warns about plain TCP otherwise)."""

    @default("kernel_spec_manager")
    def _this_interpreter(self) -> KernelSpecManager:
        return ThisInterpreter(data_dir=self.data_dir)

    @default("transport_encryption")
    def _curve(self) -> str:
        return "auto" if zmq.has("curve") else "disabled"


def notebooks(only: list[str]) -> list[Path]:
    """The notebooks to handle: all of `notebooks/*.ipynb`, or those named by `--only`."""
    found = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not only:
        return found
    wanted = {name.removesuffix(".ipynb") for name in only}
    unknown = wanted - {path.stem for path in found}
    if unknown:
        sys.exit(f"run-notebooks: no notebook named {', '.join(sorted(unknown))} in {NOTEBOOKS}")
    return [path for path in found if path.stem in wanted]


def unstripped(path: Path) -> list[str]:
    """What keeps a notebook from being committed as is: cells with outputs or counts."""
    problems = []
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {index} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {index} has execution_count {cell.execution_count}")
        if "execution" in cell.get("metadata", {}):
            problems.append(f"cell {index} has execution timing metadata")
    return problems


def strip(path: Path) -> bool:
    """Removes outputs, execution counts and timings (and the Python version an editor
    recorded); True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    nb.metadata.get("language_info", {}).pop("version", None)  # the editor's Python version
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + ("" if after.endswith("\n") else "\n"), encoding="utf-8")
    return after != before


def execute(path: Path, timeout: int, out: Path | None) -> str | None:
    """Runs one notebook in memory; None when every cell ran, else which cell failed and how."""
    nb = nbformat.read(path, as_version=4)
    current = {"cell": -1}
    client = NotebookClient(
        nb, kernel_manager_class=ThisInterpreterKernel, kernel_name="python3", timeout=timeout,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        on_cell_start=lambda cell, cell_index, **_: current.update(cell=cell_index),
    )
    failure = None
    try:
        client.execute()
    except CellExecutionError as error:
        failure = f"cell {current['cell']} raised {error.ename}: {error.evalue}\n{plain(str(error))}"
    except CellTimeoutError:
        failure = f"cell {current['cell']} ran past the {timeout} s timeout"
    except Exception as error:  # the kernel died or could not start
        failure = f"cell {current['cell']}: {type(error).__name__}: {error}"
    finally:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out / path.name)
    return failure


def plain(text: str) -> str:
    """`text` without the terminal colour codes of IPython's tracebacks."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def read_golden(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def model_threshold(model: Path) -> float:
    """The any-harm operating threshold in a model's `vigil.threshold` metadata."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return float(props["vigil.threshold"])


ADVICE = ("re-run scripts/train-classifier.sh and commit the models, or find what made training "
          "depend on more than the data and the seed")


def compare_golden(retrained: Path, committed: Path, model: str) -> str | None:
    """None when the retrained golden scores match the committed ones within the tolerance (see
    `GOLDEN_TOLERANCE` for what that guarantees); `model` holds the any-harm threshold."""
    if not retrained.exists():
        return f"the notebook wrote no {retrained.name}"
    new, old = read_golden(retrained), read_golden(committed)
    if [g["text"] for g in new] != [g["text"] for g in old]:
        return f"the golden texts of {retrained.name} differ from the committed ones"
    if [g.get("routed") for g in new] != [g.get("routed") for g in old]:
        return f"a golden text of {retrained.name} took another route through the cascade: {ADVICE}"
    new_threshold = model_threshold(retrained.parent / model)
    old_threshold = model_threshold(committed.parent / model)
    if not abs(new_threshold - old_threshold) <= GOLDEN_TOLERANCE:
        return (f"the retrained any-harm threshold {new_threshold:.4f} differs from the committed "
                f"{old_threshold:.4f} by more than {GOLDEN_TOLERANCE}: {ADVICE}")
    worst = 0.0
    for a, b in zip(new, old):
        if a["scores"].keys() != b["scores"].keys():
            return f"the heads differ: {sorted(a['scores'])} against {sorted(b['scores'])}"
        worst = max([worst] + [abs(a["scores"][h] - b["scores"][h]) for h in a["scores"]])
        near = abs(b["scores"]["any"] - old_threshold) <= GOLDEN_TOLERANCE
        if not near and (a["scores"]["any"] >= new_threshold) != (b["scores"]["any"] >= old_threshold):
            return f"golden text {a['text'][:40]!r} changed its any-harm verdict: {ADVICE}"
    if not math.isfinite(worst) or worst > GOLDEN_TOLERANCE:
        return (f"retrained golden scores differ from {committed.relative_to(ROOT)} by up to "
                f"{worst:.3g} (tolerance {GOLDEN_TOLERANCE}): {ADVICE}")
    return None


def compare_encoder_golden(written: Path, committed: Path) -> str | None:
    """None when the notebook's encoder golden file has the committed texts and token ids, and
    embeddings within 1e-4 of the committed ones (the encoder is not trained: only the
    processor's floating point may differ)."""
    if not written.exists():
        return f"the notebook wrote no {written.name}"
    new, old = read_golden(written), read_golden(committed)
    if [(g["text"], g["ids"]) for g in new] != [(g["text"], g["ids"]) for g in old]:
        return f"the encoder's golden texts or token ids differ from {committed.relative_to(ROOT)}"
    worst = max((abs(a - b) for n, o in zip(new, old) for a, b in zip(n["embedding"], o["embedding"])), default=0.0)
    if not worst <= 1e-4:
        return f"the encoder's golden embeddings differ from {committed.relative_to(ROOT)} by up to {worst:.3g}"
    return None


def compare_all_golden(model_dir: Path) -> str | None:
    """The first golden file the training notebook wrote that does not match the committed one."""
    committed = ROOT / "models"
    for golden, model in GOLDEN.items():
        failure = compare_golden(model_dir / golden, committed / golden, model)
        if failure:
            return failure
    return compare_encoder_golden(model_dir / ENCODER_GOLDEN, committed / ENCODER_GOLDEN)


def training_data() -> Path | None:
    """The shared training data: `$VIGIL_DATA`, else `../shared/data` beside this checkout, else
    beside the repository it was cloned from (a CI clone of a local checkout lives elsewhere)."""
    if os.environ.get("VIGIL_DATA"):
        return Path(os.environ["VIGIL_DATA"])
    candidates = [ROOT.parent / "shared" / "data"]
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "config", "remote.origin.url"],
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        origin = ""
    if origin and "://" not in origin and ":" not in origin.split("/")[0]:
        candidates.append(Path(origin.removeprefix("file:")).resolve().parent / "shared" / "data")
    return next((c for c in candidates if c.is_dir()), None)


def run(args) -> int:
    exports = Path(args.exports).resolve()
    os.environ["VIGIL_EXPORTS"] = str(exports)
    os.environ.update(PINNED_THREADS)  # inherited by every kernel
    data = training_data()
    if data is not None:
        os.environ["VIGIL_DATA"] = str(data)
    scratch = tempfile.TemporaryDirectory(prefix="vigil-notebooks-")
    model_dir = Path(args.model_dir).resolve() if args.model_dir else Path(scratch.name) / "models"
    os.environ["VIGIL_MODEL_DIR"] = str(model_dir)
    eval_dir = Path(args.eval_dir).resolve() if args.eval_dir else Path(scratch.name) / "eval"
    os.environ["VIGIL_EVAL_DIR"] = str(eval_dir)
    out = Path(args.out).resolve() if args.out else None
    print(f"exports: {exports}" + ("" if exports.is_dir() else " (missing: every table empty)"))

    passed, failed = [], []
    with scratch:
        for path in notebooks(args.only):
            started = time.monotonic()
            failure = execute(path, args.timeout, out)
            if failure is None and path.stem == TRAINING and not args.no_golden:
                failure = compare_all_golden(model_dir)
            seconds = time.monotonic() - started
            if failure is None:
                passed.append(path.name)
                print(f"ok      {path.name} ({seconds:.1f} s)", flush=True)
            else:
                failed.append(path.name)
                print(f"FAILED  {path.name} ({seconds:.1f} s): {failure}", flush=True)
    if out is not None:
        print(f"executed copies in {out}")
    for name in failed:
        print(f"failed: {name}")
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", metavar="DIR",
                        help="the export directory the notebooks read (VIGIL_EXPORTS)")
    parser.add_argument("--only", metavar="NAME", action="append", default=[],
                        help="run only this notebook (file name, with or without .ipynb); repeatable")
    parser.add_argument("--out", metavar="DIR", help="write the executed notebooks here")
    parser.add_argument("--timeout", type=int, default=900, metavar="S",
                        help="seconds one cell may run (default 900)")
    parser.add_argument("--model-dir", metavar="DIR",
                        help="where train_classifier writes its model (default: a temporary directory)")
    parser.add_argument("--eval-dir", metavar="DIR",
                        help="where train_classifier writes its evaluation sets (default: a temporary directory)")
    parser.add_argument("--no-golden", action="store_true",
                        help="do not compare the retrained golden scores with models/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check-stripped", action="store_true",
                      help="execute nothing; fail when a notebook holds outputs or execution counts")
    mode.add_argument("--strip", action="store_true",
                      help="execute nothing; remove outputs and execution counts in place")
    args = parser.parse_args()

    if args.check_stripped:
        bad = {p.name: unstripped(p) for p in notebooks(args.only)}
        bad = {name: problems for name, problems in bad.items() if problems}
        for name, problems in bad.items():
            print(f"{name}: {'; '.join(problems)}")
        if bad:
            print("strip them with: .venv/bin/python scripts/run-notebooks.py --strip")
            return 1
        print("notebooks are stripped")
        return 0
    if args.strip:
        for path in notebooks(args.only):
            if strip(path):
                print(f"stripped {path.relative_to(ROOT)}")
        return 0
    if not args.exports:
        parser.error("--exports DIR is required to execute the notebooks")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
