"""``python -m rlrings.services.inference``: run the inference service."""

import sys

from rlrings.services.inference.server import main

sys.exit(main())
