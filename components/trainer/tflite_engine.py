"""The frozen embedding pass through TFLite (XNNPACK) where that is faster than TensorFlow.

The Trainer runs every training image through the frozen backbone once (embeddings.embed). On CPUs,
the same network converted by ``tf.lite.TFLiteConverter`` and run by ``tf.lite.Interpreter``
(XNNPACK kernels) is faster than a ``tf.function`` around the tf-keras model; see
docs/performance.md for the measurements that set the constants below.

- The converted backbone (with its pooling) is cached on local disk, keyed on the backbone name,
  image size, a digest of its weights, and the TensorFlow version, so a run converts it once.
- Threads: the CPUs this process may use (components.cpus), not ``os.cpu_count()``.
- ``auto`` uses TFLite when it pays off (ENGINE_AUTO_MIN_IMAGES_*), and TensorFlow when the
  conversion fails (an op TFLite lacks), with a warning: never silently.
- Before any TFLite embedding is kept, the first batch is embedded by both and compared
  (EmbeddingCheck, logged); a difference beyond the tolerance falls back to TensorFlow in
  ``auto`` and stops the run in ``tflite``.
- In ``auto`` the second batch is a speed probe: TensorFlow, TFLite with every available CPU
  and TFLite with one thread each embed it, and the fastest embeds the rest (logged): on CPUs
  shared with other work, multi-threaded XNNPACK can be slower than TensorFlow.

The exported SavedModel does not change: it is built from the TensorFlow backbone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from components import cpus
from components.trainer.config import EMBEDDING_ENGINES

logger = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = EMBEDDING_ENGINES
AUTO, TF, TFLITE = ENGINES

# auto: TFLite from this many training images on. Measured on the 2-core machine with
# EfficientNet-Lite0 at 128 px (docs/performance.md, 2026-11-30): a cached conversion costs
# ~0.1 s to load and the check one TensorFlow batch, which TensorFlow's own path pays too (its
# trace), so TFLite pays off from a few batches on; a conversion (~3-5 s) is earned back after
# ENGINE_AUTO_MIN_IMAGES_UNCACHED images at the measured per-image saving.
ENGINE_AUTO_MIN_IMAGES_CACHED = 256
ENGINE_AUTO_MIN_IMAGES_UNCACHED = 4000

# The check: largest |TFLite - TF| over the first batch <= EMBEDDING_RTOL * max(1, largest |TF|).
# float32 kernels that sum in another order (XNNPACK vs Eigen) differ by ~1e-6 relative per
# layer; measured 1.4e-5 absolute on EfficientNet-Lite0 embeddings whose largest value is ~5
# (3e-6 relative). 1e-3 relative leaves 300x room for deeper or larger-valued backbones and is
# still far below what moves the head's probabilities: embeddings perturbed by 1e-3 of their
# scale moved the trained head's probabilities by at most ~1e-3 (docs/performance.md), against
# the 0.02 the exported models are held to. A wrong conversion (a missing normalization, a
# swapped channel order) is off by whole units.
EMBEDDING_RTOL = 1e-3

CACHE_FORMAT = 1  # bump when the conversion itself changes


def default_cache_dir() -> str:
    """Where converted backbones are kept between runs: ~/.cache/facepipe/tflite."""
    return os.path.join(os.path.expanduser("~"), ".cache", "facepipe", "tflite")


def weights_digest(model: tf_keras.Model) -> str:
    """sha256 over every weight of a model (names, shapes and values, in order)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{weight.name}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cache_key(backbone_name: str, image_size: int, extractor: tf_keras.Model) -> str:
    """The cache key of a converted feature extractor: backbone, image size, weights, TF version."""
    document = {
        "format": CACHE_FORMAT,
        "backbone": backbone_name,
        "image_size": int(image_size),
        "weights": weights_digest(extractor),
        "tensorflow": tf.__version__,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


def convert_feature_extractor(extractor: tf_keras.Model, image_size: int) -> bytes:
    """Converts images (float32 0-255 [B, S, S, 3]) -> embeddings [B, C] to a float32 TFLite model.

    The concrete function is converted without a trackable object: TFLite then freezes the
    graph's variables directly instead of saving and re-loading a SavedModel of the Keras model
    (measured 4.7 s instead of 28 s for EfficientNet-Lite0 under load; the output is the same).

    Raises:
      Exception: whatever the converter raises (e.g. an op TFLite does not support).
    """

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")])
    def embed(images: tf.Tensor) -> tf.Tensor:
        return extractor(images, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([embed.get_concrete_function()])
    return converter.convert()


@dataclasses.dataclass(frozen=True)
class Converted:
    """A converted feature extractor.

    Attributes:
      model: the .tflite flatbuffer.
      cache_hit: read from the cache (no conversion this run).
      seconds: time to read or convert (and write the cache).
      path: the cache file.
    """

    model: bytes
    cache_hit: bool
    seconds: float
    path: str


def cached_path(cache_dir: str, key: str) -> str:
    """The cache file of a key."""
    return os.path.join(cache_dir, f"embedder-{key}.tflite")


def load_or_convert(
    extractor: tf_keras.Model,
    backbone_name: str,
    image_size: int,
    cache_dir: str,
    convert: Callable[[tf_keras.Model, int], bytes] = convert_feature_extractor,
    key: str | None = None,
) -> Converted:
    """The converted feature extractor from the cache, or converted now and cached.

    Args:
      extractor: images -> embeddings (model.build_feature_extractor).
      backbone_name: for the key.
      image_size: for the key and the conversion.
      cache_dir: cache folder (created if needed); written atomically (temp file + rename).
      convert: the converter (tests inject a failing one).
      key: the cache key if already computed.

    Returns:
      The Converted model.

    Raises:
      Exception: the conversion failed.
    """
    start = time.monotonic()
    path = cached_path(cache_dir, key or cache_key(backbone_name, image_size, extractor))
    if os.path.isfile(path):
        with open(path, "rb") as f:
            content = f.read()
        return Converted(content, True, time.monotonic() - start, path)
    content = convert(extractor, image_size)
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".embedder-", suffix=".tmp", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)  # concurrent trainers may both convert; either file is complete
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Converted(content, False, time.monotonic() - start, path)


class TFLiteEmbedder:
    """Runs a converted feature extractor on batches of images with the XNNPACK interpreter.

    Args:
      model_content: the .tflite flatbuffer (images [B, S, S, 3] float32 -> embeddings [B, C]).
      num_threads: interpreter threads (default: components.cpus.available_cpus()).
    """

    def __init__(self, model_content: bytes, num_threads: int | None = None):
        self.num_threads = num_threads or cpus.available_cpus()
        self._interpreter = tf.lite.Interpreter(model_content=model_content, num_threads=self.num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = -1

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float32 [B, S, S, 3] 0-255 -> float32 [B, C]."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.shape[0] != self._batch:  # the last batch is smaller: re-plan once for it
            self._interpreter.resize_tensor_input(self._input, list(images.shape))
            self._interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()  # releases the GIL: tf.data keeps decoding meanwhile
        return self._interpreter.get_tensor(self._output).copy()


@dataclasses.dataclass(frozen=True)
class EmbeddingCheck:
    """TFLite embeddings compared with TensorFlow's on one batch.

    Attributes:
      images: images compared.
      max_abs_diff: largest |TFLite - TF| over all embedding values.
      scale: largest |TF| value.
      tolerance: EMBEDDING_RTOL * max(1, scale).
      passed: max_abs_diff <= tolerance.
    """

    images: int
    max_abs_diff: float
    scale: float
    tolerance: float
    passed: bool


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray, rtol: float = EMBEDDING_RTOL) -> EmbeddingCheck:
    """Compares candidate embeddings with reference ones (see EMBEDDING_RTOL)."""
    if reference.shape != candidate.shape:
        return EmbeddingCheck(len(reference), float("inf"), float(np.abs(reference).max()), 0.0, False)
    diff = float(np.abs(candidate.astype(np.float64) - reference).max())
    scale = float(np.abs(reference).max())
    tolerance = rtol * max(1.0, scale)
    return EmbeddingCheck(len(reference), diff, scale, tolerance, bool(np.isfinite(diff) and diff <= tolerance))


def choose_engine(requested: str, num_images: int | None, cached: bool) -> tuple[str, str]:
    """The engine to try first, and why.

    Args:
      requested: auto, tf or tflite.
      num_images: training images to embed (None: unknown, treated as large).
      cached: whether a converted backbone is in the cache.

    Returns:
      (tf or tflite, reason).
    """
    if requested not in ENGINES:
        raise ValueError(f"unknown embedding engine {requested!r}; choose one of {', '.join(ENGINES)}")
    if requested != AUTO:
        return requested, f"--embedding-engine {requested}"
    needed = ENGINE_AUTO_MIN_IMAGES_CACHED if cached else ENGINE_AUTO_MIN_IMAGES_UNCACHED
    state = "cached" if cached else "not cached: needs a conversion"
    if num_images is not None and num_images < needed:
        return TF, f"auto: {num_images} images < {needed} (TFLite backbone {state})"
    count = num_images if num_images is not None else "unknown number of"
    return TFLITE, f"auto: {count} images >= {needed} (TFLite backbone {state})"


@dataclasses.dataclass
class EngineReport:
    """What the embedding pass ran on, for logs, TrainResult and benchmarks.

    Attributes:
      requested: auto, tf or tflite.
      used: tf or tflite (what produced the embeddings).
      reason: why.
      threads: TFLite interpreter threads (0 for tf).
      cache_hit: whether the converted backbone came from the cache (None: not tried).
      convert_seconds: seconds to read or convert it.
      check: the comparison with TensorFlow on the first batch (None: not run).
      probe: ms per image of TF and each TFLite thread count on the second batch (auto only).
      fallback: why TensorFlow was used after TFLite was chosen ("" when it was not).
    """

    requested: str
    used: str
    reason: str
    threads: int = 0
    cache_hit: bool | None = None
    convert_seconds: float = 0.0
    check: EmbeddingCheck | None = None
    probe: dict[str, float] = dataclasses.field(default_factory=dict)
    fallback: str = ""

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return dataclasses.asdict(self)


class CheckedEmbedder:
    """images -> embeddings for embeddings.embed: TFLite, checked against TensorFlow, and in auto timed against it.

    The first call embeds its batch with TensorFlow and TFLite and compares them (EmbeddingCheck,
    logged). When they differ beyond the tolerance, ``auto`` keeps TensorFlow for the whole pass
    (warning logged, recorded in the report) and ``tflite`` raises.

    In ``auto`` the second call is a speed probe: TensorFlow and each TFLite thread count time the
    same batch (each also checked against TensorFlow), and the fastest embeds the rest. Multi-threaded
    XNNPACK waits for all its threads at every layer, so on CPUs shared with other work it can be
    far slower than one thread or than TensorFlow (measured under a load average of 8 on 2 cores:
    TF 50, TFLite 1 thread 66, 2 threads 27 images/s; on a quiet machine 2 threads win).

    Args:
      tf_embed: the TensorFlow path (embeddings.tf_embedder(extractor)).
      lites: TFLite embedders by thread count; the first is the one checked on the first batch and
        the only one used without the probe.
      report: updated in place (used, threads, check, probe, fallback).
      strict: raise instead of falling back, and no probe (``--embedding-engine tflite``).
    """

    def __init__(
        self,
        tf_embed: Callable[[tf.Tensor], np.ndarray],
        lites: dict[int, Callable[[np.ndarray], np.ndarray]],
        report: EngineReport,
        strict: bool,
    ):
        self._tf = tf_embed
        self._lites = dict(lites)
        self._threads = next(iter(self._lites))
        self._report = report
        self._strict = strict
        self._state = "check"  # -> "probe" (auto) -> "lite" | "tf"

    def __call__(self, images: tf.Tensor) -> np.ndarray:
        if self._state == "lite":
            return self._lites[self._threads](images.numpy())
        if self._state == "tf":
            return self._tf(images)
        if self._state == "probe":
            return self._probe(images)
        reference = self._tf(images)
        pixels = images.numpy()
        candidate = self._lites[self._threads](pixels)
        check = compare_embeddings(reference, candidate)
        self._report.check = check
        logger.info(
            "embedding check on %d images: max |TFLite - TF| = %.3g, tolerance %.3g (%g x max(1, %.3g)): %s",
            check.images, check.max_abs_diff, check.tolerance, EMBEDDING_RTOL, check.scale,
            "passed" if check.passed else "FAILED",
        )
        if not check.passed:
            message = (
                f"TFLite embeddings differ from TensorFlow's by {check.max_abs_diff:.3g} "
                f"(tolerance {check.tolerance:.3g}) on {check.images} images"
            )
            if self._strict:
                raise RuntimeError(f"{message}; --embedding-engine tflite refuses them (use auto or tf)")
            return self._fall_back(message, reference)
        if self._strict:
            self._state = "lite"
        else:
            for threads, lite in self._lites.items():
                if threads != self._threads:
                    lite(pixels)  # warm-up: the first invoke plans memory
            self._state = "probe"
        return candidate

    def _probe(self, images: tf.Tensor) -> np.ndarray:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        reference = self._tf(images)
        timings["tf"] = time.perf_counter() - start
        pixels = images.numpy()
        outputs: dict[int, np.ndarray] = {}
        for threads, lite in self._lites.items():
            start = time.perf_counter()
            outputs[threads] = lite(pixels)
            timings[f"tflite_{threads}_threads"] = time.perf_counter() - start
        valid = {t: o for t, o in outputs.items() if compare_embeddings(reference, o).passed}
        self._report.probe = {k: round(v * 1000 / len(reference), 3) for k, v in timings.items()}  # ms per image
        fastest = min(valid, key=lambda t: timings[f"tflite_{t}_threads"], default=None)
        summary = ", ".join(f"{k} {v:.2f} ms" for k, v in self._report.probe.items())
        if fastest is None or timings[f"tflite_{fastest}_threads"] >= timings["tf"]:
            logger.info("speed probe on %d images (per image): %s: TensorFlow is faster here", len(reference), summary)
            return self._fall_back(f"TFLite was not faster than TensorFlow on this machine now ({summary})", reference)
        logger.info("speed probe on %d images (per image): %s: TFLite with %d thread(s)",
                    len(reference), summary, fastest)
        self._threads, self._lites = fastest, {fastest: self._lites[fastest]}  # the others' memory goes
        self._report.threads = fastest
        self._state = "lite"
        return valid[fastest]

    def _fall_back(self, message: str, reference: np.ndarray) -> np.ndarray:
        logger.warning("%s: embedding with TensorFlow instead", message)
        self._state = "tf"
        self._lites = {}
        self._report.used, self._report.fallback = TF, message
        return reference


def select_embedder(
    requested: str,
    extractor: tf_keras.Model,
    tf_embed: Callable[[tf.Tensor], np.ndarray],
    backbone_name: str,
    image_size: int,
    num_images: int | None,
    cache_dir: str | None = None,
    num_threads: int | None = None,
    convert: Callable[[tf_keras.Model, int], bytes] = convert_feature_extractor,
) -> tuple[Callable[[tf.Tensor], np.ndarray], EngineReport]:
    """The images -> embeddings function for the embedding pass, and a report of the choice.

    Args:
      requested: auto, tf or tflite (--embedding-engine).
      extractor: the TensorFlow feature extractor (the exported model's, frozen).
      tf_embed: the TensorFlow path over it (tensor in, numpy out).
      backbone_name / image_size: the cache key and the conversion.
      num_images: training images to embed (auto's decision), None if unknown.
      cache_dir: converted-backbone cache (default_cache_dir() when None or "").
      num_threads: TFLite threads (default: the CPUs this process may use).
      convert: the converter (tests inject a failing one).

    Returns:
      (embed function, report; report.used says tf until the first batch decides, see CheckedEmbedder).

    Raises:
      Exception: with ``tflite``, a failed conversion.
    """
    cache_dir = cache_dir or default_cache_dir()
    key = cache_key(backbone_name, image_size, extractor) if requested != TF else ""
    cached = bool(key) and os.path.isfile(cached_path(cache_dir, key))
    engine, reason = choose_engine(requested, num_images, cached)
    report = EngineReport(requested=requested, used=engine, reason=reason)
    if engine == TF:
        logger.info("embedding engine: TensorFlow (%s)", reason)
        return tf_embed, report
    try:
        converted = load_or_convert(extractor, backbone_name, image_size, cache_dir, convert, key)
        lite = TFLiteEmbedder(converted.model, num_threads)
    except Exception as exc:  # any converter or interpreter failure: an unsupported op, a bad file
        if requested == TFLITE:
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        message = f"TFLite conversion of {backbone_name} failed ({type(exc).__name__}: {first_line})"
        logger.warning("%s: embedding with TensorFlow instead", message)
        report.used, report.fallback = TF, message
        return tf_embed, report
    lites: dict[int, Callable[[np.ndarray], np.ndarray]] = {lite.num_threads: lite}
    if requested == AUTO and lite.num_threads > 1:  # the speed probe also tries one thread (CheckedEmbedder)
        lites[1] = TFLiteEmbedder(converted.model, 1)
    report.threads, report.cache_hit, report.convert_seconds = lite.num_threads, converted.cache_hit, round(
        converted.seconds, 2
    )
    logger.info(
        "embedding engine: TFLite, %d threads (%s); backbone %s in %.1f s (%s)",
        lite.num_threads, reason, "read from the cache" if converted.cache_hit else "converted and cached",
        converted.seconds, converted.path,
    )
    return CheckedEmbedder(tf_embed, lites, report, strict=requested == TFLITE), report
