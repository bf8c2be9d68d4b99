"""Custom TFX components of facepipe.

Nothing is imported here eagerly. Custom artifact types are reachable as ``components.<Class>``
(lazily, PEP 562), because KubeflowV2 containers import a custom artifact type by its TYPE_NAME,
which its compiler only accepts as ``<lowercase name>.<Class>``.
"""


def __getattr__(name: str):
    if name == "LabelDriftReport":
        from components.drift import LabelDriftReport  # TFX: importing the package stays light

        return LabelDriftReport
    raise AttributeError(f"module 'components' has no attribute {name!r}")
