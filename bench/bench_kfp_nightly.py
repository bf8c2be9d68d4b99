"""What a scheduled Kubeflow run costs when nothing changed, measured under the backend emulation.

Compiles the pipeline for open-source KFP on a data folder, then runs it twice through every
step's real container command (tests/kfp_emulator.py, open-source rules, KFP's cache key):
run 1 on a fresh pipeline root, run 2 with nothing changed. Each command is started as a plain
subprocess (``--starter exec``, the default: interpreter start and imports included, as in a
pod, though without pulling or scheduling one) or from a warm fork server (``--starter fork``).

    .venv/bin/python bench/bench_kfp_nightly.py                        # the bundled 1,500 images
    .venv/bin/python bench/bench_kfp_nightly.py --data-dir /tmp/faces --starter fork

Writes bench/results/kfp_nightly.json and prints a table: per step, run 1 and run 2 seconds and
whether KFP's cache served it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv: list[str] | None = None) -> int:
    """Runs the measurement; returns the exit status."""
    from components import synthetic_data
    from components.trainer.config import TrainerConfig
    from pipeline import kubeflow
    from pipeline.config import PipelineConfig
    from tests import kfp_emulator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(REPO, "data", "utkface_synth"))
    parser.add_argument("--starter", choices=("exec", "fork"), default="exec")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "kfp_nightly.json"))
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        synthetic_data.generate(args.data_dir, synthetic_data.SyntheticSpec())
    work = tempfile.mkdtemp(prefix="facepipe-kfp-nightly-")
    try:
        config = PipelineConfig(data_dir=args.data_dir, pipeline_root=os.path.join(work, "root"),
                                serving_dir=os.path.join(work, "serving"),
                                trainer=TrainerConfig(epochs=args.epochs))
        spec = kubeflow.compile_pipeline(config, "facepipe:bench", os.path.join(work, "facepipe.yaml"))
        server = kfp_emulator.ForkServer() if args.starter == "fork" else None
        run_command = server or kfp_emulator.exec_command
        emulator = kfp_emulator.Emulator(spec, os.path.join(work, "backend"), run_command=run_command, timeout=3600)
        runs, seconds = [], []
        try:
            for _ in range(2):
                start = time.monotonic()
                runs.append(emulator.run())
                seconds.append(time.monotonic() - start)
        finally:
            if server is not None:
                server.close()
        versions = sorted(n for n in os.listdir(os.path.join(config.serving_dir, config.pipeline_name)) if n.isdigit())
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "data_dir": args.data_dir,
            "starter": args.starter,
            "load_average": os.getloadavg(),
            "run_seconds": seconds,
            "versions_after_run_2": versions,
            "steps": {
                name: {"run1_s": runs[0].tasks[name].seconds, "run2_s": runs[1].tasks[name].seconds,
                       "run2_cached": runs[1].tasks[name].cached}
                for name in runs[0].tasks
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'step':<18} {'run 1':>8} {'run 2':>8}")
    for name, step in result["steps"].items():
        cached = "  (cached)" if step["run2_cached"] else ""
        print(f"{name:<18} {step['run1_s']:>7.1f}s {step['run2_s']:>7.1f}s{cached}")
    print(f"{'total':<18} {seconds[0]:>7.1f}s {seconds[1]:>7.1f}s   versions after run 2: {len(versions)}; "
          f"load average {result['load_average'][0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
