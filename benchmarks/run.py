"""Thin entry point: ``python benchmarks/run.py ARGS`` is ``comfywhip bench ARGS``.

The benchmark code lives in the package (``comfywhip_nb/bench/``) so that the installed
``comfywhip bench`` console script works without a source checkout.
"""

from __future__ import annotations

import sys

from comfywhip_nb.bench import main

if __name__ == "__main__":  # required: the benchmark's child processes are spawned
    sys.exit(main())
