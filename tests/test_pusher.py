"""Atomic, idempotent publishing of models (components/pusher.py)."""

import json
import os
import threading

import pytest

from components import pusher


def _model(path, payload: bytes):
    os.makedirs(os.path.join(path, "variables"), exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(payload)
    with open(os.path.join(path, "variables", "variables.index"), "wb") as f:
        f.write(payload[::-1])
    return str(path)


def test_publishes_complete_versions_that_only_grow(tmp_path):
    base = str(tmp_path / "serving")
    first = pusher.publish_model(_model(tmp_path / "m1", b"one"), base, {"model_artifact_id": 1})
    second = pusher.publish_model(_model(tmp_path / "m2", b"two"), base)
    assert not first.reused and not second.reused
    assert second.version > first.version
    assert pusher.existing_versions(base) == [first.version, second.version]
    with open(os.path.join(first.path, "saved_model.pb"), "rb") as f:
        assert f.read() == b"one"
    with open(os.path.join(first.path, pusher.PUSH_RECORD)) as f:
        record = json.load(f)
    assert record["model_artifact_id"] == 1 and record["version"] == first.version
    assert not [n for n in os.listdir(base) if n.startswith(".staging")]


def test_same_model_is_not_published_twice(tmp_path):
    base = str(tmp_path / "serving")
    first = pusher.publish_model(_model(tmp_path / "m1", b"one"), base)
    again = pusher.publish_model(_model(tmp_path / "copy", b"one"), base)
    assert again.reused and again.version == first.version and again.path == first.path
    assert pusher.existing_versions(base) == [first.version]


def test_failed_copy_leaves_nothing_and_stale_staging_is_cleaned(tmp_path, monkeypatch):
    base = str(tmp_path / "serving")
    os.makedirs(os.path.join(base, ".staging-123-dead"))  # left by a killed push

    def broken_copy(src, dst):
        os.makedirs(dst)
        with open(os.path.join(dst, "half"), "w") as f:
            f.write("x")
        raise OSError("disk full")

    monkeypatch.setattr(pusher, "copy_tree", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        pusher.publish_model(_model(tmp_path / "m1", b"one"), base)
    assert pusher.existing_versions(base) == []
    assert [n for n in os.listdir(base) if not n.startswith(".push.lock")] == []


def test_concurrent_pushes_get_distinct_versions(tmp_path):
    base = str(tmp_path / "serving")
    models = [_model(tmp_path / f"m{i}", f"model-{i}".encode()) for i in range(4)]
    results = []
    threads = [threading.Thread(target=lambda m=m: results.append(pusher.publish_model(m, base))) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = sorted(r.version for r in results)
    assert len(set(versions)) == 4 and pusher.existing_versions(base) == versions
    for r in results:
        assert os.path.exists(os.path.join(r.path, "saved_model.pb"))
