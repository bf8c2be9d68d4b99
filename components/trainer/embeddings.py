"""The embedding cache: each training image passes the frozen backbone once.

The backbone is frozen, so its output for an image never changes during training;
computing it once and training the head on the cached embeddings gives the same
result as running the backbone every epoch, at a fraction of the cost.

The cache stays in memory up to a limit (DEFAULT_EMBEDDING_MEMORY_LIMIT: ~52,000 1280-d
embeddings) and spills to a file on local disk beyond it (SpilledEmbeddings). Head training then
reads that file in large chunks (components.trainer.batches), so memory stays bounded whatever
the number of images.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import os
import tempfile
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from components.base import labels
from components.trainer import data
from components.trainer.config import DEFAULT_EMBEDDING_MEMORY_MB

logger = logging.getLogger(__name__)

# Bytes of embeddings kept in memory before spilling to disk (see config.DEFAULT_EMBEDDING_MEMORY_MB).
DEFAULT_EMBEDDING_MEMORY_LIMIT = DEFAULT_EMBEDDING_MEMORY_MB << 20


class SpilledEmbeddings:
    """An (N, C) float32 embedding store in an unlinked local file, read by rows.

    Rows are read through a shared read-only mapping whose pages are released after every read
    (madvise DONTNEED): a mapped page counts in the process's resident memory, and after one
    epoch the whole store would; released, they stay in the kernel's page cache only.
    """

    def __init__(self, fd: int, rows: int, dim: int):
        self.shape = (rows, dim)
        self.dtype = np.dtype(np.float32)
        self._map = mmap.mmap(fd, rows * dim * 4, prot=mmap.PROT_READ) if rows else None
        self._lock = threading.Lock()  # tf.data's reader thread and the validation callback share it

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The given rows, in the given order, as an in-memory array."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.shape[1]), np.float32)
        if not len(indices):
            return out
        order = np.argsort(indices, kind="stable")  # one forward sweep through the file
        with self._lock:
            table = np.frombuffer(self._map, np.float32).reshape(self.shape)
            out[order] = table[indices[order]]
            del table  # the mapping can only be advised once no array exports it
            self._map.madvise(mmap.MADV_DONTNEED)
        return out

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        everything = self.rows(np.arange(self.shape[0]))
        return everything if dtype is None else everything.astype(dtype)


@dataclasses.dataclass(frozen=True)
class Embedded:
    """Embeddings of a set of images with their labels.

    A subset made by ``take`` shares the embedding store (which may be on disk) instead of
    copying it: item i of the set is ``embeddings[rows[i]]``.

    Attributes:
      embeddings: float32 (M, C) store: an array in memory, or SpilledEmbeddings.
      labels: float32 (N, L), one row per item.
      filenames: (N,) file names, as str.
      rows: (N,) row of each item in ``embeddings``; None means item i is row i.
    """

    embeddings: np.ndarray | SpilledEmbeddings
    labels: np.ndarray
    filenames: np.ndarray
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def spilled(self) -> bool:
        """Whether the embeddings live in a file rather than in memory."""
        return isinstance(self.embeddings, SpilledEmbeddings)

    def row_indices(self) -> np.ndarray:
        """The row in ``embeddings`` of every item."""
        return np.arange(len(self.labels)) if self.rows is None else self.rows

    def take(self, mask: np.ndarray) -> "Embedded":
        """Returns the items a boolean mask or an index array selects, in that order (sharing the store)."""
        return Embedded(self.embeddings, self.labels[mask], self.filenames[mask], self.row_indices()[mask])

    def vectors(self, items: np.ndarray | None = None) -> np.ndarray:
        """The embeddings of the given items (all when None), as an in-memory array."""
        rows = self.row_indices() if items is None else self.row_indices()[items]
        if isinstance(self.embeddings, SpilledEmbeddings):
            return self.embeddings.rows(rows)
        return np.asarray(self.embeddings[rows], dtype=np.float32)

# Progress of the embedding pass in the run's log: the first batch, then every this many batches.
EMBED_LOG_PREFIX = "embedding pass:"
EMBED_LOG_EVERY = 100


class _EmbeddingWriter:
    """Collects embedding batches in memory, moving them to a file once they exceed a byte limit."""

    def __init__(self, memory_limit_bytes: int, spill_dir: str | None):
        self._limit = memory_limit_bytes
        self._spill_dir = spill_dir
        self._chunks: list[np.ndarray] = []
        self._file = None
        self._path = ""
        self._rows = 0
        self._dim = 0

    def append(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        self._dim = chunk.shape[1]
        if self._file is None and (self._rows + len(chunk)) * self._dim * 4 > self._limit:
            fd, self._path = tempfile.mkstemp(prefix="embeddings-", suffix=".f32", dir=self._spill_dir)
            self._file = os.fdopen(fd, "wb")
            logger.info("embeddings exceed %d bytes: spilling to %s", self._limit, self._path)
            for previous in self._chunks:
                self._file.write(previous.tobytes())
            self._chunks = []
        if self._file is not None:
            self._file.write(chunk.tobytes())
        else:
            self._chunks.append(chunk)
        self._rows += len(chunk)

    def finish(self) -> np.ndarray | SpilledEmbeddings:
        if self._file is None:
            return np.concatenate(self._chunks)
        self._file.close()
        fd = os.open(self._path, os.O_RDONLY)
        try:
            # The mapping keeps the data alive; unlinking now means nothing is left behind on disk.
            os.unlink(self._path)
            return SpilledEmbeddings(fd, self._rows, self._dim)
        finally:
            os.close(fd)


def tf_embedder(feature_extractor: tf_keras.Model) -> Callable[[tf.Tensor], np.ndarray]:
    """The TensorFlow embedding path: images [B, S, S, 3] -> numpy embeddings [B, C] (one traced function)."""

    @tf.function(reduce_retracing=True)
    def _embed(images: tf.Tensor) -> tf.Tensor:
        return feature_extractor(images, training=False)

    return lambda images: _embed(images).numpy()


def embed(
    feature_extractor: tf_keras.Model | Callable[[tf.Tensor], np.ndarray],
    dataset: tf.data.Dataset,
    image_size: int,
    memory_limit_bytes: int = DEFAULT_EMBEDDING_MEMORY_LIMIT,
    spill_dir: str | None = None,
    transform: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None = None,
) -> Embedded:
    """Runs every image of a dataset through the feature extractor once.

    Decoding runs in tf.data (parallel, prefetched) so it overlaps with the backbone.

    Args:
      feature_extractor: images -> embeddings: a Keras model (run by tf_embedder), or a function
        returning numpy embeddings (tflite_engine.select_embedder's).
      dataset: batches of dicts with image_raw ([B] or raw [B, 1]) and filename, and labels
        unless ``transform`` makes them (data.read_examples).
      image_size: the size images are resized to.
      memory_limit_bytes: embeddings beyond this size go to a local file instead of memory.
      spill_dir: local folder for that file (default: the system temp folder).
      transform: raw features -> features with labels and filename
        (tft.TFTransformOutput.transform_raw_features), run as one traced function per batch
        on this thread (well under a second for 19,000 examples).

    Returns:
      The embeddings, labels and file names, in dataset order.

    Raises:
      ValueError: the dataset is empty.
    """
    run = tf_embedder(feature_extractor) if isinstance(feature_extractor, tf_keras.Model) else feature_extractor
    features_of = None if transform is None else tf.function(transform, input_signature=[dataset.element_spec])

    decoded = data.without_autotune(
        dataset.map(
            lambda b: (data.decode_images(tf.reshape(b[labels.IMAGE_KEY], [-1]), image_size), b),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).prefetch(2)
    )
    writer = _EmbeddingWriter(memory_limit_bytes, spill_dir)
    label_chunks, names = [], []
    embedded = 0
    for batch, (images, parsed) in enumerate(decoded, start=1):
        writer.append(run(images))
        features = parsed if features_of is None else features_of(parsed)
        label_chunks.append(features[labels.LABELS_KEY].numpy())
        names.append(features[labels.FILENAME_KEY].numpy())
        embedded += len(label_chunks[-1])
        if batch == 1 or batch % EMBED_LOG_EVERY == 0:
            logger.info("%s batch %d, %d images so far", EMBED_LOG_PREFIX, batch, embedded)
    if not label_chunks:
        raise ValueError("no examples to embed")
    return Embedded(
        writer.finish(),
        np.concatenate(label_chunks).astype(np.float32),
        np.array([n.decode() for n in np.concatenate(names)]),
    )
