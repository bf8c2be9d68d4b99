"""Run logs: everything written to stderr goes to the run's log file; known noise stays off the console.

TensorFlow, Beam, TFMA and the Google Cloud client libraries print warnings that say nothing
about the run (listed in KNOWN_NOISE). They are kept in the log file, where a reader can
still find them, and dropped from the console. This works at the file-descriptor level, so it
also covers messages printed by TensorFlow's C++ code. Light module: no TensorFlow import.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sys
import threading
from collections.abc import Iterator

# Known noise on this stack (TFX 1.16, TF 2.16, Beam 2.59, TFMA 0.47, Python 3.10).
KNOWN_NOISE: tuple[str, ...] = (
    r"FutureWarning: You are using a non-supported Python version",
    r"Support for google-cloud-storage < 3\.0\.0 will be removed",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"oneDNN custom operations are on",
    r"oneDNN supports DT_BOOL only on platforms with AVX-512",
    r"TF-TRT Warning: Could not find TensorRT",
    # TFMA's rates and PR-AUC on slices without positives or negatives:
    r"tensorflow_model_analysis/.*RuntimeWarning: (invalid value|divide by zero) encountered in divide",
    r"tf_record_iterator \(from tensorflow\.python\.lib\.io\.tf_record\) is deprecated",
    r"Couldn't find python-snappy",
    r"ArtifactQuery\.property_predicate is not supported",
    r"Examples artifact does not have payload_format custom property",
    r"TFMA support for TF 2\.0 is currently in beta",
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"Could not find cuda drivers on your machine, GPU will not be used",
    r"Local rendezvous is aborting with status: OUT_OF_RANGE: End of sequence",  # end of a tf.data epoch
)
_NOISE = re.compile("|".join(KNOWN_NOISE))


def new_run_id() -> str:
    """A sortable, unique-enough run id, e.g. 20261124T081156.699120."""
    return datetime.datetime.now().strftime("%Y%m%dT%H%M%S.%f")


def is_noise(line: str) -> bool:
    """Whether a console line is known noise."""
    return bool(_NOISE.search(line))


class _Filter:
    """Copies lines to the log file; forwards non-noise lines to the console.

    A line that continues a noise line (indented, like the source line Python prints after a
    warning, or 'Instructions for updating:' blocks) is treated as noise too.
    """

    def __init__(self, log, console):
        self._log = log
        self._console = console
        self._in_noise = False

    def feed(self, line: str) -> None:
        self._log.write(line)
        self._log.flush()
        continuation = line[:1] in (" ", "\t") or line.startswith(("Instructions for updating", "Use eager"))
        if is_noise(line):
            self._in_noise = True
        elif not continuation:
            self._in_noise = False
        if not self._in_noise:
            self._console.write(line)
            self._console.flush()


@contextlib.contextmanager
def stderr_to_log(log_file: str) -> Iterator[None]:
    """Routes file descriptor 2 through a filter into log_file for the duration.

    Args:
      log_file: the run's log; created with its folder.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    console = os.fdopen(os.dup(saved_fd), "w", buffering=1, errors="replace")
    log = open(log_file, "a", buffering=1, errors="replace")  # noqa: SIM115  (closed below)
    line_filter = _Filter(log, console)

    def pump() -> None:
        with os.fdopen(read_fd, "r", errors="replace") as reader:
            for line in reader:
                try:
                    line_filter.feed(line)
                except Exception:  # noqa: BLE001  (never let the pump die: the pipe would fill and block)
                    pass

    thread = threading.Thread(target=pump, name="stderr-to-log", daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)  # closes the pipe's last write end: the pump sees EOF
        os.close(saved_fd)
        thread.join(timeout=10)
        log.close()
        console.close()
