"""``python -m LungTumorSegTrainingLib``: the lungtumorseg-train command line."""

import sys

from .cli.main import main

sys.exit(main())
