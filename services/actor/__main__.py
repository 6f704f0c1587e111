"""``python -m services.actor``: run one actor."""

import sys

from services.actor.server import main

sys.exit(main())
