"""`python -m vcpu_sched`."""

import sys

from .cli import main

sys.exit(main())
