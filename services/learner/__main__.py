"""``python -m services.learner``: run one learner rank."""

import sys

from services.learner.server import main

sys.exit(main())
