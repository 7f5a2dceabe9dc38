"""Health Competition API: fitness competitions on Redis."""

__version__ = "0.1.0"
SERVICE_NAME = "python-backend"
