"""A warm interpreter that runs ``python -m MODULE ARGS`` commands in forked children.

The KFP emulator (tests/kfp_emulator.py) runs dozens of container commands; each would spend
10-15 s of CPU importing TensorFlow, TFX and Beam before doing a few seconds of work. This
server imports them once, then forks per command: the child changes to the command's folder
and environment, sends its output to the command's log, and runs the module as ``__main__``
(runpy), exactly what ``python -m`` does after start-up. Nothing has run TensorFlow in the
parent when it forks (imports only), so no thread or session state is inherited.

Protocol (one JSON object per line): request ``{"argv", "cwd", "env", "log"}``; replies
``{"pid": N}`` when the child starts and ``{"status": S, "cpu": seconds}`` when it ends.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
import traceback

PRELOAD = (
    "tensorflow",
    "tf_keras",
    "apache_beam",
    "tensorflow_data_validation",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tfx.v1",
    "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
    "tfx.components.statistics_gen.executor",
    "tfx.components.example_validator.executor",
    "tfx.components.transform.executor",
    "tfx.components.trainer.executor",
    "tfx.components.evaluator.executor",
    "tfx.components.schema_gen.import_schema_gen.executor",
)


def _child(request: dict) -> int:
    argv = request["argv"]
    if len(argv) < 3 or argv[1] != "-m":
        print(f"forkserver runs 'python -m MODULE ...' commands only, got {argv[:3]}", file=sys.stderr)
        return 64
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.argv = [argv[2], *argv[3:]]
    try:
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001  (report any failure as the command's own)
        traceback.print_exc()
        return 1
    return 0


def serve() -> None:
    """Preloads the stack, then forks one child per request line on stdin."""
    for name in PRELOAD:
        importlib.import_module(name)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = _child(request)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status, usage = os.wait4(pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
        sys.stdout.write(json.dumps({"status": os.waitstatus_to_exitcode(status), "cpu": cpu}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
