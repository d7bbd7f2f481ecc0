"""``python -m minillm``: see ``minillm/cli.py``."""
import sys

from .cli import main

sys.exit(main())
