"""HTTP transport: connections, retries, error mapping and the SSE/NDJSON stream decoders."""

from ._session import Timeout as Timeout

__all__ = ["Timeout"]
