"""``python -m rlrings.services.replay``: run the replay service."""

import sys

from rlrings.services.replay.server import main

sys.exit(main())
