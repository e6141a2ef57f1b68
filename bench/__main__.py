"""``python -m tilekit.bench`` == ``tilekit bench``."""
import sys

from tilekit.bench.cli import main

sys.exit(main())
