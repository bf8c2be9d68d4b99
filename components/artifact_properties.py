"""Names of the artifact custom properties that one of our components writes and another reads."""

# Examples (ImageExampleGen): a digest of exactly what was ingested (each example's bytes and
# split, and the quarantine list), independent of file times and of which run made it.
DATA_FINGERPRINT = "data_fingerprint"
# Model (Trainer): a digest of everything the model was trained from (the data fingerprint,
# the Trainer's settings and code version). Equal digests mean "the same training inputs".
MODEL_INPUTS = "facepipe_inputs"
