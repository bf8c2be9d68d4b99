"""The container image: no Docker engine here, so the Dockerfile is checked against the repository
and the paths the compiled spec points at."""

import os

from pipeline import kubeflow
from tests.kfp_helpers import REPO

# ---------------------------------------------------------------------------------------------
# The image (no Docker engine here: the Dockerfile is checked against the repository and the spec)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read()
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in logical]


def _docker_ignored(relative: str, patterns: list[str]) -> bool:
    import fnmatch

    parts = relative.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]  # the path and its parent folders
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            tails = ["/".join(candidate.split("/")[i:]) for i in range(len(candidate.split("/")))]
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and any(fnmatch.fnmatch(t, bare) for t in tails)
            ):
                return True
    return False


def test_dockerfile_installs_this_package_from_the_lock_on_the_tfx_image():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "gcr.io/tfx-oss-public/tfx:1.16.0")
    env = " ".join(rest for kind, rest in instructions if kind == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env.split()
    assert [rest for kind, rest in instructions if kind == "WORKDIR"] == [kubeflow.CONTAINER_REPO_ROOT]
    runs = [rest for kind, rest in instructions if kind == "RUN"]
    lock_install = next(i for i, r in enumerate(runs) if "uv pip install" in r and "-r requirements/lock.txt" in r)
    package_install = next(i for i, r in enumerate(runs) if "uv pip install" in r and "--no-deps ." in r)
    assert lock_install < package_install

    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignored = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    copied = []
    for kind, rest in instructions:
        if kind != "COPY":
            continue
        *sources, destination = rest.split()
        for source in sources:
            path = os.path.join(REPO, source)
            assert os.path.exists(path), f"COPY {source}: not in the repository"
            files = (
                [path]
                if os.path.isfile(path)
                else [os.path.join(d, n) for d, _, names in os.walk(path) for n in names if "__pycache__" not in d]
            )
            for file in files:
                relative = os.path.relpath(file, REPO)
                assert not _docker_ignored(relative, ignored), f"{relative} is copied but .dockerignore excludes it"
                copied.append(relative)
    # What the compiled spec points at inside the image, and the packages setup.py installs.
    inside = lambda p: os.path.relpath(p, kubeflow.CONTAINER_REPO_ROOT)  # noqa: E731
    assert inside(kubeflow.CONTAINER_SCHEMA_PATH) in copied
    assert inside(kubeflow.CONTAINER_SETUP_FILE) in copied
    assert "requirements/lock.txt" in copied
    for package in ("pipeline", "components"):
        assert f"{package}/__init__.py" in copied
    assert _docker_ignored(".venv/bin/python", ignored) and _docker_ignored("outputs/kfp/x.yaml", ignored)
