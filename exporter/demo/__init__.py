"""What only the demo and the tests use, apart from the exporter itself.

- ``command``: ``litellm-exporter demo``
- ``schema``: LiteLLM's real schema, built from the migrations ``litellm-proxy-extras`` ships
- ``scratch``: throwaway databases, on a given server or an embedded one
- ``traffic``: LiteLLM-shaped requests and callers
- ``writer``: writes them as the proxy does (spend logs, entity spend, daily rollups)

The exporter never imports this package (but for ``cli`` starting the demo command).
"""
