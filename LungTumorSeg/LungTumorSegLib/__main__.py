"""``python -m LungTumorSegLib``: the lungtumorseg command line."""

import sys

from .cli.main import main

sys.exit(main())
