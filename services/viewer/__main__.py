"""``python -m rlrings.services.viewer``: run the viewer."""

import sys

from rlrings.services.viewer.server import main

sys.exit(main())
