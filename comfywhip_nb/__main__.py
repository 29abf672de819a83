"""``python -m comfywhip_nb`` is the ``comfywhip`` command."""

import sys

from .cli import main

sys.exit(main())
