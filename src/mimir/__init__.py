"""mimir: detect data exfiltration in microservice applications from their network traffic."""

__version__ = "0.1.0"
