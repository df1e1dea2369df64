"""`python -m flows [local|smoke|CONFIG.yaml] [--set a.b=v] [--stages …] [--force …]`."""

import sys

from flows.local import main

sys.exit(main())
