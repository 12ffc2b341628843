"""``python -m jobs.cli``: the ``logclaw`` command without its console script (used by ``logclaw up``)."""

import sys

from jobs.cli import main

sys.exit(main())
