"""``python -m services.replay``: run the replay service."""

import sys

from services.replay.server import main

sys.exit(main())
