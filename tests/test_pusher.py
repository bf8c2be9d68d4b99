"""Atomic, idempotent publishing of models (components/pusher.py)."""

import json
import os
import threading

import pytest

from components import pusher, serving_folder


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


# --- the serving folder cannot be turned against us (components/serving_folder.py) -------------


def test_a_link_named_like_a_staging_folder_is_refused_and_its_target_untouched(tmp_path):
    base = tmp_path / "serving"
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "keep.txt").write_text("data")
    base.mkdir()
    os.symlink(victim, base / ".staging-1-deadbeef")  # ancient by its name: the cleanup would remove it
    with pytest.raises(pusher.ServingFolderError, match="symbolic link"):
        pusher.publish_model(_model(tmp_path / "m1", b"one"), str(base))
    assert (victim / "keep.txt").read_text() == "data"
    os.unlink(base / ".staging-1-deadbeef")
    os.symlink(victim, base / "123")  # a link where a version belongs
    with pytest.raises(pusher.ServingFolderError, match="symbolic link"):
        pusher.publish_model(_model(tmp_path / "m1", b"one"), str(base))
    assert os.listdir(victim) == ["keep.txt"]


def test_junk_beside_the_versions_is_ignored_and_numbering_stays_above_every_number(tmp_path):
    base = tmp_path / "serving"
    first = pusher.publish_model(_model(tmp_path / "m1", b"one"), str(base), clock=lambda: 1000.0)
    os.makedirs(base / "²")  # '²'.isdigit() is True; int() fails
    os.makedirs(base / "notes")
    os.makedirs(base / "1500")
    (base / "1500" / pusher.PUSH_RECORD).write_text('{"fingerprint": "x", "vers')  # truncated record
    os.makedirs(base / "0099999999999")  # TF Serving reads 99999999999
    (base / "7").write_text("a file")
    second = pusher.publish_model(_model(tmp_path / "m2", b"two"), str(base), clock=lambda: 2000.0)
    assert second.version == 100000000000  # above every numeric folder, whoever made it
    assert pusher.existing_versions(str(base)) == [first.version, second.version]
    listing = serving_folder.list_serving_folder(str(base))
    assert {name for name, _ in listing.ignored} == {"²", "notes", "1500", "0099999999999", "7"}
    assert listing.serving.number == second.version
    for name in ("²", "1500", "0099999999999", "7"):  # never deleted
        assert os.path.lexists(base / name)


def test_rollback_publishes_the_older_model_as_the_new_highest_version(tmp_path):
    base = str(tmp_path / "serving")
    a = pusher.publish_model(_model(tmp_path / "a", b"A"), base, clock=lambda: 1000.0)
    b = pusher.publish_model(_model(tmp_path / "b", b"B"), base, clock=lambda: 2000.0)
    a_again = pusher.publish_model(_model(tmp_path / "a2", b"A"), base, clock=lambda: 3000.0)
    assert not a_again.reused and a_again.version == 3000 and a_again.same_as_version == a.version
    assert pusher.existing_versions(base) == [a.version, b.version, a_again.version]
    assert serving_folder.list_serving_folder(base).serving.fingerprint == pusher.model_fingerprint(str(tmp_path / "a"))
    # ... and pushing A once more changes nothing: it is what serves now.
    assert pusher.publish_model(_model(tmp_path / "a3", b"A"), base, clock=lambda: 4000.0).reused


def test_same_training_inputs_count_as_already_serving(tmp_path):
    base = str(tmp_path / "serving")
    first = pusher.publish_model(_model(tmp_path / "m1", b"one"), base, input_fingerprint="inputs-1")
    retrained = pusher.publish_model(_model(tmp_path / "m2", b"one, retrained"), base, input_fingerprint="inputs-1")
    assert retrained.reused and retrained.version == first.version
    new_data = pusher.publish_model(_model(tmp_path / "m3", b"one, retrained"), base, input_fingerprint="inputs-2")
    assert not new_data.reused
    with open(os.path.join(new_data.path, pusher.PUSH_RECORD)) as f:
        assert json.load(f)["input_fingerprint"] == "inputs-2"


def test_other_tools_versions_are_kept_and_a_foreign_top_version_is_pushed_over(tmp_path):
    base = tmp_path / "serving"
    ours = pusher.publish_model(_model(tmp_path / "m1", b"one"), str(base), clock=lambda: 1000.0)
    foreign = base / "5000"
    pusher.copy_tree(_model(tmp_path / "other", b"other"), str(foreign))  # no push record
    again = pusher.publish_model(_model(tmp_path / "m1b", b"one"), str(base), clock=lambda: 2000.0)
    assert not again.reused and again.version == 5001 and again.same_as_version == ours.version
    assert os.path.exists(foreign / "saved_model.pb")


def test_staging_folders_of_live_pushes_survive_and_old_ones_go(tmp_path):
    base = tmp_path / "serving"
    base.mkdir()
    live = base / ".staging-9990-aaaa"  # 10 s old at clock 10000: another push may be copying
    old = base / ".staging-1000-bbbb"  # 9000 s old
    live.mkdir()
    old.mkdir()
    pusher.publish_model(_model(tmp_path / "m1", b"one"), str(base), clock=lambda: 10000.0)
    assert live.exists() and not old.exists()


class _FakeBlob:
    def __init__(self, store, name):
        self._store, self.name = store, name

    def upload_from_string(self, data, if_generation_match=None):
        from google.api_core import exceptions

        if if_generation_match == 0 and self.name in self._store:
            raise exceptions.PreconditionFailed("exists")
        self._store[self.name] = data


class _FakeGcs:
    """The part of google.cloud.storage.Client the claims use, with its precondition semantics."""

    def __init__(self):
        self.objects = {}

    def bucket(self, name):
        client = self

        class _Bucket:
            def blob(self, path):
                return _FakeBlob(client.objects, f"{name}/{path}")

        return _Bucket()


def test_gcs_claims_give_each_version_number_to_one_push_only(monkeypatch):
    client = _FakeGcs()
    monkeypatch.setattr(pusher.tf.io.gfile, "exists", lambda path: False)
    first, second = pusher.GcsClaims(client), pusher.GcsClaims(client)  # two writers, one bucket
    assert first.claim("gs://bucket/serving/facepipe", 100)
    assert not second.claim("gs://bucket/serving/facepipe", 100)
    assert second.claim("gs://bucket/serving/facepipe", 101)
    assert sorted(client.objects) == [
        "bucket/serving/facepipe/.facepipe-claims/100", "bucket/serving/facepipe/.facepipe-claims/101"
    ]


def test_a_taken_number_moves_the_push_to_the_next_one(tmp_path):
    class TakenOnce:
        def __init__(self):
            self.asked = []

        def claim(self, base_dir, version):
            self.asked.append(version)
            return len(self.asked) > 1

    claims = TakenOnce()
    result = pusher.publish_model(_model(tmp_path / "m1", b"one"), str(tmp_path / "s"), claims=claims,
                                  clock=lambda: 500.0)
    assert claims.asked == [500, 501] and result.version == 501
