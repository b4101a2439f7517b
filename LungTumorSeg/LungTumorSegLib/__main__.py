"""``python -m LungTumorSegLib``: the lungtumorseg command line."""

import sys

from .cli import main

sys.exit(main())
