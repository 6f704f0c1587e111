"""``python -m services.parameter``: run the parameter service."""

import sys

from services.parameter.server import main

sys.exit(main())
