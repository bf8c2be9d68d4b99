"""Writes a deterministic synthetic UTKFace-format image folder.

Usage (from the repository root):

    python data/generate.py --out data/utkface_synth --num-images 1500 --seed 0

A thin wrapper around components.synthetic_data.main; see data/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from components import synthetic_data
except ImportError:  # run as a script from a checkout: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from components import synthetic_data

if __name__ == "__main__":
    sys.exit(synthetic_data.main())
