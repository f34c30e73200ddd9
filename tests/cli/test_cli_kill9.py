"""kill -9 anywhere, then rerun: `prepare`, `generate`, `ablate` and `train` resume.

Each case starts the CLI in a subprocess and kills it with SIGKILL at some point, in one of two ways:
- from outside, once some of its outputs have appeared (the test polls the file system, then `os.kill`);
- from inside, at an exact point: `_BOOT` wraps one library function so that its N-th call sends SIGKILL to
  its own process (before the call, after it, or, for a CSV row, half-way through writing the row).
SIGKILL cannot be caught or cleaned up after, so both are a real `kill -9`. The rerun (in this process,
through the same `reg2rg_lib.cli.main`) must complete; every output must parse and equal the output of a run
that was never killed (file checksums, rows); and nothing that was complete may be computed again (prepare's
"reused" count, `generate` calls, resumed checkpoints, ablation runs not retrained).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from reg2rg_lib.cli import main
from reg2rg_lib.experiments import runner
from reg2rg_lib.infer import generate as generate_module
from reg2rg_lib.infer.predictions import PredictionWriter, read_predictions
from reg2rg_lib.model import Reg2RG
from reg2rg_lib.train.checkpoints import list_checkpoints
from reg2rg_lib.train.loop import read_train_log

# Runs the CLI with argv; with KILL9_AT="module:Qual.name:N:mode" the N-th call of that function kills the
# process (mode before | after | torn: torn is for AppendOnlyCSV.write / write_rows, which then writes half of
# what it was given, flushes, dies).
_BOOT = r"""
import importlib, os, signal, sys
spec = os.environ.get("KILL9_AT")
if spec:
    mod_name, qual, nth, mode = spec.split(":")
    owner = importlib.import_module(mod_name)
    *path, attr = qual.split(".")
    for part in path:
        owner = getattr(owner, part)
    original, calls = getattr(owner, attr), [0]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def wrapper(*args, **kwargs):
        calls[0] += 1
        hit = calls[0] == int(nth)
        if hit and mode == "before":
            die()
        if hit and mode == "torn":
            import csv, io
            self, values = args
            buf = io.StringIO()
            rows = values if attr == "write_rows" else [values]
            csv.writer(buf, lineterminator=self._writer.dialect.lineterminator).writerows(rows)
            half = buf.getvalue()[: len(buf.getvalue()) // 2]
            if hasattr(self, "_fd"):  # an unbuffered writer
                os.write(self._fd, half.encode("utf-8"))
            else:
                self._file.write(half)
                self._file.flush()
            die()
        out = original(*args, **kwargs)
        if hit:
            die()
        return out

    setattr(owner, attr, wrapper)
from reg2rg_lib.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

TIMEOUT_S = 180  # one killed command on a busy 2-core machine


def _env(kill_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("KILL9_AT", None)
    if kill_at:
        env["KILL9_AT"] = kill_at
    return env


def kill_at(argv: list[str], point: str) -> None:
    """Run the CLI with `argv` in a subprocess that SIGKILLs itself at `point` (see `_BOOT`); it must die
    there."""
    res = subprocess.run(
        [sys.executable, "-c", _BOOT, *argv],
        env=_env(point),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert res.returncode == -signal.SIGKILL, (
        f"not killed at {point} (rc {res.returncode}): {res.stderr[-1500:]}"
    )


def kill_when(argv: list[str], ready: Callable[[], bool]) -> None:
    """Run the CLI with `argv` in a subprocess and `kill -9` it from here as soon as `ready()` is true."""
    proc = subprocess.Popen([sys.executable, "-c", _BOOT, *argv], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ready():
            assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()[-1500:]}"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.005)
        assert proc.poll() is None, "finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def cli(argv: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> str:
    """`reg2rg argv` in this process on one thread (as the killed subprocesses run): it must succeed; its
    stdout."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out if capsys is not None else ""


def checksums(folder: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, str]:
    """sha256 of every file under `folder` by relative path (hidden temporary files included: none may be
    left).

    A safetensors file is hashed by its metadata and tensors: the order of its header's metadata keys varies
    from one write to the next, so equal files need not have equal bytes."""
    def digest(path: Path) -> str:
        if path.suffix != ".safetensors":
            return hashlib.sha256(path.read_bytes()).hexdigest()
        with safe_open(str(path), framework="pt") as f:
            h = hashlib.sha256(json.dumps(f.metadata(), sort_keys=True).encode())
            for key in sorted(f.keys()):
                h.update(key.encode() + f.get_tensor(key).numpy().tobytes())
        return h.hexdigest()

    return {str(p.relative_to(folder)): digest(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and not skip(str(p.relative_to(folder)))}


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> Iterator[list[tuple]]:
    """Record the calls of `owner.name` (their arguments) while the block runs."""
    calls: list[tuple] = []
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    yield calls
    monkeypatch.setattr(owner, name, original)


# ---- prepare -----------------------------------------------------------------------------------------------
PREP_COUNTS = re.compile(r"\((\d+) computed, (\d+) reused")


@pytest.fixture(scope="module")
def prepared(smoke, tmp_path_factory) -> Path:
    """A prep cache of the smoke benchmark from a `reg2rg prepare` that was never killed."""
    out = tmp_path_factory.mktemp("prep_ref") / "cache"
    assert (
        main(["prepare", "--profile", "smoke", "--data", str(smoke.data), "--out", str(out), "--quiet"]) == 0
    )
    return out


def _prep_argv(smoke, out: Path) -> list[str]:
    return ["prepare", "--profile", "smoke", "--data", str(smoke.data), "--out", str(out), "--quiet"]


def _case_files(cache: Path) -> list[Path]:
    return sorted((cache / "cases").glob("*.safetensors"))


def _assert_same_cache(cache: Path, reference: Path) -> None:
    """The same files (no temporary file left), each case file with the same tensors and metadata, and the
    same manifest apart from the computed/reused counts."""
    def manifest_free(rel: str) -> bool:
        return rel == "manifest.json"

    assert checksums(cache, manifest_free) == checksums(reference, manifest_free)
    mine, ref = (json.loads((c / "manifest.json").read_text()) for c in (cache, reference))
    for man in (mine, ref):
        man["counts"].pop("computed"), man["counts"].pop("reused")
    assert mine == ref


@pytest.mark.parametrize("point", ["external: 3 case files written",
                                   # a case file written, not yet renamed
                                   "reg2rg_lib.data.prep:write_bytes:5:after",
                                   # every case, no manifest
                                   "reg2rg_lib.data.prep:write_json_atomic:1:before"],
                         ids=["outside-after-3-cases", "case-file-not-renamed", "before-the-manifest"])
def test_prepare_killed_reuses_every_finished_case(smoke, prepared, tmp_path, capsys, point):
    out = tmp_path / "cache"
    argv = _prep_argv(smoke, out)
    if point.startswith("external"):
        kill_when(argv, lambda: len(_case_files(out)) >= 3)
    else:
        kill_at(argv, point)
    assert not (out / "manifest.json").exists() or point.startswith("external")
    finished = len(_case_files(out))
    total = len(_case_files(prepared))
    assert 0 < finished <= total
    computed, reused = map(int, PREP_COUNTS.search(cli(argv, capsys)).groups())
    assert (computed, reused) == (total - finished, finished)
    _assert_same_cache(out, prepared)


# ---- train -------------------------------------------------------------------------------------------------
STEPS, EVERY = 8, 2


def _train_argv(smoke, run: Path, *extra: str) -> list[str]:
    return ["train", "--profile", "smoke", "--out", str(run), "--cache", str(smoke.cache), "--tokenizer",
            str(smoke.tokenizer), "--max-steps", str(STEPS), "--save-every", str(EVERY), *extra]


@pytest.fixture(scope="module")
def train_reference(smoke, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("train_ref") / "run"
    cli(_train_argv(smoke, run))
    return run


def _log_rows(run: Path) -> list[tuple[float, ...]]:
    return [(r["step"], r["epoch"], r["loss"], r["lr"]) for r in read_train_log(run)]


def _checkpoint_files(run: Path) -> dict[str, str]:
    """Checksums of the checkpoints' weights, exported model and trainer state (the pickled optimizer and RNG
    states are compared by the weights and losses they lead to)."""
    def not_compared(rel: str) -> bool:
        return not (rel.endswith(".safetensors") or rel.endswith(".json") or rel.endswith("COMPLETE"))

    return checksums(run / "checkpoints", not_compared)


@pytest.mark.parametrize("point", [
    "reg2rg_lib.train.loop:_optimizer_step:1:before",  # during step 1: no checkpoint yet
    "reg2rg_lib.train.checkpoints:fsync_tree:3:before",  # step 4's checkpoint written but not marked COMPLETE
    # step 6 published, step 2 not yet pruned
    "reg2rg_lib.train.checkpoints:CheckpointWriter._prune:3:before",
    "external: step 4 checkpoint visible",
], ids=["during-step-1", "checkpoint-not-complete", "before-pruning", "outside-after-step-4"])
def test_train_killed_resumes_from_the_newest_complete_checkpoint(smoke, train_reference, tmp_path, point):
    run = tmp_path / "run"
    argv = _train_argv(smoke, run)
    if point.startswith("external"):
        kill_when(argv, lambda: (run / "checkpoints" / "step-00000004" / "COMPLETE").is_file())
    else:
        kill_at(argv, point)
    assert not (run / "train_summary.json").exists()
    survivors = list_checkpoints(run / "checkpoints")
    newest = survivors[-1][0] if survivors else None
    for _step, folder in survivors:  # what survived parses
        assert load_file(str(folder / "trainable.safetensors"))
        json.loads((folder / "trainer_state.json").read_text())
    assert len(read_train_log(run)) >= (newest or 0)  # the log holds at least the checkpointed steps

    cli(argv + ["--resume"])
    summary = json.loads((run / "train_summary.json").read_text())
    reference = json.loads((train_reference / "train_summary.json").read_text())
    assert summary["resumed_from"] == newest  # nothing complete trained again (None: nothing was saved)
    assert (summary["steps"], summary["weights_sha256"]) == (reference["steps"], reference["weights_sha256"])
    assert _log_rows(run) == _log_rows(train_reference)
    # no .tmp-step-* left, the same 2 kept
    assert _checkpoint_files(run) == _checkpoint_files(train_reference)


# ---- generate ----------------------------------------------------------------------------------------------
def _gen_argv(smoke, trained: Path, out: Path) -> list[str]:
    return [
        "generate",
        "--checkpoint",
        str(trained),
        "--data",
        str(smoke.cache),
        "--out",
        str(out),
        "--profile",
        "smoke",
        "--batch-size",
        "1",
    ]


@pytest.fixture(scope="module")
def generated(smoke, trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen_ref") / "predictions.csv"
    cli(_gen_argv(smoke, trained, out))
    return out


@pytest.mark.parametrize("point", [
    "external: one row written",
    # the second batch (of one row: batch size 1) cut half-way
    "reg2rg_lib.io:AppendOnlyCSV.write_rows:2:torn",
    "reg2rg_lib.infer.generate:write_csv_atomic:1:before",  # every row written, not yet put in case order
], ids=["outside-after-row-1", "row-2-cut-half-way", "before-the-reordering"])
def test_generate_killed_keeps_its_rows_and_writes_only_the_rest(smoke, trained, generated, tmp_path,
                                                                  monkeypatch, point):
    out = tmp_path / "predictions.csv"
    argv = _gen_argv(smoke, trained, out)
    if point.startswith("external"):
        kill_when(argv, lambda: out.is_file() and len(read_predictions(out)) >= 1)
    else:
        kill_at(argv, point)
    kept = read_predictions(out)  # parses: a cut row is left out
    total = len(read_predictions(generated))
    assert 0 < len(kept) <= total
    if "torn" in point:
        assert not out.read_text().endswith("\n") and len(kept) == 1

    with (
        counting(monkeypatch, Reg2RG, "generate") as hf,
        counting(monkeypatch, generate_module, "greedy_generate") as kit,
        counting(monkeypatch, PredictionWriter, "write_batch") as rows,
    ):
        cli(argv)
    assert len(hf) + len(kit) == len(rows) == total - len(kept)  # batch size 1: one decode per missing row
    assert out.read_bytes() == generated.read_bytes()
    assert {r["AccNum"]: r for r in read_predictions(out)} | {r["AccNum"]: r for r in kept} == {
        r["AccNum"]: r for r in read_predictions(generated)}
    assert not list(tmp_path.glob(".predictions.csv*"))  # no temporary file left


# ---- ablate ------------------------------------------------------------------------------------------------
def _profile_copy(smoke, dest: Path) -> Path:
    """The smoke benchmark, prep cache (with its ViT features) and tokenizer, without any run."""
    for part in ("data", "cache", "tokenizer"):
        shutil.copytree(smoke.root / part, dest / part)
    return dest


def _ablate_argv(out: Path) -> list[str]:
    # a fixed grid: llm_scratch-2x128 is the same model as full (reused, never trained); runs that need other
    # inputs (a pretrained ViT) stay out
    return [
        "ablate",
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--runs",
        "full,no_rra,llm_scratch-2x128",
        "--quiet",
    ]


@pytest.fixture(scope="module")
def ablated(smoke, tmp_path_factory) -> Path:
    out = _profile_copy(smoke, tmp_path_factory.mktemp("ablate_ref") / "smoke")
    cli(_ablate_argv(out))
    return out


def _metrics(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("point", [
    "external: no_rra's step-2 checkpoint visible",  # full finished, no_rra half trained
    "reg2rg_lib.experiments.runner:write_summary:1:after",  # summary.json written, ablation_stats.csv not
], ids=["outside-no_rra-half-trained", "before-the-stats"])
def test_ablate_killed_skips_finished_runs_and_resumes_the_rest(smoke, ablated, tmp_path, monkeypatch, point):
    out = _profile_copy(smoke, tmp_path / "smoke")
    argv = _ablate_argv(out)
    if point.startswith("external"):
        kill_when(
            argv, lambda: (out / "runs" / "no_rra" / "checkpoints" / "step-00000002" / "COMPLETE").is_file()
        )
    else:
        kill_at(argv, point)
    labels = runner.test_labels(runner.RunPaths(out))
    evaluated = {
        name for name in ("full", "no_rra") if runner.metrics_of(out / "runs" / name, labels) is not None
    }
    assert "full" in evaluated
    no_rra = out / "runs" / "no_rra"
    half_trained = runner.trained_steps(no_rra) is None and list_checkpoints(no_rra / "checkpoints")
    assert half_trained or not point.startswith("external")

    with (
        counting(monkeypatch, runner, "train_run") as trains,
        counting(monkeypatch, PredictionWriter, "write_batch") as rows,
    ):
        cli(argv)
    # llm_scratch-2x128 is full's model
    assert [Path(args[1]).name for args, _ in trains] == sorted({"no_rra"} - evaluated)
    if "no_rra" in evaluated:
        assert not rows  # no report generated again
    if half_trained:  # no_rra's training went on from its newest checkpoint
        assert json.loads((no_rra / "train_summary.json").read_text())["resumed_from"] == half_trained[-1][0]
    assert _metrics(out) == _metrics(ablated)
    assert (out / "ablation_stats.csv").read_bytes() == (ablated / "ablation_stats.csv").read_bytes()
    for name in ("full", "no_rra"):
        run, ref = out / "runs" / name, ablated / "runs" / name
        assert (run / "predictions.csv").read_bytes() == (ref / "predictions.csv").read_bytes()
        assert _log_rows(run) == _log_rows(ref)
        with open(run / "metrics" / "nlg_evaluation_results.csv", newline="") as f:
            assert list(csv.reader(f))
