"""What only the demo and the tests use, apart from the exporter itself.

- ``command``: ``litellm-exporter demo``
- ``schema``: LiteLLM's real schema, built from the migrations ``litellm-proxy-extras`` ships
- ``scratch``: throwaway databases, on a given server or an embedded one
- ``traffic``: LiteLLM-shaped requests and callers
- ``writer``: writes them as the proxy does (spend logs, entity spend, daily rollups)

The exporter never imports this package (but for ``cli`` starting the demo command).
"""

from __future__ import annotations

from importlib import metadata


def install_hint(package: str) -> str:
    """How to install one of the demo's packages, at the version this project pins."""
    try:
        pins = [r.split(";")[0].strip() for r in metadata.requires("litellm-exporter") or ()]
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        pins = []
    pinned = next((pin for pin in pins if pin.split("=")[0].strip() == package), package)
    return f"pip install '{pinned}', or from this project's checkout: pip install '.[demo]'"
