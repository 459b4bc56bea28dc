"""``python -m exporter``: the same as the ``litellm-exporter`` command."""

import sys

from .cli import main

sys.exit(main())
