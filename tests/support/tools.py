"""External tools the tests run for real (promtool, amtool), found on PATH."""

from __future__ import annotations

import os
import shutil

import pytest


def require(tool: str, package: str) -> str:
    """The tool's path; skip the test where it is missing, except in CI, where that fails."""
    path = shutil.which(tool)
    if path:
        return path
    message = f"{tool} is not installed (Debian package {package}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
