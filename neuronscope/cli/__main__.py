"""``python -m neuronscope.cli``: the ``neuronscope`` command."""

import sys

from . import main

sys.exit(main())
