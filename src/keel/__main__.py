"""``python -m keel`` is the ``keel`` command."""

import sys

from keel.cli import main

sys.exit(main())
