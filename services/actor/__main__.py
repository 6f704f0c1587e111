"""``python -m rlrings.services.actor``: run one actor."""

import sys

from rlrings.services.actor.server import main

sys.exit(main())
