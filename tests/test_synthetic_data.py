"""Tests for components/synthetic_data/ (the deterministic UTKFace stand-in)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components import synthetic_data as sd
from components.base import labels

REPO_ROOT = Path(__file__).resolve().parent.parent


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_args_give_identical_bytes(tmp_path):
    spec = sd.SyntheticSpec(num_images=30, seed=7)
    sd.generate(tmp_path / "a", spec)
    sd.generate(tmp_path / "b", spec)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 30
    assert a == b


def test_other_seed_gives_other_images(tmp_path):
    sd.generate(tmp_path / "a", sd.SyntheticSpec(num_images=5, seed=1))
    sd.generate(tmp_path / "b", sd.SyntheticSpec(num_images=5, seed=2))
    assert set(_files(tmp_path / "a").values()).isdisjoint(_files(tmp_path / "b").values())


def test_prefix_consistent_outside_balanced_mode():
    small = sd.plan(sd.SyntheticSpec(num_images=20, seed=3, malformed_fraction=0.0))
    large = sd.plan(sd.SyntheticSpec(num_images=60, seed=3, malformed_fraction=0.0))
    assert [p.name for p in small] == [p.name for p in large[:20]]


def test_workers_do_not_change_output(tmp_path):
    spec = sd.SyntheticSpec(num_images=100, seed=5)
    sd.generate(tmp_path / "one", spec, workers=1)
    sd.generate(tmp_path / "two", spec, workers=2)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_names_images_and_malformed(tmp_path):
    spec = sd.SyntheticSpec(num_images=60, seed=0)
    report = sd.generate(tmp_path, spec)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert report.written == 60 and len(names) == 60  # nothing but the images
    assert len(report.malformed) >= 3
    assert set(report.malformed) <= set(names)
    stamps = set()
    for name in names:
        if name in report.malformed:
            with pytest.raises(labels.FilenameError):
                labels.parse_filename(name)
        else:
            parsed = labels.parse_filename(name)
            assert 1 <= parsed.age <= 116
            stamps.add(name.split("_")[3][:17])
        with Image.open(tmp_path / name) as im:
            assert im.format == "JPEG"
            assert im.size == (200, 200)
            assert im.mode == "RGB"
            im.load()
    assert len(stamps) == 60 - len(report.malformed)  # datetimes are unique
    assert report.label_counts["well_formed"] == 60 - len(report.malformed)
    assert sum(report.label_counts["gender"].values()) == report.label_counts["well_formed"]


def test_malformed_kinds_match_real_utkface_mistakes():
    spec = sd.SyntheticSpec(num_images=1500, seed=0)
    bad = [p.name for p in sd.plan(spec) if p.malformed]
    assert 6 <= len(bad) <= 15
    assert any(name.count("_") == 2 for name in bad)  # a missing field
    assert any("__" in name for name in bad)  # an empty field
    assert any(name.endswith("jpg.chip.jpg") and ".jpg.chip.jpg" not in name for name in bad)  # missing dot
    assert any(" " in name for name in bad)  # a stray space
    assert sd.plan(sd.SyntheticSpec(num_images=49, seed=0, malformed_fraction=0.007)) == sd.plan(
        sd.SyntheticSpec(num_images=49, seed=0, malformed_fraction=0.0)
    )
    assert not any(p.malformed for p in sd.plan(sd.SyntheticSpec(num_images=200, malformed_fraction=0.0)))


def test_label_frequencies():
    rng = np.random.default_rng(123)
    draws = np.array([sd.sample_labels(rng) for _ in range(20000)])
    ages, genders, races = draws[:, 0], draws[:, 1], draws[:, 2]
    assert ages.min() >= 1 and ages.max() <= 116
    assert abs(genders.mean() - 0.48) < 0.02
    for race, target in enumerate(sd.RACE_PROBABILITIES):
        assert abs((races == race).mean() - target) < 0.015, race
    groups = [labels.age_group(int(a)) for a in ages]
    for (_, name), target in zip(labels.AGE_GROUPS, sd.AGE_GROUP_PROBABILITIES, strict=True):
        assert abs(groups.count(name) / len(groups) - target) < 0.02, name
    counts = np.bincount(ages, minlength=117)
    assert counts[1] > 2 * counts[2:13].mean()  # UTKFace's spike at age 1
    assert counts[26] > 1.5 * max(counts[25], counts[27])  # ... and at 26


def test_balanced_mode_covers_every_label(tmp_path):
    report = sd.generate(tmp_path, sd.SyntheticSpec(num_images=40, seed=0, balanced=True))
    vectors = np.array(
        [
            labels.label_vector(p.age, p.gender, p.race)
            for p in (labels.parse_filename(n.name) for n in tmp_path.iterdir())
        ]
    )
    assert report.malformed == [] and len(vectors) == 40
    for name, column in zip(labels.LABEL_NAMES, vectors.T, strict=True):
        assert 0 < column.sum() < len(column), name


def _render_many(n: int, **fixed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i in range(n):
        rng = np.random.default_rng([99, i])
        age, gender, race = sd.sample_labels(rng)
        kw = {"age": age, "gender": gender, "race": race, **fixed}
        image, parts = sd.render_face_with_parts(rng, kw["age"], kw["gender"], kw["race"], 200)
        out.append((np.asarray(image, dtype=np.float32), parts))
    return out


def test_render_face_matches_render_with_parts():
    a = sd.render_face(np.random.default_rng(4), 30, 1, 2, 200)
    b, parts = sd.render_face_with_parts(np.random.default_rng(4), 30, 1, 2, 200)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert parts.shape == (200, 200) and (parts == sd.PART_SKIN).mean() > 0.1


def test_skin_is_darker_for_black_than_white():
    def skin_brightness(race: int) -> float:
        return float(np.mean([img[parts == sd.PART_SKIN].mean() for img, parts in _render_many(50, race=race)]))

    white, black = skin_brightness(0), skin_brightness(1)
    assert white - black > 40, (white, black)


def test_women_have_more_hair():
    def hair_coverage(gender: int) -> float:
        return float(np.mean([(parts == sd.PART_HAIR).mean() for _, parts in _render_many(50, gender=gender, age=30)]))

    male, female = hair_coverage(0), hair_coverage(1)
    assert female > 1.5 * male, (male, female)


def test_old_faces_have_greyer_hair():
    def hair_saturation(age: int) -> float:
        values = []
        for img, parts in _render_many(50, age=age):
            hair = img[parts == sd.PART_HAIR]
            if len(hair):
                values.append(hair.mean())
        return float(np.mean(values))

    assert hair_saturation(75) - hair_saturation(25) > 40


def test_ensure_default_dataset(tmp_path):
    spec = sd.SyntheticSpec(num_images=12, seed=0)
    out = tmp_path / "data" / "synthetic"
    path, generated = sd.ensure_default_dataset(out, spec)
    assert generated and path == out
    assert sd.is_complete(out)
    marker = json.loads(sd.marker_path(out).read_text())
    assert not any(p.name.startswith(".") for p in out.iterdir())  # nothing hidden inside the data folder
    assert marker["written"] == 12 and marker["spec"]["seed"] == 0
    assert len([p for p in out.iterdir() if not p.name.startswith(".")]) == 12
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        ".synthetic.complete",
        "synthetic",
    ]  # no temp folder
    assert sd.ensure_default_dataset(out, spec) == (out, False)

    real = tmp_path / "real"
    real.mkdir()
    (real / "25_1_2_20170116174525125.jpg.chip.jpg").write_bytes(b"not checked")
    assert sd.ensure_default_dataset(real, spec) == (real, False)
    assert len(list(real.iterdir())) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    assert sd.ensure_default_dataset(empty, spec) == (empty, True)
    assert sd.is_complete(empty) and sd.has_images(empty) and (empty / "notes.txt").exists()


def test_cli_runs_as_a_script(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            "data/generate.py",
            "--out",
            str(out),
            "--num-images",
            "6",
            "--seed",
            "1",
            "--workers",
            "1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 6 images" in result.stdout
    assert len(list(out.iterdir())) == 6
    sd.generate(tmp_path / "api", sd.SyntheticSpec(num_images=6, seed=1))
    assert _files(out) == _files(tmp_path / "api")


def test_cli_main_rejects_bad_spec(tmp_path, capsys):
    assert sd.main(["--out", str(tmp_path / "x"), "--num-images", "-1"]) == 2
    assert "num_images" in capsys.readouterr().err
