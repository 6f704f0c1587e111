"""``python -m services.viewer``: run the viewer."""

import sys

from services.viewer.server import main

sys.exit(main())
