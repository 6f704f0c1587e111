"""``python -m rlrings.services.parameter``: run the parameter service."""

import sys

from rlrings.services.parameter.server import main

sys.exit(main())
