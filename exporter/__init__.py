"""litellm-exporter: Prometheus metrics from the LiteLLM proxy's database."""

__version__ = "0.1.0"
