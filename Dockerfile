# facepipe image: every Kubeflow Pipelines step runs in it (runner_kfp.py --image), and it can
# serve as the Beam SDK container of Dataflow/Flink/Spark workers: the TFX base image keeps
# Apache Beam's worker entrypoint (/opt/apache/beam/boot) as its ENTRYPOINT. KFP steps set their
# own command: python -m pipeline.kfp_entrypoint ... (open-source KFP and Vertex AI alike).
#
# Build and push from the repository root (see README, "Kubeflow Pipelines"):
#   docker build -t REGISTRY/facepipe:TAG .
#   docker push REGISTRY/facepipe:TAG
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# Keras 2 (tf_keras) in every process: TF 2.16 would otherwise mix Keras 3 into TF Transform and
# TFMA, which breaks saving and loading models.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1

# pipeline.kubeflow.CONTAINER_REPO_ROOT: the compiled spec points here for the schema and setup.py.
WORKDIR /facepipe

# The lock is resolved for Python 3.10 (the TFX 1.16 image's Python); fail early if that changed.
RUN python -c "import sys; assert sys.version_info[:2] == (3, 10), 'need Python 3.10, got ' + sys.version"

# Dependencies in their own layer, rebuilt only when the lock changes. uv installs the exact lock
# (pip's resolver gives up on TFX); packages the base image already has at the locked version stay.
COPY requirements/lock.txt requirements/lock.txt
RUN python -m pip install "uv==0.13.9" \
 && python -m uv pip install --system --python "$(command -v python)" --no-cache -r requirements/lock.txt

# This package, and the files the compiled pipeline refers to inside the image:
# schema/schema.pbtxt (ImportSchemaGen) and setup.py (the dataflow Beam profile's --setup_file).
COPY setup.py pyproject.toml ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY schema/ schema/
RUN python -m uv pip install --system --python "$(command -v python)" --no-cache --no-deps . \
 && python -c "import components.trainer.run, components.transform, pipeline.pipeline, pipeline.kfp_entrypoint; print('facepipe importable')"
