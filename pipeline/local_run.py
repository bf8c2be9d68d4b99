"""Running the pipeline with LocalDagRunner, with progress lines and a summary."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from absl import logging as absl_logging
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx
from tfx.dsl.compiler import compiler, constants
from tfx.orchestration.portable import runtime_parameter_utils

from pipeline import beam_canary
from pipeline.config import PipelineConfig
from pipeline.logs import new_run_id
from pipeline.pipeline import create_pipeline
from pipeline.report import build, index
from pipeline.run_summary import summarize

SUMMARY_FILE = "last_run_summary.json"
LOCK_FILE = ".run.lock"


class RunLockError(RuntimeError):
    """Another run holds the pipeline root."""


@contextlib.contextmanager
def run_lock(pipeline_root: str, run_id: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Holds an exclusive lock on a pipeline root for one run.

    Two runs on one root would race on ML Metadata's SQLite file and on the serving
    folder; the second one waits up to ``wait_seconds`` and then fails with a clear message.

    Args:
      pipeline_root: the run's pipeline root (local).
      run_id: written into the lock file so a waiting run can say who holds it.
      wait_seconds: how long to wait for the lock; 0 fails at once.

    Raises:
      RunLockError: the lock is still held after wait_seconds.
    """
    os.makedirs(pipeline_root, exist_ok=True)
    path = os.path.join(pipeline_root, LOCK_FILE)
    handle = open(path, "a+")  # noqa: SIM115  (held for the whole run)
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise RunLockError(
                        f"another run is using pipeline root {pipeline_root} ({holder}); wait for it to finish, "
                        "pass --wait-for-lock SECONDS, or use another --pipeline-root"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, run {run_id}, since {datetime.datetime.now().isoformat(timespec='seconds')}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


class _ProgressHandler(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished.' log lines into progress lines."""

    def __init__(self, emit_line: Callable[[str], None]):
        super().__init__(logging.INFO)
        self._emit_line = emit_line
        self._started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg not in ("Component %s is running.", "Component %s is finished.") or not record.args:
            return
        node_id = str(record.args[0])
        now = time.monotonic()
        if record.msg.endswith("running."):
            self._started[node_id] = now
            self._emit_line(f"[start] {node_id}")
        else:
            seconds = now - self._started.get(node_id, now)
            self._emit_line(f"[done ] {node_id:<30} {seconds:7.1f} s")


@contextlib.contextmanager
def _log_to(path: str, progress: Callable[[str], None]) -> Iterator[None]:
    """Sends all INFO logs to a file; the console gets progress lines only.

    Failures still reach the console through the run summary (and the exit status). Python
    warnings go to stderr, which the runner routes through pipeline.logs (file + filtered console).
    """
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler.setLevel(logging.INFO)
    progress_handler = _ProgressHandler(progress)
    root, absl_logger, tf_logger = logging.getLogger(), logging.getLogger("absl"), logging.getLogger("tensorflow")
    saved_levels = [(lg, lg.level) for lg in (root, absl_logger, tf_logger)]
    console = [h for lg in (root, absl_logger, tf_logger) for h in lg.handlers if isinstance(h, logging.StreamHandler)]
    saved_handler_levels = [(h, h.level) for h in console]
    for h in console:
        h.setLevel(logging.CRITICAL)
    root.setLevel(logging.INFO)
    # Through absl's --verbosity flag: a plain setLevel is undone when a component parses absl flags.
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger.setLevel(logging.INFO)
    tf_logger.setLevel(logging.INFO)
    root.addHandler(file_handler)
    if not tf_logger.propagate:
        tf_logger.addHandler(file_handler)
    absl_logger.addHandler(progress_handler)
    try:
        yield
    finally:
        root.removeHandler(file_handler)
        tf_logger.removeHandler(file_handler)
        absl_logger.removeHandler(progress_handler)
        file_handler.close()
        for lg, level in saved_levels:
            lg.setLevel(level)
        for h, level in saved_handler_levels:
            h.setLevel(level)


def run_local(
    config: PipelineConfig,
    out: TextIO = sys.stdout,
    run_id: str | None = None,
    wait_for_lock: float = 0.0,
) -> dict[str, Any]:
    """Runs the pipeline with LocalDagRunner and returns the run summary.

    Progress goes to ``out`` one line per component; the full log goes to
    ``<pipeline_root>/logs/<run id>.log``; the summary to ``<pipeline_root>/last_run_summary.json``.

    Args:
      config: the run's settings; metadata_path must be set.
      out: where progress lines go.
      run_id: the pipeline run id (a new one by default); names the log file.
      wait_for_lock: seconds to wait when another run holds the pipeline root.

    Returns:
      The summary (see run_summary.summarize) plus ``error`` (None when the run succeeded)
      and ``log_file``.

    Raises:
      RunLockError: another run holds the pipeline root.
      beam_canary.WorkerCheckError: the Beam profile's workers did not run the canary job (one line);
        nothing of the pipeline ran.
    """
    if not config.metadata_path:
        raise ValueError("a local run needs metadata_path (a SQLite file)")
    run_id = run_id or new_run_id()
    with run_lock(config.pipeline_root, run_id, wait_for_lock):
        return _run_locked(config, out, run_id)


def log_path(pipeline_root: str, run_id: str) -> str:
    """Where a run's log file lives."""
    return os.path.join(pipeline_root, "logs", f"{run_id}.log")


def _run_locked(config: PipelineConfig, out: TextIO, run_id: str) -> dict[str, Any]:
    assert config.metadata_path
    log_file = log_path(config.pipeline_root, run_id)
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(config.metadata_path)), exist_ok=True)

    def progress(line: str) -> None:
        print(line, file=out, flush=True)

    pipeline_ir = compiler.Compiler().compile(create_pipeline(config))
    check_beam_workers(config, log_file, progress)
    # A run id we choose (not the runner's) lets the summary find exactly this run in MLMD.
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline_ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id}
    )
    error = None
    started = time.monotonic()
    with _log_to(log_file, progress):
        try:
            tfx.orchestration.LocalDagRunner().run_with_ir(pipeline_ir)
        except Exception as e:  # noqa: BLE001  (reported in the summary and the exit status)
            # The traceback goes to the log file; the console gets the one-line error.
            logging.getLogger(__name__).info("pipeline run %s failed", run_id, exc_info=True)
            error = f"{type(e).__name__}: {e}"
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    )
    summary = summarize(store, run_id)
    summary["error"] = error
    summary["log_file"] = log_file
    summary.update(_write_report(store, run_id, config.pipeline_root, log_file, config.report_images))
    summary.update(_update_index(store, run_id, config, error, log_file))
    summary["seconds"] = round(time.monotonic() - started, 1)
    with open(os.path.join(config.pipeline_root, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary


def check_beam_workers(config: PipelineConfig, log_file: str, progress: Callable[[str], None]) -> None:
    """Runs the worker check (pipeline.beam_canary) when the Beam steps run on a remote runner.

    Before LocalDagRunner, so a dead worker pool fails the run in bounded time instead of leaving
    ImageExampleGen waiting for a worker forever. Once per run: every Beam step of a local run uses
    the same profile, and they run within minutes of each other.

    Args:
      config: the run's settings (beam_pipeline_args, worker_check_timeout_s).
      log_file: the canary's Beam logs are appended here.
      progress: where the check's progress line goes.

    Raises:
      beam_canary.WorkerCheckError: no worker ran the canary job, or the workers cannot run this pipeline.
    """
    target = beam_canary.target_of(config.beam_pipeline_args)
    if target is None:
        return
    if config.worker_check_timeout_s == 0:
        progress(f"[check] Beam workers ({target.describe()}): not checked (worker check timeout 0)")
        return
    bound = config.worker_check_timeout_s or target.default_timeout_s()
    progress(f"[check] Beam workers ({target.describe()}): canary job, up to {bound:g} s")
    check = beam_canary.check_workers(config.beam_pipeline_args, bound, log_path=log_file)
    assert check is not None
    progress(f"[check] Beam workers ok: the canary job ran in {check.seconds:g} s")


def _write_report(
    store: metadata_store.MetadataStore, run_id: str, pipeline_root: str, log_file: str, images: bool = True
) -> dict[str, Any]:
    """Writes the run's HTML/JSON report and model card; returns {"report": html path, "report_error": ...}."""
    try:
        paths = build.write_report(build.build_report(store, run_id, images=images),
                                   build.report_dir(pipeline_root, run_id))
    except Exception as e:  # noqa: BLE001  (a report failure is shown, but must not hide the run's own result)
        with open(log_file, "a") as f:
            f.write(f"report for run {run_id} failed:\n{traceback.format_exc()}")
        return {"report": None, "report_error": f"{type(e).__name__}: {e}"}
    return {"report": paths["html"], "report_error": None}


def _update_index(
    store: metadata_store.MetadataStore, run_id: str, config: PipelineConfig, error: str | None, log_file: str
) -> dict[str, Any]:
    """Adds this run (failed and refused ones too) to <pipeline root>/reports/index.html; {"index", "index_error"}."""
    try:
        path = index.update_after_run(store, config.pipeline_root, run_id, config.pipeline_name, error)
    except Exception as e:  # noqa: BLE001  (like the report: shown, never hiding the run's own result)
        with open(log_file, "a") as f:
            f.write(f"index of runs, after run {run_id}, failed:\n{traceback.format_exc()}")
        return {"index": None, "index_error": f"{type(e).__name__}: {e}"}
    return {"index": path, "index_error": None}


# The summary's optional entries, printed in this order when set.
_OPTIONAL_LINES = (
    ("error", "  RUN FAILED: {}"),
    ("report", "  report: {}"),
    ("report_error", "  REPORT FAILED: {} (details in the log)"),
    ("index", "  index of runs: {}"),
    ("index_error", "  INDEX FAILED: {} (details in the log)"),
)


def format_summary(summary: dict[str, Any], config: PipelineConfig) -> str:
    """Renders the summary for the console."""
    lines = ["", f"Run {summary['run_id']} ({summary['seconds']} s)"]
    cached = [n for n, s in summary["components"].items() if s == "cached"]
    if cached:
        lines.append(f"  from cache: {', '.join(cached)}")
    if summary["ingested"] is not None:
        split_text = ", ".join(f"{k} {v}" for k, v in summary["ingested_by_split"].items())
        lines.append(f"  images ingested: {summary['ingested']} ({split_text})")
    if summary["quarantined"] is not None:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary["quarantined_by_reason"].items()))
        lines.append(f"  quarantined: {summary['quarantined']}" + (f" ({reasons})" if reasons else ""))
    if summary.get("files_found") is not None:
        spans = summary.get("spans")
        span_text = f" in span {spans[0]}" if spans and spans[0] == spans[1] else (
            f" in spans {spans[0]}-{spans[1]}" if spans else ""
        )
        lines.append(f"  files found: {summary['files_found']}{span_text} (every one ingested or quarantined)")
    if drift := summary.get("drift"):
        lines.append(f"  label drift vs previous span: {drift.get('status')}: {drift.get('message', '')}".rstrip(": "))
    if summary["per_label_auc"]:
        lines.append("  per-label AUC (eval split):")
        for name, auc in summary["per_label_auc"].items():
            lines.append(f"    {name:<14} {'n/a' if auc is None else f'{auc:.3f}'}")
    if summary["macro_auc"] is not None:
        lines.append(f"  macro AUC: {summary['macro_auc']:.3f} (floor {config.gates.min_macro_auc:g})")
    if summary["blessed"] is not None:
        if summary["blessed"] and summary.get("baseline_model"):
            lines.append(
                f"  blessed: yes (macro AUC at or above {config.gates.min_macro_auc:g}, and no drop of more than "
                f"{config.gates.max_auc_regression:g} against the serving model {summary['baseline_model']})"
            )
        elif summary["blessed"]:
            lines.append(
                f"  blessed: yes (macro AUC at or above {config.gates.min_macro_auc:g}; no baseline: "
                f"{summary.get('baseline_note') or 'no model serving'})"
            )
        else:
            lines.append("  blessed: NO: " + "; ".join(summary["blessing_reasons"] or ["see the Evaluator output"]))
    if summary.get("gates"):
        lines.append("  gates:")
        for gate in summary["gates"]:
            mark = {True: "pass", False: "FAIL", None: "n/a"}[gate["passed"]]
            lines.append(f"    {mark:<4} {gate['name']}: {gate['summary']}")
    lines.append(f"  pushed model: {summary['pushed_model'] or 'none'}")
    lines += [template.format(summary[key]) for key, template in _OPTIONAL_LINES if summary.get(key)]
    lines.append(f"  log: {summary['log_file']}")
    lines.append(f"  summary: {os.path.join(config.pipeline_root, SUMMARY_FILE)}")
    return "\n".join(lines)
