"""`python -m housekeeper`: see `housekeeper.cli`."""

import sys

from housekeeper.cli import main

sys.exit(main())
