"""``python -m rlrings.services.learner``: run one learner rank."""

import sys

from rlrings.services.learner.server import main

sys.exit(main())
