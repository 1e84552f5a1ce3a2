"""``python -m sigops.cli``."""

import sys

from . import main

sys.exit(main())
