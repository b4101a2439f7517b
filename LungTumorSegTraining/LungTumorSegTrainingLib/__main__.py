"""``python -m LungTumorSegTrainingLib``: the lungtumorseg-train command line."""

import sys

from .cli import main

sys.exit(main())
