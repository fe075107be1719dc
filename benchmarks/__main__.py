"""``python -m benchmarks``: ``banking bench`` without the service's command line."""

import sys

from benchmarks.cli import main

sys.exit(main())
